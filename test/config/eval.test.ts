// The eval stage's and the promotion rule's config: defaults, and every rejection with its YAML position.
import { parseConfig } from '../../src/config/load';
import { problems } from './problems';

const HEAD = `api_version: trainflow/v1
metadata:
  name: t
storage:
  uri: s3://trainflow/runs
model:
  init: { from_pipeline: t, fallback: { preset: tiny } }
stages:
  - name: a
    kind: midtrain
    data:
      sources: [{ path: /tmp/a.jsonl }]
    train: { steps: 10 }
`;

test('an eval stage takes tasks, rollout and eval; its defaults are filled and it trains nothing', () => {
  const c = parseConfig(
    `${HEAD}  - name: ev
    kind: eval
    tasks: { family: demo, count: 8 }
    gates: [{ metric: pass@1, min: 0 }, { metric: pass_rate_level_3, min: 0 }]
promotion: { stage: ev }
`,
    'x.yaml',
  );
  const ev = c.stages[1];
  expect(ev.train).toBeUndefined();
  expect(ev.eval).toEqual({ samples: 4, pass_k: [1] });
  expect(ev.rollout?.top_p).toBe(1);
  expect(c.promotion).toEqual({ stage: 'ev', metric: 'pass@1', min_improvement: 0 });
  expect(c.model.init).toEqual({ from_pipeline: 't', fallback: { preset: 'tiny', overrides: {} } });
});

test('eval and promotion mistakes are rejected where they are written', () => {
  expect(
    problems(`${HEAD}  - name: ev
    kind: eval
    tasks: { family: demo }
    train: { steps: 1 }
    eval: { samples: 2, pass_k: [1, 4] }
    rollout: { concurrency: 1 }
    gates: [{ metric: pass@4, min: 0.1 }, { metric: loss, max: 1 }]
promotion: { stage: a, metric: pass@1 }
`),
  ).toEqual([
    'x.yaml:17:12 stages[1].train: eval stages train nothing: remove the train block',
    'x.yaml:18:37 stages[1].eval.pass_k[1]: pass@4 needs eval.samples ≥ 4 (it is 2), got 4',
    "x.yaml:19:29 stages[1].rollout.concurrency: an eval stage's rollout.concurrency (1) must be ≥ eval.samples (2)",
    'x.yaml:20:53 stages[1].gates[1].metric: unknown metric for a eval stage (known: pass@1, pass@4, reward_mean, pass_rate, tasks, samples, episodes, turns_mean, pass_rate_level_N), got "loss"',
    'x.yaml:21:21 promotion.stage: expected the name of an eval stage (eval stages: ev), got "a"',
  ]);
  expect(
    problems(`${HEAD}  - name: ev
    kind: eval
    tasks: { family: demo }
    eval: { pass_k: [1, 2] }
promotion: { stage: ev, metric: pass@9 }
`),
  ).toEqual([
    'x.yaml:18:33 promotion.metric: unknown metric of eval stage ev (known: pass@1, pass@2, reward_mean, pass_rate, tasks, samples, episodes, turns_mean, pass_rate_level_N), got "pass@9"',
  ]);
});

test('a training stage still needs its train block; a fallback is a preset or a checkpoint', () => {
  expect(problems(HEAD.replace('    train: { steps: 10 }\n', ''))).toEqual([
    'x.yaml:9:5 stages[0]: midtrain stages need the train block',
  ]);
  expect(problems(HEAD.replace('fallback: { preset: tiny }', 'fallback: { from_pipeline: u }'))).toEqual([
    'x.yaml:7:39 model.init.fallback: expected {preset: tiny} or {checkpoint: PATH_OR_S3_URI}, got a mapping',
  ]);
});

test('an eval stage cannot come first when the run may start from a preset: it would score random weights', () => {
  const evalFirst = HEAD.replace(
    `  - name: a
    kind: midtrain
    data:
      sources: [{ path: /tmp/a.jsonl }]
    train: { steps: 10 }
`,
    `  - name: ev
    kind: eval
    tasks: { family: demo }
`,
  );
  expect(problems(evalFirst)).toEqual([
    'x.yaml:10:11 stages[0].kind: an eval stage scores a checkpoint: the first stage cannot be one when the run may start from a preset (put it after a training stage, or start from model.init {checkpoint: ...})',
  ]);
  const fromCheckpoint = evalFirst.replace(
    'fallback: { preset: tiny }',
    'fallback: { checkpoint: s3://b/c }',
  );
  expect(parseConfig(fromCheckpoint, 'x.yaml').stages[0].kind).toBe('eval');
});
