// The pipeline config (v1): the single definition of what a YAML config may say, its types and its defaults.
// Every default is filled here, so the rest of the code sees a complete, resolved config. Keys are
// snake_case because a stage's block flows unchanged into the job spec that the Python trainer reads.
import { z } from 'zod';
import { duration, size } from './units';
import { METRICS_BY_KIND } from './metrics';

// ---- small typed leaves, each with the message a user should read ----------------------------------------

const positiveNumber = () =>
  z.number({ error: 'expected a positive number' }).positive({ error: 'expected a positive number' });
const nonNegativeNumber = () =>
  z.number({ error: 'expected a number ≥ 0' }).nonnegative({ error: 'expected a number ≥ 0' });
const positiveInt = () =>
  z
    .number({ error: 'expected a positive integer' })
    .int({ error: 'expected a positive integer' })
    .positive({ error: 'expected a positive integer' });
const nonNegativeInt = () =>
  z
    .number({ error: 'expected an integer ≥ 0' })
    .int({ error: 'expected an integer ≥ 0' })
    .nonnegative({ error: 'expected an integer ≥ 0' });
const fraction = () =>
  z
    .number({ error: 'expected a number between 0 and 1' })
    .min(0, { error: 'expected a number between 0 and 1' })
    .max(1, { error: 'expected a number between 0 and 1' });
const name = (what: string) =>
  z
    .string({ error: `expected a ${what} name` })
    .regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
      error: `expected a ${what} name of lowercase letters, digits and dashes (at most 63 characters)`,
    });
const text = () => z.string({ error: 'expected a string' }).min(1, { error: 'must not be empty' });

/** A data location: a local path (relative to the config file) or an s3:// URI. */
const location = () => text();

export const KINDS = ['midtrain', 'sft', 'rft', 'rl'] as const;
export const LAUNCHERS = ['local', 'slurm', 'kubernetes'] as const;
export const PRESETS = ['tiny', 'small', '1b', '7b', '72b'] as const;

// ---- shared blocks ---------------------------------------------------------------------------------------

const retrySchema = z.strictObject({
  max_attempts: positiveInt().default(5),
  initial_interval: duration().prefault('5s'),
  backoff: z.number({ error: 'expected a number ≥ 1' }).min(1, { error: 'expected a number ≥ 1' }).default(2),
  max_interval: duration().prefault('5m'),
});
/** Per-stage retry overrides: only what the stage changes; merged over `defaults.retry` below. */
const retryOverrideSchema = z.strictObject({
  max_attempts: positiveInt().optional(),
  initial_interval: duration().optional(),
  backoff: z.number().min(1, { error: 'expected a number ≥ 1' }).optional(),
  max_interval: duration().optional(),
});

const resourcesSchema = z.strictObject({
  pool: name('pool').default('default'),
  nodes: positiveInt().default(1),
  gpus_per_node: nonNegativeInt().default(0),
  gpu_type: text().optional(),
  cpus_per_node: positiveInt().optional(),
  memory_per_node: size().optional(),
});
const resourcesOverrideSchema = z.strictObject({
  pool: name('pool').optional(),
  nodes: positiveInt().optional(),
  gpus_per_node: nonNegativeInt().optional(),
  gpu_type: text().optional(),
  cpus_per_node: positiveInt().optional(),
  memory_per_node: size().optional(),
});

const storageSchema = z.strictObject({
  uri: z
    .string({ error: 'expected an s3:// URI' })
    .regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, {
      error: 'expected an s3:// URI such as s3://my-bucket/trainflow',
    }),
  /** S3 endpoint for MinIO or another S3-compatible store; empty means AWS S3. */
  endpoint: z.url({ error: 'expected a URL such as http://127.0.0.1:9000' }).optional(),
  region: text().default('us-east-1'),
  force_path_style: z.boolean({ error: 'expected true or false' }).default(false),
  /** Names of the environment variables holding the credentials (never the credentials themselves). */
  access_key_env: text().default('AWS_ACCESS_KEY_ID'),
  secret_key_env: text().default('AWS_SECRET_ACCESS_KEY'),
  retention: z.strictObject({ keep_last: positiveInt().default(3) }).prefault({}),
});

const temporalSchema = z.strictObject({
  address: text().default('127.0.0.1:7233'),
  namespace: text().default('default'),
  /** Task queue of the control worker (workflows and light activities). */
  task_queue: text().default('trainflow'),
});

const slurmPoolSchema = z.strictObject({
  partition: text().optional(),
  account: text().optional(),
  qos: text().optional(),
  time_limit: duration().optional(),
  container_image: text().optional(),
  extra_sbatch_args: z.array(text()).default([]),
});

const kubernetesPoolSchema = z.strictObject({
  namespace: text().default('default'),
  image: text().optional(),
  node_selector: z.record(z.string(), z.string()).default({}),
  tolerations: z
    .array(
      z.strictObject({
        key: text(),
        operator: z.enum(['Equal', 'Exists']).default('Equal'),
        value: z.string().optional(),
        effect: z.enum(['NoSchedule', 'PreferNoSchedule', 'NoExecute']).optional(),
      }),
    )
    .default([]),
  service_account: text().optional(),
  /** Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the job's pods. */
  s3_secret: text().default('trainflow-s3'),
  gpu_resource: text().default('nvidia.com/gpu'),
});

const poolSchema = z.strictObject({
  launcher: z.enum(LAUNCHERS, { error: `expected one of ${LAUNCHERS.join(' | ')}` }),
  /** Temporal task queue of this pool's launcher worker; default trainflow-pool-NAME. */
  task_queue: text().optional(),
  gpus_per_node: nonNegativeInt().default(0),
  gpu_type: text().optional(),
  max_nodes: positiveInt().default(1),
  slurm: slurmPoolSchema.optional(),
  kubernetes: kubernetesPoolSchema.optional(),
});

const defaultsSchema = z.strictObject({
  launcher: z.enum(LAUNCHERS, { error: `expected one of ${LAUNCHERS.join(' | ')}` }).default('local'),
  retry: retrySchema.prefault({}),
  heartbeat_timeout: duration().prefault('2m'),
  /** Per attempt of a stage's job: days, since training jobs are long. */
  start_to_close_timeout: duration().prefault('7d'),
  resources: resourcesSchema.prefault({}),
});

// ---- the model -------------------------------------------------------------------------------------------

const initSchema = z.union(
  [
    z.strictObject({
      preset: z.enum(PRESETS, { error: `expected one of ${PRESETS.join(' | ')}` }),
      /** Overrides of the preset's HF config fields, e.g. num_hidden_layers: 2. */
      overrides: z.record(z.string(), z.union([z.number(), z.boolean(), z.string()])).default({}),
      seed: nonNegativeInt().default(0),
    }),
    z.strictObject({ checkpoint: location() }),
    z.strictObject({
      /** The final checkpoint of the latest successful run of another pipeline (by metadata.name). */
      from_pipeline: name('pipeline'),
      stage: name('stage').optional(),
    }),
  ],
  { error: 'expected one of {preset: tiny}, {checkpoint: PATH_OR_S3_URI} or {from_pipeline: NAME}' },
);

const tokenizerSchema = z.union(
  [
    z.strictObject({ path: location() }),
    z.strictObject({
      /** Train a BPE tokenizer at set-up from these corpora (the demo does; no download). */
      train: z.strictObject({ vocab_size: positiveInt().default(4096), corpora: z.array(location()).min(1) }),
      path: location(),
    }),
  ],
  { error: 'expected {path: tokenizer.json} or {train: {...}, path: OUT}' },
);

const modelSchema = z.strictObject({
  init: initSchema,
  tokenizer: tokenizerSchema.optional(),
  dtype: z.enum(['auto', 'bf16', 'fp32'], { error: 'expected one of auto | bf16 | fp32' }).default('auto'),
});

// ---- stage blocks ----------------------------------------------------------------------------------------

const dataSchema = z.strictObject({
  sources: z
    .array(
      z.strictObject({
        path: location(),
        weight: positiveNumber().default(1),
        format: z.enum(['jsonl', 'parquet'], { error: 'expected jsonl or parquet' }).default('jsonl'),
      }),
    )
    .min(1, { error: 'expected at least one data source' }),
  seq_len: positiveInt().default(512),
});

const tasksSchema = z.strictObject({
  family: z.enum(['demo', 'humaneval', 'jsonl'], { error: 'expected one of demo | humaneval | jsonl' }),
  path: location().optional(),
  count: positiveInt().optional(),
  seed: nonNegativeInt().default(0),
});

const trainSchema = z.strictObject({
  steps: positiveInt(),
  /** Sequences (or trajectories) per optimizer step, across all processes. */
  batch_size: positiveInt().default(8),
  micro_batch_size: positiveInt().optional(),
  lr: positiveNumber().default(3e-4),
  min_lr: nonNegativeNumber().optional(),
  warmup_steps: nonNegativeInt().default(0),
  weight_decay: nonNegativeNumber().default(0.1),
  betas: z.tuple([fraction(), fraction()]).default([0.9, 0.95]),
  grad_clip: positiveNumber().default(1.0),
  seed: nonNegativeInt().default(1234),
});

const checkpointSchema = z.strictObject({
  every: positiveInt().default(100),
  keep_last: positiveInt().default(2),
});

const gateSchema = z
  .strictObject({ metric: text(), min: z.number().optional(), max: z.number().optional() })
  .refine((g) => g.min !== undefined || g.max !== undefined, {
    error: 'a gate needs min, max or both',
  });

const packingSchema = z.strictObject({
  mode: z.enum(['trie', 'flat'], { error: 'expected trie or flat' }).default('trie'),
  max_tokens: positiveInt().default(4096),
});

const rolloutSchema = z.strictObject({
  group_size: positiveInt().default(8),
  /** Agent sessions running at once. */
  concurrency: positiveInt().default(8),
  /** Groups per training batch. */
  batch_groups: positiveInt().default(4),
  max_turns: positiveInt().default(4),
  max_new_tokens: positiveInt().default(256),
  temperature: nonNegativeNumber().default(1.0),
  top_p: fraction().default(1.0),
  /** Policy versions a sample may lag behind the trainer (0 = on-policy). */
  max_staleness: nonNegativeInt().default(1),
  token_in_token_out: z.boolean().default(true),
  inference: z
    .strictObject({
      backend: z.enum(['local', 'vllm', 'sglang'], { error: 'expected local | vllm | sglang' }).default('local'),
      servers: positiveInt().default(1),
    })
    .prefault({}),
  sandbox: z
    .strictObject({
      timeout: duration().prefault('10s'),
      memory: size().prefault('512Mi'),
      max_processes: positiveInt().default(32),
    })
    .prefault({}),
});

const samplingSchema = z.strictObject({
  strategy: z.enum(['difficulty', 'uniform'], { error: 'expected difficulty or uniform' }).default('difficulty'),
  /** Extra draw weight of a task never seen (explore before exploiting). */
  exploration_bonus: nonNegativeNumber().default(0.25),
  /** Drop groups whose outcomes are all equal (DAPO dynamic sampling). */
  filter_all_equal: z.boolean().default(true),
  /** Re-check a filtered task after this many steps. */
  recheck_every: positiveInt().default(20),
  /** Where per-task statistics persist; default under the pipeline's storage prefix. */
  stats_uri: location().optional(),
});

const algorithmSchema = z.strictObject({
  name: z.enum(['grpo', 'dapo', 'ppo'], { error: 'expected grpo | dapo | ppo' }).default('grpo'),
  clip_low: positiveNumber().default(0.2),
  clip_high: positiveNumber().default(0.28),
  loss_agg: z.enum(['token-mean', 'seq-mean'], { error: 'expected token-mean or seq-mean' }).default('token-mean'),
  kl_coef: nonNegativeNumber().default(0),
  entropy_coef: nonNegativeNumber().default(0),
  advantage_scaling: z
    .enum(['none', 'difficulty', 'entropy'], { error: 'expected none | difficulty | entropy' })
    .default('none'),
  normalize_std: z.boolean().default(true),
});

const rftSchema = z.strictObject({
  keep: z.enum(['passing', 'top'], { error: 'expected passing or top' }).default('passing'),
  top_fraction: fraction().default(0.25),
  rounds: positiveInt().default(1),
});

const jobSchema = z.strictObject({
  /** Replaces the trainer command (argv); the job still follows the job protocol. For custom jobs. */
  command: z.array(text()).min(1),
  env: z.record(z.string(), z.string()).default({}),
});

const stageSchema = z.strictObject({
  name: name('stage'),
  kind: z.enum(KINDS, { error: `expected one of ${KINDS.join(' | ')}` }),
  description: z.string().optional(),
  data: dataSchema.optional(),
  tasks: tasksSchema.optional(),
  train: trainSchema,
  checkpoint: checkpointSchema.prefault({}),
  resources: resourcesOverrideSchema.optional(),
  retry: retryOverrideSchema.optional(),
  heartbeat_timeout: duration().optional(),
  start_to_close_timeout: duration().optional(),
  gates: z.array(gateSchema).default([]),
  packing: packingSchema.optional(),
  rollout: rolloutSchema.optional(),
  sampling: samplingSchema.optional(),
  algorithm: algorithmSchema.optional(),
  rft: rftSchema.optional(),
  job: jobSchema.optional(),
});

const scheduleSchema = z.strictObject({
  cron: z
    .string({ error: 'expected a cron expression' })
    .regex(/^(\S+\s+){4}\S+$/, { error: 'expected a 5-field cron expression such as "0 3 * * *"' }),
  overlap: z
    .enum(['skip', 'buffer-one', 'buffer-all', 'cancel-other', 'terminate-other', 'allow-all'], {
      error: 'expected skip | buffer-one | buffer-all | cancel-other | terminate-other | allow-all',
    })
    .default('skip'),
  pause_on_failure: z.boolean().default(true),
  timezone: text().optional(),
});

// ---- which blocks each kind takes ------------------------------------------------------------------------

type Block = 'data' | 'tasks' | 'packing' | 'rollout' | 'sampling' | 'algorithm' | 'rft';
export const BLOCKS_BY_KIND: Record<(typeof KINDS)[number], { required: Block[]; allowed: Block[] }> = {
  midtrain: { required: ['data'], allowed: ['data'] },
  sft: { required: ['data'], allowed: ['data', 'packing'] },
  rft: { required: ['tasks', 'rollout'], allowed: ['tasks', 'rollout', 'sampling', 'packing', 'rft'] },
  rl: { required: ['tasks', 'rollout', 'algorithm'], allowed: ['tasks', 'rollout', 'sampling', 'packing', 'algorithm'] },
};

// ---- the whole config, and the one place defaults are merged ---------------------------------------------

const rawConfigSchema = z.strictObject({
  api_version: z.literal('trainflow/v1', { error: 'expected "trainflow/v1"' }),
  metadata: z.strictObject({
    name: name('pipeline'),
    description: z.string().optional(),
    labels: z.record(z.string(), z.string({ error: 'expected a string label value' })).default({}),
  }),
  storage: storageSchema,
  temporal: temporalSchema.prefault({}),
  defaults: defaultsSchema.prefault({}),
  pools: z.record(name('pool'), poolSchema).default({ default: { launcher: 'local', gpus_per_node: 0, max_nodes: 1 } }),
  model: modelSchema,
  stages: z.array(stageSchema).min(1, { error: 'expected at least one stage' }),
  schedule: scheduleSchema.optional(),
});

type RawConfig = z.output<typeof rawConfigSchema>;

function checkConsistency(config: RawConfig, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string, input?: unknown) =>
    ctx.addIssue({ code: 'custom', path, message, input });

  const seen = new Map<string, number>();
  config.stages.forEach((stage, i) => {
    const first = seen.get(stage.name);
    if (first !== undefined) issue(['stages', i, 'name'], `duplicate stage name (also stages[${first}])`, stage.name);
    else seen.set(stage.name, i);

    const blocks = BLOCKS_BY_KIND[stage.kind];
    for (const block of blocks.required) {
      if (stage[block] === undefined) issue(['stages', i], `${stage.kind} stages need the ${block} block`);
    }
    for (const block of ['data', 'tasks', 'packing', 'rollout', 'sampling', 'algorithm', 'rft'] as const) {
      if (stage[block] !== undefined && !blocks.allowed.includes(block)) {
        const kinds = KINDS.filter((k) => BLOCKS_BY_KIND[k].allowed.includes(block));
        issue(['stages', i, block], `${block} applies only to ${kinds.join(', ')} stages, not ${stage.kind}`);
      }
    }

    const known = METRICS_BY_KIND[stage.kind];
    stage.gates.forEach((gate, g) => {
      if (!known.includes(gate.metric)) {
        issue(
          ['stages', i, 'gates', g, 'metric'],
          `unknown metric for a ${stage.kind} stage (known: ${known.join(', ')})`,
          gate.metric,
        );
      }
    });

    if (stage.train.micro_batch_size !== undefined && stage.train.batch_size % stage.train.micro_batch_size !== 0) {
      issue(['stages', i, 'train', 'micro_batch_size'], 'must divide train.batch_size', stage.train.micro_batch_size);
    }

    const poolName = stage.resources?.pool ?? config.defaults.resources.pool;
    const pool = config.pools[poolName];
    const where = stage.resources?.pool !== undefined ? ['stages', i, 'resources', 'pool'] : ['defaults', 'resources', 'pool'];
    if (!pool) {
      issue(where, `unknown pool (defined: ${Object.keys(config.pools).join(', ') || 'none'})`, poolName);
      return;
    }
    const res = { ...config.defaults.resources, ...stage.resources };
    const resPath = (field: string) =>
      stage.resources && field in stage.resources ? ['stages', i, 'resources', field] : ['defaults', 'resources', field];
    if (pool.launcher === 'local' && res.nodes > 1) {
      issue(resPath('nodes'), `pool ${poolName} uses the local launcher, which runs on one node`, res.nodes);
    }
    if (res.nodes > pool.max_nodes) {
      issue(resPath('nodes'), `pool ${poolName} has at most ${pool.max_nodes} node(s)`, res.nodes);
    }
    if (pool.launcher !== 'local' && res.gpus_per_node > pool.gpus_per_node) {
      issue(resPath('gpus_per_node'), `pool ${poolName} has ${pool.gpus_per_node} GPU(s) per node`, res.gpus_per_node);
    }
    if (res.gpu_type && pool.gpu_type && res.gpu_type !== pool.gpu_type) {
      issue(resPath('gpu_type'), `pool ${poolName} has ${pool.gpu_type} GPUs`, res.gpu_type);
    }
  });

  for (const [poolName, pool] of Object.entries(config.pools)) {
    if (pool.slurm && pool.launcher !== 'slurm') issue(['pools', poolName, 'slurm'], 'slurm settings on a pool whose launcher is not slurm');
    if (pool.kubernetes && pool.launcher !== 'kubernetes') {
      issue(['pools', poolName, 'kubernetes'], 'kubernetes settings on a pool whose launcher is not kubernetes');
    }
  }
}

/** Fills every per-stage setting from `defaults`, so a resolved stage is complete on its own. */
function resolve(config: RawConfig) {
  const { defaults } = config;
  const pools = Object.fromEntries(
    Object.entries(config.pools).map(([poolName, pool]) => [
      poolName,
      { ...pool, task_queue: pool.task_queue ?? `trainflow-pool-${poolName}` },
    ]),
  );
  const stages = config.stages.map((stage) => ({
    ...stage,
    resources: { ...defaults.resources, ...stage.resources },
    retry: { ...defaults.retry, ...stage.retry },
    heartbeat_timeout: stage.heartbeat_timeout ?? defaults.heartbeat_timeout,
    start_to_close_timeout: stage.start_to_close_timeout ?? defaults.start_to_close_timeout,
    train: {
      ...stage.train,
      micro_batch_size: stage.train.micro_batch_size ?? stage.train.batch_size,
      min_lr: stage.train.min_lr ?? stage.train.lr * 0.1,
    },
    packing: stage.packing ?? (stage.kind === 'midtrain' ? undefined : { mode: 'trie' as const, max_tokens: 4096 }),
    sampling: stage.sampling ?? (stage.kind === 'rl' || stage.kind === 'rft' ? samplingSchema.parse({}) : undefined),
    rft: stage.rft ?? (stage.kind === 'rft' ? rftSchema.parse({}) : undefined),
  }));
  return { ...config, pools, stages };
}

export const pipelineConfigSchema = rawConfigSchema.superRefine(checkConsistency).transform(resolve);

export type PipelineConfig = z.output<typeof pipelineConfigSchema>;
export type StageConfig = PipelineConfig['stages'][number];
export type StageKind = StageConfig['kind'];
export type RetryConfig = StageConfig['retry'];
export type ResourcesConfig = StageConfig['resources'];
export type PoolConfig = PipelineConfig['pools'][string];
export type ScheduleConfig = NonNullable<PipelineConfig['schedule']>;
export type ModelInit = PipelineConfig['model']['init'];
