// What `validate` (and `run`/`start`, before anything starts) checks beyond the schema, without running a job:
// the local files a config names exist and hold what the trainer will read — data sources (their first records),
// the tokenizer, a jsonl task file (every task, with the trainer's task rules), an init checkpoint folder — and,
// with `--check-remote`, that the s3:// ones exist. Each problem carries the YAML position of its field, like the
// schema's. The rules mirror the trainer's loaders (trainer/trainflow_trainer/data.py, tokenizer.py, model.py,
// tasks/task.py), so a config that passes here does not fail on them when its stage starts hours later.
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { ObjectStore } from '../storage/s3';
import { ConfigError, loadConfigWithPositions, type ConfigProblem, type PositionedConfig } from './load';
import type { PipelineConfig, StageConfig } from './schema';
import {
  HF_DEFAULT_MAX_POSITIONS,
  HF_REQUIRED_FIELDS,
  hfFamilyProblem,
  SPECIAL_TOKENS,
  shapeProblems,
} from './trainer-model';

export interface CheckOptions {
  /** Also check s3:// inputs (HeadObject / one ListObjects each) through this store. */
  remote?: ObjectStore;
}

type Path = (string | number)[];
type Report = (path: Path, message: string) => void;

const RELATIVE = '(paths are relative to the config file)';
/** Data records read from the head of a JSONL source: enough to catch a wrong file, cheap on a huge one. */
const HEAD_RECORDS = 20;
const HEAD_BYTES = 1 << 20;

const isRemote = (p: string) => /^s3:\/\//.test(p);
/** `{{scheduled_date}}` and friends are filled in when a run starts: such a path cannot be checked before. */
const isTemplated = (p: string) => p.includes('{{');

/** Loads a config and checks its inputs; every problem (schema or files) at once, as a ConfigError. */
export async function validateConfigFile(file: string, options: CheckOptions = {}): Promise<PipelineConfig> {
  const positioned = loadConfigWithPositions(file);
  const problems = await checkInputs(positioned, options);
  if (problems.length > 0) throw new ConfigError(problems);
  return positioned.config;
}

export async function checkInputs(
  positioned: PositionedConfig,
  options: CheckOptions = {},
): Promise<ConfigProblem[]> {
  const { config, problemAt } = positioned;
  const problems: ConfigProblem[] = [];
  const report: Report = (path, message) => problems.push(problemAt(path, message));
  const remote: { path: Path; uri: string; what: RemoteKind }[] = [];
  const local = (path: Path, p: string | undefined, what: RemoteKind, check: () => void) => {
    if (p === undefined || isTemplated(p)) return;
    if (isRemote(p)) remote.push({ path, uri: p, what });
    else check();
  };

  // A stage with its own job.command does not run the trainer's loaders: what it reads is its own business.
  const trainerRuns = config.stages.some((stage) => stage.job === undefined);
  const init = config.model.init;
  let hfConfig: Record<string, unknown> | undefined;
  if (trainerRuns && 'checkpoint' in init) {
    local(['model', 'init', 'checkpoint'], init.checkpoint, 'checkpoint', () => {
      const found = checkCheckpointFolder(init.checkpoint, (m) => report(['model', 'init', 'checkpoint'], m));
      hfConfig = found?.config;
      if (
        found &&
        !found.hasTokenizer &&
        config.model.tokenizer === undefined &&
        config.stages[0]?.job === undefined
      )
        report(['model', 'tokenizer'], `required: the checkpoint ${init.checkpoint} holds no tokenizer.json`);
    });
  }
  const tok = config.model.tokenizer;
  let tokenizerVocab: number | undefined;
  if (trainerRuns && tok !== undefined && !('train' in tok)) {
    local(['model', 'tokenizer', 'path'], tok.path, 'tokenizer', () => {
      tokenizerVocab = checkTokenizer(tok.path, (m) => report(['model', 'tokenizer', 'path'], m));
    });
  }
  checkModelFit(config, hfConfig, tokenizerVocab, report);

  config.stages.forEach((stage, i) => {
    if (stage.job !== undefined) return;
    stage.data?.sources.forEach((src, j) => {
      const file = src.path;
      if (file === undefined) return; // from: a curate stage's output, made when the pipeline runs
      const path = ['stages', i, 'data', 'sources', j, 'path'];
      if (src.kind === 'gold_trajectories')
        local(path, file, 'data', () => checkSweFile(file, (m) => report(path, m)));
      else
        local(path, file, 'data', () =>
          checkDataSource(file, src.format, stage.kind, (m) => report(path, m)),
        );
    });
    if (stage.tasks?.family === 'jsonl' && stage.tasks.path !== undefined) {
      const path = ['stages', i, 'tasks', 'path'];
      const file = stage.tasks.path;
      local(path, file, 'tasks', () => checkTasksFile(file, (m) => report(path, m)));
    }
    if (stage.tasks?.family === 'swe' && stage.tasks.path !== undefined) {
      const path = ['stages', i, 'tasks', 'path'];
      const file = stage.tasks.path;
      local(path, file, 'tasks', () => checkSweFile(file, (m) => report(path, m)));
    }
  });

  if (options.remote) {
    for (const r of remote) {
      const message = await checkRemote(options.remote, r.uri, r.what);
      if (message) report(r.path, message);
    }
  }
  problems.sort((a, b) => a.line - b.line || a.col - b.col);
  return problems;
}

// ---- local files --------------------------------------------------------------------------------------------

function noSuchFile(p: string): string {
  return `no such file ${p} ${RELATIVE}`;
}

/** The first bytes of a file (whole lines only when the file is longer). */
function head(file: string): { text: string; complete: boolean } {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const n = readSync(fd, buf, 0, HEAD_BYTES, 0);
    const complete = n < HEAD_BYTES || statSync(file).size === n;
    let text = buf.subarray(0, n).toString('utf8');
    if (!complete) text = text.slice(0, text.lastIndexOf('\n') + 1);
    return { text, complete };
  } finally {
    closeSync(fd);
  }
}

function filesUnder(dir: string, keep: (name: string) => boolean): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && keep(entry.name)) out.push(join(entry.parentPath, entry.name));
  }
  return out.sort();
}

const extFormat = (name: string) =>
  /\.parquet$/i.test(name) ? 'parquet' : /\.(jsonl|json)$/i.test(name) ? 'jsonl' : undefined;

/** data.py load_source_rows: a file, or a folder of .jsonl/.parquet files all read in the source's format. */
function checkDataSource(
  p: string,
  format: 'jsonl' | 'parquet',
  kind: StageConfig['kind'],
  bad: (m: string) => void,
) {
  if (!existsSync(p)) return bad(noSuchFile(p));
  let files = [p];
  if (statSync(p).isDirectory()) {
    files = filesUnder(p, (n) => /\.(jsonl|parquet)$/.test(n));
    if (files.length === 0) return bad(`the folder ${p} holds no .jsonl or .parquet file`);
    const other = files.find((f) => extFormat(f) !== format);
    if (other)
      return bad(
        `${other} is not ${format}: the trainer reads every file of a source in its format (set format, or split the folder)`,
      );
  }
  for (const f of files.slice(0, 1)) {
    const why = format === 'parquet' ? checkParquet(f) : checkJsonlRows(f, kind);
    if (why) return bad(why);
  }
}

function checkParquet(file: string): string | undefined {
  const size = statSync(file).size;
  const fd = openSync(file, 'r');
  try {
    const start = Buffer.alloc(4);
    const end = Buffer.alloc(4);
    readSync(fd, start, 0, 4, 0);
    if (size >= 8) readSync(fd, end, 0, 4, size - 4);
    if (size < 8 || start.toString('latin1') !== 'PAR1' || end.toString('latin1') !== 'PAR1')
      return `${file}: not a Parquet file (no PAR1 magic bytes); set format: jsonl if it holds JSON lines`;
  } finally {
    closeSync(fd);
  }
  return undefined;
}

/** The first records parse and have what a midtrain or sft row needs (data.py midtrain_example / sft_example). */
function checkJsonlRows(file: string, kind: StageConfig['kind']): string | undefined {
  const { text } = head(file);
  let seen = 0;
  const lines = text.split('\n');
  for (let n = 0; n < lines.length && seen < HEAD_RECORDS; n++) {
    if (!lines[n].trim()) continue;
    seen++;
    let row: unknown;
    try {
      row = JSON.parse(lines[n]);
    } catch (err) {
      return `${file}:${n + 1}: invalid JSON (${(err as Error).message})`;
    }
    const why = rowProblem(row, kind);
    if (why) return `${file}:${n + 1}: ${why}`;
  }
  if (seen === 0) return `${file}: no rows`;
  return undefined;
}

function rowProblem(row: unknown, kind: StageConfig['kind']): string | undefined {
  if (typeof row !== 'object' || row === null || Array.isArray(row)) return 'expected a JSON object per line';
  const r = row as Record<string, unknown>;
  if (kind === 'midtrain') {
    if (!('input_ids' in r) && typeof r.text !== 'string')
      return 'a midtrain row needs a string `text` (or pre-tokenised `input_ids`)';
  } else if (kind === 'sft') {
    if ('input_ids' in r) {
      if (
        !Array.isArray(r.loss_mask) ||
        !Array.isArray(r.input_ids) ||
        r.loss_mask.length !== r.input_ids.length
      )
        return 'pre-tokenised SFT rows need `loss_mask` as long as `input_ids`';
    } else if (!Array.isArray(r.messages)) {
      return 'an SFT row needs `messages` (a list of {role, content})';
    }
  }
  return undefined;
}

/** tokenizer.py Tokenizer.load: tokenizer.json (or a folder holding it) with every special token. Its size. */
function checkTokenizer(p: string, bad: (m: string) => void): number | undefined {
  if (!existsSync(p)) return void bad(noSuchFile(p));
  const file = statSync(p).isDirectory() ? join(p, 'tokenizer.json') : p;
  if (!existsSync(file)) return void bad(`${p} holds no tokenizer.json`);
  let tok: { model?: { vocab?: Record<string, number> }; added_tokens?: { content?: string }[] };
  try {
    tok = JSON.parse(readFileSync(file, 'utf8')) as typeof tok;
  } catch (err) {
    return void bad(`${file}: not a tokenizer.json (invalid JSON: ${(err as Error).message})`);
  }
  const vocab = new Set(Object.keys(tok.model?.vocab ?? {}));
  for (const t of tok.added_tokens ?? []) if (typeof t.content === 'string') vocab.add(t.content);
  const missing = SPECIAL_TOKENS.filter((t) => !vocab.has(t));
  if (missing.length > 0)
    return void bad(
      `${file} lacks the special token(s) ${missing.join(' ')} the trainer's chat format needs`,
    );
  return vocab.size;
}

/** lm.py open_checkpoint: a committed checkpoint (COMMIT.json) or a plain HF folder (config.json). */
function checkCheckpointFolder(
  p: string,
  bad: (m: string) => void,
): { config?: Record<string, unknown>; hasTokenizer: boolean } | undefined {
  if (!existsSync(p)) return void bad(`no such folder ${p} ${RELATIVE}`);
  if (!statSync(p).isDirectory())
    return void bad(`${p} is not a folder (a checkpoint is a folder with config.json)`);
  const configFile = join(p, 'config.json');
  if (!existsSync(configFile))
    return void bad(`${p} has no config.json (not an HF model folder nor a committed checkpoint)`);
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    return void bad(`${configFile}: invalid JSON (${(err as Error).message})`);
  }
  const family = hfFamilyProblem(cfg);
  if (family) return void bad(`${configFile}: ${family}`);
  const lacks = HF_REQUIRED_FIELDS.filter((k) => !(k in cfg));
  if (lacks.length > 0) return void bad(`${configFile} lacks ${lacks.join(', ')}`);
  const heads = Number(cfg.num_attention_heads);
  const why = shapeProblems({
    hidden_size: Number(cfg.hidden_size),
    num_attention_heads: heads,
    num_key_value_heads: Number(cfg.num_key_value_heads ?? heads),
    head_dim: Number(cfg.head_dim ?? 0),
  });
  if (why.length > 0) return void bad(`${configFile}: ${why.join('; ')}`);
  return { config: cfg, hasTokenizer: existsSync(join(p, 'tokenizer.json')) };
}

/** lm.py run_lm_stage: the tokenizer fits the model, and every sequence fits its positions. */
function checkModelFit(
  config: PipelineConfig,
  hf: Record<string, unknown> | undefined,
  tokenizerVocab: number | undefined,
  report: Report,
) {
  const init = config.model.init;
  const modelVocab =
    'preset' in init
      ? (init.overrides.vocab_size as number | undefined)
      : (hf?.vocab_size as number | undefined);
  if (tokenizerVocab !== undefined && modelVocab !== undefined && tokenizerVocab > modelVocab) {
    report(
      ['model', 'tokenizer', 'path'],
      `the tokenizer has ${tokenizerVocab} tokens but the model's vocab_size is ${modelVocab}`,
    );
  }
  if (hf === undefined) return;
  const positions = Number(hf.max_position_embeddings ?? HF_DEFAULT_MAX_POSITIONS);
  config.stages.forEach((stage, i) => {
    if (stage.data && stage.data.seq_len > positions)
      report(
        ['stages', i, 'data', 'seq_len'],
        `exceeds the init checkpoint's max_position_embeddings ${positions}, got ${stage.data.seq_len}`,
      );
  });
}

/** tasks/task.py read_tasks_jsonl + Task.from_dict: every line a task, ids unique, at least one task. */
function checkTasksFile(p: string, bad: (m: string) => void) {
  if (!existsSync(p) || !statSync(p).isFile()) return bad(noSuchFile(p));
  const seen = new Set<string>();
  const lines = readFileSync(p, 'utf8').split('\n');
  for (let n = 0; n < lines.length; n++) {
    if (!lines[n].trim()) continue;
    let task: unknown;
    try {
      task = JSON.parse(lines[n]);
    } catch (err) {
      return bad(`${p}:${n + 1}: not valid JSON (${(err as Error).message})`);
    }
    const why = taskProblem(task);
    if (why) return bad(`${p}:${n + 1}: ${why}`);
    const id = (task as { id: string }).id;
    if (seen.has(id)) return bad(`${p}:${n + 1}: duplicate task id ${JSON.stringify(id)}`);
    seen.add(id);
  }
  if (seen.size === 0) return bad(`${p}: no tasks`);
}

const TASK_FIELDS = ['id', 'family', 'prompt', 'verifier', 'tools', 'environment', 'meta'];

function taskProblem(d: unknown): string | undefined {
  if (typeof d !== 'object' || d === null || Array.isArray(d)) return 'expected a JSON object (a task)';
  const t = d as Record<string, unknown>;
  for (const key of ['id', 'prompt', 'verifier'])
    if (!(key in t)) return `missing field '${key}' (a task needs id, prompt and verifier)`;
  const unknown = Object.keys(t).filter((k) => !TASK_FIELDS.includes(k));
  if (unknown.length > 0) return `unknown field(s) ${unknown.join(', ')} (known: ${TASK_FIELDS.join(', ')})`;
  if (typeof t.id !== 'string' || t.id === '') return "field 'id' must be a non-empty string";
  const prompt = typeof t.prompt === 'string' ? [{ role: 'user', content: t.prompt }] : t.prompt;
  const okMessage = (m: unknown) =>
    typeof m === 'object' &&
    m !== null &&
    ['system', 'user'].includes((m as { role?: unknown }).role as string) &&
    typeof (m as { content?: unknown }).content === 'string';
  if (!Array.isArray(prompt) || prompt.length === 0 || !prompt.every(okMessage))
    return "field 'prompt' must be a string or a non-empty list of {role: system|user, content: string} messages";
  const v = t.verifier as Record<string, unknown> | null;
  if (
    typeof v !== 'object' ||
    v === null ||
    !['answer', 'unit_tests', 'swe_tests'].includes(v.kind as string)
  )
    return "field 'verifier.kind' must be answer, unit_tests or swe_tests";
  if (v.kind === 'answer' && typeof v.expected !== 'string')
    return "an answer verifier needs 'expected' (a string)";
  if (v.kind === 'answer' && !['final', 'tool'].includes((v.source ?? 'final') as string))
    return "field 'verifier.source' must be final or tool";
  if (v.kind === 'unit_tests' && typeof v.test !== 'string')
    return "a unit_tests verifier needs 'test' (Python source)";
  return undefined;
}

/** The head of a SWE instances file (tasks/swe/instance.py): each record has the fields an instance needs and
 * a snapshot that exists here. The trainer checks the rest (and reports every unusable instance) when it loads. */
function checkSweFile(p: string, bad: (m: string) => void) {
  if (!existsSync(p) || !statSync(p).isFile()) return bad(noSuchFile(p));
  const seen = new Set<string>();
  const lines = head(p).text.split('\n');
  let records = 0;
  for (let n = 0; n < lines.length && records < HEAD_RECORDS; n++) {
    if (!lines[n].trim()) continue;
    records++;
    let inst: unknown;
    try {
      inst = JSON.parse(lines[n]);
    } catch (err) {
      return bad(`${p}:${n + 1}: not valid JSON (${(err as Error).message})`);
    }
    const why = sweInstanceProblem(inst, dirname(p));
    if (why) return bad(`${p}:${n + 1}: ${why}`);
    const id = (inst as { instance_id: string }).instance_id;
    if (seen.has(id)) return bad(`${p}:${n + 1}: duplicate instance_id ${JSON.stringify(id)}`);
    seen.add(id);
  }
  if (records === 0) return bad(`${p}: no SWE instances`);
}

const testList = (v: unknown): unknown[] | undefined => {
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v); // SWE-bench's Hugging Face export: a JSON-encoded list
    } catch {
      return undefined;
    }
  }
  return Array.isArray(v) && v.every((t) => typeof t === 'string') ? v : undefined;
};

function sweInstanceProblem(d: unknown, dir: string): string | undefined {
  if (typeof d !== 'object' || d === null || Array.isArray(d))
    return 'expected a JSON object (a SWE instance)';
  const t = d as Record<string, unknown>;
  for (const key of ['instance_id', 'repo', 'problem_statement'])
    if (typeof t[key] !== 'string' || t[key] === '')
      return `field '${key}' must be a non-empty string (a SWE instance needs instance_id, repo, patch, problem_statement, FAIL_TO_PASS)`;
  if (typeof t.patch !== 'string') return "field 'patch' must be the gold patch (a unified diff)";
  const f2p = testList(t.FAIL_TO_PASS);
  if (!f2p || f2p.length === 0) return "field 'FAIL_TO_PASS' must be a non-empty list of test ids";
  if (t.PASS_TO_PASS !== undefined && !testList(t.PASS_TO_PASS))
    return "field 'PASS_TO_PASS' must be a list of test ids";
  const snap = t.snapshot as Record<string, unknown> | null | undefined;
  if (typeof snap !== 'object' || snap === null)
    return `${t.instance_id as string}: no snapshot: environments are built offline without Docker, so an instance needs snapshot {kind: sdist|dir|git, path}`;
  if (!['sdist', 'dir', 'git'].includes(snap.kind as string))
    return "field 'snapshot.kind' must be sdist, dir or git";
  if (typeof snap.path !== 'string') return "field 'snapshot.path' must be a path";
  const snapPath = isAbsolute(snap.path) ? snap.path : resolve(dir, snap.path);
  if (!existsSync(snapPath))
    return `snapshot.path: no such ${snap.kind === 'sdist' ? 'file' : 'folder'} ${snapPath} (relative paths are relative to the instances file)`;
  if (typeof t.environment !== 'object' || t.environment === null)
    return "field 'environment' must say how the venv is built ({python, requirements, pythonpath})";
  return undefined;
}

// ---- s3:// inputs (--check-remote) ----------------------------------------------------------------------------

type RemoteKind = 'data' | 'tokenizer' | 'checkpoint' | 'tasks';

/** What the trainer would download exists: an object, or a folder prefix holding what it reads. */
async function checkRemote(store: ObjectStore, uri: string, what: RemoteKind): Promise<string | undefined> {
  const base = uri.replace(/\/$/, '');
  switch (what) {
    case 'data': {
      if (!uri.endsWith('/') && (await store.exists(uri))) return undefined;
      const keys = await store.firstKeys(base);
      return keys.some((k) => /\.(jsonl|parquet)$/.test(k))
        ? undefined
        : `no such object or folder ${uri} (or no .jsonl/.parquet file among its first keys)`;
    }
    case 'tokenizer': {
      const file = base.endsWith('.json') ? base : `${base}/tokenizer.json`;
      return (await store.exists(file)) ? undefined : `no such object ${file}`;
    }
    case 'checkpoint':
      return (await store.exists(`${base}/config.json`)) || (await store.exists(`${base}/COMMIT.json`))
        ? undefined
        : `no checkpoint at ${uri} (neither config.json nor COMMIT.json under it)`;
    case 'tasks':
      return undefined; // refused by the schema: the trainer reads tasks from a local file only
  }
}
