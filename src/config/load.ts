// Reading a config file: YAML → the zod schema, with every problem reported at once as
// `FILE:LINE:COL path: message, got VALUE`, pointing at the YAML line it came from.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import { UserError } from '../errors';
import { pipelineConfigSchema, type PipelineConfig } from './schema';

export type ConfigProblem = { file: string; line: number; col: number; path: string; message: string };

export class ConfigError extends UserError {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'), 2);
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.col} ${p.path}: ${p.message}`;
}

/** `stages[2].train.lr` */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out || '(root)';
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return JSON.stringify(value) ?? 'a value';
}

const TYPE_WORDS: Record<string, string> = {
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a mapping',
  array: 'a list',
  record: 'a mapping',
};

/** Messages for the issues the schema does not word itself (zod calls this only for those). */
function message(issue: z.core.$ZodRawIssue): string {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.input === undefined) return 'required field is missing';
      return `expected ${TYPE_WORDS[issue.expected] ?? issue.expected}`;
    case 'invalid_value':
      return `expected ${issue.values.map((v) => JSON.stringify(v)).join(' | ')}`;
    case 'too_small':
      return issue.origin === 'array'
        ? `expected at least ${issue.minimum} item(s)`
        : `expected at least ${issue.minimum}`;
    case 'too_big':
      return issue.origin === 'array'
        ? `expected at most ${issue.maximum} item(s)`
        : `expected at most ${issue.maximum}`;
    default:
      return issue.message ?? 'invalid value';
  }
}

/** The YAML node (or mapping key, for an unknown key) that a schema path points at, or its nearest parent. */
function locate(doc: Document, path: readonly PropertyKey[], pointAtKey: boolean): [number, number] {
  let node: unknown = doc.contents;
  let range: [number, number] = [0, 0];
  const rangeOf = (n: unknown) => {
    const r = (n as Node | null)?.range;
    return r ? ([r[0], r[1]] as [number, number]) : undefined;
  };
  range = rangeOf(node) ?? range;
  for (let i = 0; i < path.length; i++) {
    const part = path[i];
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find(
        (it) => isPair(it) && isScalar(it.key) && String(it.key.value) === String(part),
      );
      if (!pair) return range;
      if (last && pointAtKey) return rangeOf(pair.key) ?? range;
      node = pair.value;
      range = rangeOf(node) ?? rangeOf(pair.key) ?? range;
    } else if (isSeq(node) && typeof part === 'number') {
      node = node.items[part];
      if (node === undefined) return range;
      range = rangeOf(node) ?? range;
    } else {
      return range;
    }
  }
  return range;
}

/**
 * A union of mappings (model.init, model.tokenizer) fails as a whole; when exactly one alternative has
 * every key the user wrote, its own problems are the useful ones (`preset: expected tiny | small…`).
 */
function explainUnion(issue: z.core.$ZodIssue): z.core.$ZodIssue[] {
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return [issue];
  const fitting = issue.errors.filter((branch) => !branch.some((i) => i.code === 'unrecognized_keys'));
  if (fitting.length !== 1) return [issue];
  return fitting[0].map((i) => ({ ...i, path: [...issue.path, ...i.path] }));
}

export function parseConfig(source: string, file: string): PipelineConfig {
  return parseConfigWithPositions(source, file).config;
}

/** A parsed config and where its fields are in the YAML, for problems found after parsing (files, S3). */
export interface PositionedConfig {
  config: PipelineConfig;
  /** A problem at the YAML position of a config path (or of its nearest parent that the file holds). */
  problemAt: (path: readonly PropertyKey[], message: string) => ConfigProblem;
}

export function parseConfigWithPositions(source: string, file: string): PositionedConfig {
  const lineCounter = new LineCounter();
  const doc = parseDocument(source, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const where = (offset: number) => lineCounter.linePos(offset);
  if (doc.errors.length > 0) {
    // Only the first syntax error: the ones after it are usually its echoes.
    const e = doc.errors[0];
    const { line, col } = where(e.pos[0]);
    throw new ConfigError([
      { file, line, col, path: '(yaml)', message: `invalid YAML: ${e.message.split('\n')[0]}` },
    ]);
  }
  const data: unknown = doc.toJS();
  const result = pipelineConfigSchema.safeParse(data ?? {}, { reportInput: true, error: message });
  if (result.success) {
    const problemAt = (path: readonly PropertyKey[], text: string): ConfigProblem => {
      const { line, col } = where(locate(doc, path, false)[0]);
      return { file, line, col, path: formatPath(path), message: text };
    };
    return { config: result.data, problemAt };
  }

  const problems: ConfigProblem[] = [];
  for (const issue of result.error.issues.flatMap(explainUnion)) {
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [undefined];
    for (const key of keys) {
      const path = key === undefined ? issue.path : [...issue.path, key];
      const [start] = locate(doc, path, key !== undefined);
      const { line, col } = where(start);
      let text = key !== undefined ? 'unknown field (remove it or check its spelling)' : issue.message;
      if (key === undefined && issue.code !== 'unrecognized_keys') {
        const input = 'input' in issue ? issue.input : undefined;
        if (input !== undefined) text += `, got ${show(input)}`;
        else if (issue.code !== 'custom' && !text.includes('missing')) text += ' (required field is missing)';
      }
      problems.push({ file, line, col, path: formatPath(path), message: text });
    }
  }
  problems.sort((a, b) => a.line - b.line || a.col - b.col);
  throw new ConfigError(problems);
}

/** Replaces `{{name}}` placeholders (e.g. `{{scheduled_date}}` for a retrain's data snapshot) before parsing. */
export function substituteVariables(source: string, vars: Record<string, string>): string {
  return source.replace(/\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}/gi, (whole, key: string) => vars[key] ?? whole);
}

export function loadConfigFile(file: string, vars: Record<string, string> = {}): PipelineConfig {
  return loadConfigWithPositions(file, vars).config;
}

/** loadConfigFile, keeping the YAML positions (for `validate`'s file and S3 checks). */
export function loadConfigWithPositions(file: string, vars: Record<string, string> = {}): PositionedConfig {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UserError(
      `${file}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      2,
    );
  }
  const parsed = parseConfigWithPositions(substituteVariables(source, vars), file);
  return { ...parsed, config: resolveLocalPaths(parsed.config, dirname(resolve(file))) };
}

/** Local data paths are written relative to the config file; jobs run elsewhere, so make them absolute. */
export function resolveLocalPaths(config: PipelineConfig, baseDir: string): PipelineConfig {
  const fix = (p: string) => (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) || isAbsolute(p) ? p : resolve(baseDir, p));
  const init =
    'checkpoint' in config.model.init ? { checkpoint: fix(config.model.init.checkpoint) } : config.model.init;
  const tok = config.model.tokenizer;
  const tokenizer =
    tok === undefined
      ? undefined
      : 'train' in tok
        ? { path: fix(tok.path), train: { ...tok.train, corpora: tok.train.corpora?.map(fix) } }
        : { path: fix(tok.path) };
  return {
    ...config,
    model: { ...config.model, init, tokenizer },
    stages: config.stages.map((stage) => ({
      ...stage,
      data: stage.data && {
        ...stage.data,
        sources: stage.data.sources.map((src) => ({ ...src, path: src.path && fix(src.path) })),
      },
      tasks: stage.tasks && { ...stage.tasks, path: stage.tasks.path && fix(stage.tasks.path) },
      algorithm: stage.algorithm?.kl_reference
        ? { ...stage.algorithm, kl_reference: fix(stage.algorithm.kl_reference) }
        : stage.algorithm,
    })),
  };
}
