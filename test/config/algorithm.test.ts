// The algorithm presets: `name` resolves to every field of the objective, each overridable; fields that
// would change nothing are rejected with the YAML position; `validate` prints the resolved values.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ALGORITHM_PRESETS, algorithmSchema } from '../../src/config/algorithm';
import { parseConfig } from '../../src/config/load';
import { problems } from './problems';

const ROOT = join(__dirname, '..', '..');
const config = (
  algorithm: string,
  rollout = '{ group_size: 2, concurrency: 2 }',
) => `api_version: trainflow/v1
metadata:
  name: t
storage:
  uri: s3://trainflow/runs
model:
  init: { preset: tiny }
  tokenizer: { path: tokenizer.json }
stages:
  - name: r
    kind: rl
    tasks: { family: demo }
    rollout: ${rollout}
    algorithm: ${algorithm}
    train: { steps: 1 }
`;

test('each preset resolves to its documented fields; grpo and dapo differ where the papers do', () => {
  const grpo = algorithmSchema.parse({ name: 'grpo' });
  const dapo = algorithmSchema.parse({ name: 'dapo' });
  expect(grpo).toEqual({ name: 'grpo', ...ALGORITHM_PRESETS.grpo });
  expect([grpo.loss_agg, grpo.clip_low, grpo.clip_high]).toEqual(['seq-mean', 0.2, 0.2]);
  expect([dapo.loss_agg, dapo.clip_low, dapo.clip_high, dapo.kl_coef]).toEqual(['token-mean', 0.2, 0.28, 0]);
  const d = algorithmSchema.parse({ name: 'decoupled-ppo' });
  expect([d.decoupled, d.behav_weight_cap, d.minibatches]).toEqual([true, 5, 4]);
  expect(algorithmSchema.parse({}).name).toBe('grpo');
});

test('every field overrides its preset, and the resolved stage carries them all', () => {
  const over = { clip_high: 0.3, loss_agg: 'token-mean', kl_coef: 0.01, minibatches: 2 } as const;
  const r = algorithmSchema.parse({ name: 'grpo', ...over });
  expect(r).toMatchObject(over);
  expect(r.clip_low).toBe(0.2);
  const stage = parseConfig(config('{ name: dapo, decoupled: true }'), 'x.yaml').stages[0];
  expect(stage.algorithm).toEqual({ ...ALGORITHM_PRESETS.dapo, name: 'dapo', decoupled: true });
  expect(stage.rollout?.top_p).toBe(1);
  expect(stage.sampling?.all_equal_tolerance).toBe(1e-6);
});

test('a field with no effect is rejected where it is written', () => {
  expect(problems(config('{ name: dapo, behav_weight_cap: 3 }'))).toEqual([
    'x.yaml:14:48 stages[0].algorithm.behav_weight_cap: applies to decoupled PPO only: set decoupled: true (or name: decoupled-ppo), or remove it, got 3',
  ]);
  expect(problems(config('{ name: grpo, kl_reference: s3://b/ckpt }'))).toEqual([
    'x.yaml:14:44 stages[0].algorithm.kl_reference: has no effect with kl_coef 0: set kl_coef > 0, or remove it, got "s3://b/ckpt"',
  ]);
  expect(problems(config('{ name: vanilla }'))[0]).toMatch(
    /^x\.yaml:14:24 stages\[0\]\.algorithm\.name: expected grpo \| dapo \| ppo \| decoupled-ppo/,
  );
  // the same fields are accepted where they act
  expect(() => parseConfig(config('{ name: decoupled-ppo, behav_weight_cap: 3 }'), 'x.yaml')).not.toThrow();
  expect(() =>
    parseConfig(config('{ name: grpo, kl_coef: 0.04, kl_reference: s3://b/c }'), 'x.yaml'),
  ).not.toThrow();
});

test('`trainflow validate` prints the resolved algorithm values', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tf-alg-'));
  const file = join(dir, 'c.yaml');
  writeFileSync(
    file,
    config('{ name: grpo, clip_high: 0.25 }', '{ group_size: 2, concurrency: 2, top_p: 0.9 }'),
  );
  const out = execFileSync('node', ['bin/trainflow.js', 'validate', '--json', '--schema-only', file], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  const stage = JSON.parse(out).stages[0];
  expect(stage.algorithm).toEqual({ ...ALGORITHM_PRESETS.grpo, name: 'grpo', clip_high: 0.25 });
  expect(stage.rollout.top_p).toBe(0.9);
  // a local kl_reference is relative to the config file, like every other local path
  writeFileSync(file, config('{ name: dapo, kl_coef: 0.1, kl_reference: ckpt/step-000010 }'));
  const resolved = JSON.parse(
    execFileSync('node', ['bin/trainflow.js', 'validate', '--json', '--schema-only', file], {
      cwd: ROOT,
      encoding: 'utf8',
    }),
  );
  expect(resolved.stages[0].algorithm.kl_reference).toBe(join(dir, 'ckpt', 'step-000010'));
});
