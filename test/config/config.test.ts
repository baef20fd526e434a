// The config schema against valid and invalid configs: every error message, with its YAML line, asserted.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfigFile, parseConfig, substituteVariables } from '../../src/config/load';
import { configReference } from '../../src/config/reference';
import { hashJson } from '../../src/pipeline/canonical';
import { problems } from './problems';

const ROOT = join(__dirname, '..', '..');

const BASE = `api_version: trainflow/v1
metadata:
  name: t
storage:
  uri: s3://trainflow/runs
model: { tokenizer: { path: /tmp/tokenizer.json },
  init: { preset: tiny } }
stages:
  - name: a
    kind: midtrain
    data:
      sources: [{ path: /tmp/a.jsonl }]
    train: { steps: 10 }
`;

describe('valid configs', () => {
  test.each([
    ['configs/demo.yaml', ['midtrain', 'midtrain', 'sft', 'rft', 'eval', 'rl', 'eval']],
    ['configs/kat-dev-72b.yaml', ['midtrain', 'midtrain', 'sft', 'rft', 'rl']],
  ])('%s validates', (file, kinds) => {
    const config = loadConfigFile(join(ROOT, file));
    expect(config.stages.map((s) => s.kind)).toEqual(kinds);
  });

  test('defaults are filled in one place: durations in ms, retry and resources merged per stage', () => {
    const c = parseConfig(BASE, 'x.yaml');
    const s = c.stages[0];
    expect(s.heartbeat_timeout).toBe(120_000);
    expect(s.start_to_close_timeout).toBe(7 * 86_400_000);
    expect(s.retry).toEqual({ max_attempts: 5, initial_interval: 5000, backoff: 2, max_interval: 300_000 });
    expect(s.resources).toEqual({ pool: 'default', nodes: 1, gpus_per_node: 0 });
    expect(s.train?.micro_batch_size).toBe(8);
    expect(s.train?.min_lr).toBeCloseTo(3e-5);
    expect(s.checkpoint).toEqual({ every: 100, keep_last: 2 });
    expect(c.pools.default).toMatchObject({ launcher: 'local', task_queue: 'trainflow-pool-default' });
    expect(c.temporal).toEqual({ address: '127.0.0.1:7233', namespace: 'default', task_queue: 'trainflow' });
  });

  test('a stage override wins over defaults, field by field', () => {
    const yaml = BASE.replace(
      '    train: { steps: 10 }',
      '    train: { steps: 10 }\n    retry: { max_attempts: 9 }\n    heartbeat_timeout: 30s',
    );
    const s = parseConfig(yaml, 'x.yaml').stages[0];
    expect(s.retry.max_attempts).toBe(9);
    expect(s.retry.initial_interval).toBe(5000);
    expect(s.heartbeat_timeout).toBe(30_000);
  });

  test('relative data paths resolve against the config file folder; s3 URIs stay as they are', () => {
    const c = loadConfigFile(join(ROOT, 'configs/demo.yaml'));
    expect(c.stages[0].data?.sources[0].path).toBe(join(ROOT, '.data/demo/midtrain-code.jsonl'));
    const k = loadConfigFile(join(ROOT, 'configs/kat-dev-72b.yaml'));
    expect(k.stages[0].data?.sources[0].path).toBe('s3://kat-training/data/midtrain/tool-use');
  });

  test('the resolved kat-dev-72b config asks for 8 nodes x 8 H800 on the Slurm pool', () => {
    const k = loadConfigFile(join(ROOT, 'configs/kat-dev-72b.yaml'));
    const rl = k.stages.find((s) => s.kind === 'rl')!;
    expect(rl.resources).toMatchObject({ pool: 'h800-slurm', nodes: 8, gpus_per_node: 8, gpu_type: 'H800' });
    expect(k.pools['h800-slurm'].launcher).toBe('slurm');
    expect(k.schedule).toMatchObject({ cron: '0 2 * * 0', overlap: 'skip', pause_on_failure: true });
  });

  test("defaults.launcher is the implicit default pool's launcher", () => {
    const c = parseConfig(BASE.replace('model:', 'defaults: { launcher: slurm }\nmodel:'), 'x.yaml');
    expect(c.pools).toEqual({
      default: { launcher: 'slurm', gpus_per_node: 0, max_nodes: 1, task_queue: 'trainflow-pool-default' },
    });
    expect(parseConfig(BASE, 'x.yaml').pools.default.launcher).toBe('local');
  });

  test('{{placeholders}} are substituted before parsing; config hashes ignore key order', () => {
    const src = readFileSync(join(ROOT, 'configs/kat-dev-72b.yaml'), 'utf8');
    const c = parseConfig(substituteVariables(src, { scheduled_date: '2026-11-29' }), 'k.yaml');
    expect(c.stages[4].tasks?.path).toBe('/shared/kat-training/rl/snapshots/2026-11-29/instances.jsonl');
    expect(hashJson({ a: 1, b: { c: 2, d: 3 } })).toBe(hashJson({ b: { d: 3, c: 2 }, a: 1 }));
    expect(hashJson({ a: 1 })).not.toBe(hashJson({ a: 2 }));
  });
});

describe('invalid configs: every problem at once, FILE:LINE:COL path: message', () => {
  test('a wrong type names the field, the expectation and the value', () => {
    expect(problems(BASE.replace('train: { steps: 10 }', 'train: { steps: 10, lr: fast }'))).toEqual([
      'x.yaml:13:29 stages[0].train.lr: expected a positive number, got "fast"',
    ]);
  });

  test('several problems are all reported, in line order', () => {
    const yaml = BASE.replace('name: t', 'name: T_bad').replace(
      'train: { steps: 10 }',
      'train: { steps: -3 }',
    );
    expect(problems(yaml)).toEqual([
      'x.yaml:3:9 metadata.name: expected a pipeline name of lowercase letters, digits and dashes (at most 63 characters), got "T_bad"',
      'x.yaml:13:21 stages[0].train.steps: expected a positive integer, got -3',
    ]);
  });

  test('unknown keys are errors, pointing at the key', () => {
    expect(problems(BASE.replace('    kind: midtrain', '    kind: midtrain\n    epochs: 3'))).toEqual([
      'x.yaml:11:5 stages[0].epochs: unknown field (remove it or check its spelling)',
    ]);
  });

  test('a missing required field points at its parent', () => {
    expect(problems(BASE.replace('  init: { preset: tiny } }', '  dtype: fp32 }'))).toEqual([
      'x.yaml:6:8 model.init: expected one of {preset: tiny}, {checkpoint: PATH_OR_S3_URI} or {from_pipeline: NAME} (required field is missing)',
    ]);
  });

  test('typed units: durations and enums', () => {
    const yaml = BASE.replace('model:', 'defaults:\n  heartbeat_timeout: soon\n  launcher: ssh\nmodel:');
    expect(problems(yaml)).toEqual([
      'x.yaml:7:22 defaults.heartbeat_timeout: expected a duration such as 30s, 5m, 2h or 7d, got "soon"',
      'x.yaml:8:13 defaults.launcher: expected one of local | slurm | kubernetes, got "ssh"',
    ]);
  });

  test('rollout.session_idle_timeout is a duration (resolved to ms for the RL driver)', () => {
    const rl = (idle: string) =>
      `${BASE}  - name: r\n    kind: rl\n    tasks: { family: demo }\n    rollout: { session_idle_timeout: ${idle} }\n    algorithm: { name: dapo }\n    train: { steps: 1 }\n`;
    expect(parseConfig(rl('10m'), 'x.yaml').stages[1].rollout?.session_idle_timeout).toBe(600_000);
    expect(parseConfig(BASE, 'x.yaml').stages[0].rollout?.session_idle_timeout).toBeUndefined();
    expect(problems(rl('300'))).toEqual([
      'x.yaml:17:38 stages[1].rollout.session_idle_timeout: expected a duration such as 30s, 5m, 2h or 7d, got 300',
    ]);
  });

  test('duplicate stage names', () => {
    const yaml = `${BASE}  - name: a\n    kind: sft\n    data: { sources: [{ path: /tmp/s.jsonl }] }\n    train: { steps: 1 }\n`;
    expect(problems(yaml)).toEqual([
      'x.yaml:14:11 stages[1].name: duplicate stage name (also stages[0]), got "a"',
    ]);
  });

  test('a gate on an unknown metric', () => {
    const yaml = BASE.replace(
      '    train: { steps: 10 }',
      '    train: { steps: 10 }\n    gates: [{ metric: accuracy, min: 0.5 }]',
    );
    expect(problems(yaml)).toEqual([
      'x.yaml:14:23 stages[0].gates[0].metric: unknown metric for a midtrain stage (known: loss, eval_loss, grad_norm, lr, tokens_per_s), got "accuracy"',
    ]);
  });

  test('a kind with its required block missing, and a block the kind does not take', () => {
    const yaml = `${BASE}  - name: r\n    kind: rl\n    tasks: { family: demo }\n    packing: { mode: trie }\n    train: { steps: 1 }\n    data: { sources: [{ path: /tmp/x }] }\n`;
    expect(problems(yaml)).toEqual([
      'x.yaml:14:5 stages[1]: rl stages need the rollout block',
      'x.yaml:14:5 stages[1]: rl stages need the algorithm block',
      'x.yaml:19:11 stages[1].data: data applies only to midtrain, sft stages, not rl',
    ]);
  });

  test('a resource request the launcher cannot serve', () => {
    const yaml = BASE.replace(
      '    train: { steps: 10 }',
      '    train: { steps: 10 }\n    resources: { nodes: 4 }',
    );
    expect(problems(yaml)).toEqual([
      'x.yaml:14:25 stages[0].resources.nodes: pool default uses the local launcher, which runs on one node, got 4',
      'x.yaml:14:25 stages[0].resources.nodes: pool default has at most 1 node(s), got 4',
    ]);
    const gpus =
      `${BASE.replace('model:', 'pools:\n  g: { launcher: slurm, gpus_per_node: 8, max_nodes: 2 }\nmodel:')}`.replace(
        '    train: { steps: 10 }',
        '    train: { steps: 10, batch_size: 16 }\n    resources: { pool: g, gpus_per_node: 16 }',
      );
    expect(problems(gpus)).toEqual([
      'x.yaml:16:42 stages[0].resources.gpus_per_node: pool g has 8 GPU(s) per node, got 16',
    ]);
    const unknownPool = BASE.replace(
      '    train: { steps: 10 }',
      '    train: { steps: 10 }\n    resources: { pool: h100 }',
    );
    expect(problems(unknownPool)).toEqual([
      'x.yaml:14:24 stages[0].resources.pool: unknown pool (defined: default), got "h100"',
    ]);
  });

  test('invalid YAML is one clear syntax error with its line', () => {
    expect(problems('api_version: trainflow/v1\nmetadata: { name: t\n')).toEqual([
      expect.stringMatching(/^x\.yaml:\d+:\d+ \(yaml\): invalid YAML: /),
    ]);
  });

  test('a missing file names the file', () => {
    expect(() => loadConfigFile('/nonexistent/p.yaml')).toThrow(
      '/nonexistent/p.yaml: cannot read the config file (ENOENT)',
    );
  });
});

test('configs/README.md is the reference generated from the schema (regenerate: npx trainflow config-reference > configs/README.md)', () => {
  expect(readFileSync(join(ROOT, 'configs/README.md'), 'utf8')).toBe(configReference());
});
