// The RL driver's protocol (trainer ⇄ `trainflow rl-driver`, src/rl/driver.ts), and the agent worker's
// (driver ⇄ `python -m trainflow_trainer.agent --worker`):
//   - the trainer writes a DriverSpec (JSON file) and starts the driver on it;
//   - the driver prints one `TRAINFLOW_RL <json>` line per DriverMessage (ready, then batch…/collected, done);
//   - the trainer answers on the driver's stdin, one TrainerMessage per line (trained after each batch; stop);
//   - the driver sends the agent worker one AgentRequest per stdin line, the worker answers one
//     `TRAINFLOW_EPISODE <json>` line per Episode.
// The trajectories inside a batch are the data plane's records (tokens.ts).
import { z } from 'zod';
import { resolvedStageSchema } from '../config/schema';
import type { StatsFile } from '../sampling/stats';
import { storageEndpointSchema } from './job';
import { groupRecordSchema } from './tokens';

/** Prefix of the driver's protocol lines on its stdout. */
export const RL_LINE_PREFIX = 'TRAINFLOW_RL ';
/** Prefix of the agent worker's episode lines on its stdout. */
export const EPISODE_LINE_PREFIX = 'TRAINFLOW_EPISODE ';

const count = () => z.number().int().nonnegative();

export const driverAgentSchema = z
  .strictObject({
    python: z.string().min(1).describe('The Python interpreter that runs the agent workers.'),
    cwd: z.string().min(1).describe('Their working directory (the trainer folder).'),
    workers: z.number().int().positive().describe('Agent worker processes.'),
    max_turns: z.number().int().positive(),
    max_tokens: z.number().int().positive(),
    temperature: z.number().nonnegative(),
    top_p: z
      .number()
      .positive()
      .max(1)
      .describe("Nucleus sampling threshold (the trainer's log-probs use it too)."),
    timeout_s: z.number().positive().describe('Seconds per sandboxed run.'),
    byo: z
      .strictObject({
        command: z.array(z.string().min(1)).min(1),
        env: z.record(z.string(), z.string()),
        timeout_s: z.number().positive(),
      })
      .optional()
      .describe(
        'Bring your own agent (rollout.agent): run this program per episode instead of the reference agent.',
      ),
  })
  .describe('How the driver runs the reference agent.');

export const driverEnginesSchema = z
  .strictObject({
    servers: z
      .number()
      .int()
      .positive()
      .describe('Engines the driver starts (stage rollout.inference.servers).'),
    colocated: count().describe(
      'Of those, engines on train-tagged resources: they serve while the trainer waits and are taken back (stopped) while it trains; how many each step is the automatic split (src/dataplane/scheduler.ts autoSplit).',
    ),
    argv: z
      .array(z.string().min(1))
      .min(1)
      .describe('One engine: its command, with {port} {checkpoint} {version} {threads} {index} filled in.'),
    env: z.record(z.string(), z.string()).optional().describe('Extra environment of every engine.'),
    cwd: z.string().min(1),
    health_path: z.string().min(1).describe('GET path that answers 200 once an engine serves.'),
    sleep: z
      .enum(['signal', 'vllm'])
      .default('signal')
      .describe(
        "How a taken-back engine sleeps: `signal` SIGSTOPs its process group (CPU), `vllm` calls vLLM's /sleep and /wake_up (GPU, started with sleep mode).",
      ),
    ready_timeout_s: z.number().positive().describe('How long an engine may take to become ready.'),
    checkpoint: z.string().min(1).describe('The weights the engines start on (version: initial_version).'),
    cpus: z
      .array(count())
      .nullable()
      .describe('CPU ids dealt out among the engines (null: not pinned; each gets one thread).'),
    gpus: z
      .array(z.string().min(1))
      .nullable()
      .describe('Accelerator ids dealt out among the engines (CUDA_VISIBLE_DEVICES; null: none).'),
  })
  .describe(
    'The fleet of inference engines the driver starts, restarts and schedules (src/dataplane/fleet.ts).',
  );

export const driverSpecSchema = z
  .strictObject({
    mode: z
      .enum(['rl', 'collect', 'eval'])
      .describe(
        'rl: train in steps; collect (RFT): run `groups` groups once; eval: each task once in file order, the sampler untouched.',
      ),
    upstreams: z
      .array(z.string().min(1))
      .default([])
      .describe('Inference server base URLs already running (none when `engines` starts them).'),
    engines: driverEnginesSchema
      .optional()
      .describe('Engines the driver starts itself (a fleet); absent: it uses `upstreams`.'),
    upstream_admin_token: z.string().optional().describe("The inference servers' admin token."),
    upstream_engine: z
      .enum(['local', 'vllm'])
      .default('local')
      .describe(
        "What the upstreams are: `local` (the trainer's CPU server) or `vllm` (src/dataplane/engines.ts).",
      ),
    ledger_dir: z.string().min(1).describe('The local ledger folder.'),
    ledger_uri: z
      .string()
      .nullable()
      .describe(
        's3://bucket/prefix the ledger ships to, under PREFIX/<ledger generation>/ (null or not s3://: not shipped).',
      ),
    ledger_generation: z
      .string()
      .nullable()
      .describe(
        "The generation the checkpoint's cursor refers to; an empty ledger folder is restored from it.",
      ),
    session_idle_timeout_s: z
      .number()
      .positive()
      .nullable()
      .describe('rl: drop agent sessions idle this long; null: max(300, 3 agent timeouts).'),
    tasks_file: z.string().min(1).describe('The tasks, one JSON object a line.'),
    group_size: z.number().int().positive(),
    batch_groups: z.number().int().positive(),
    concurrency: z.number().int().positive(),
    max_staleness: count(),
    initial_version: count().describe('The policy version the servers start with.'),
    cursor: z.number().int().min(-1).describe("The checkpoint's ledger cursor (-1: nothing consumed)."),
    steps: count().describe('rl: training steps to run.'),
    groups: count().describe('collect: groups to run.'),
    sampling: resolvedStageSchema.shape.sampling
      .unwrap()
      .partial()
      .describe(
        "The stage's sampling block (resolved by validate; what it lacks, src/sampling's defaults fill).",
      ),
    stats_uri: z.string().min(1).describe("Where the sampler's statistics persist."),
    stats_file: z
      .string()
      .optional()
      .describe("Statistics restored from the trainer's checkpoint: they win over stats_uri."),
    seed: z.number().int(),
    storage: storageEndpointSchema,
    agent: driverAgentSchema,
  })
  .describe('The RL driver spec: what the trainer hands `trainflow rl-driver` (one JSON file).');
export type DriverSpec = z.output<typeof driverSpecSchema>;

const metricsSchema = z.record(z.string(), z.number()).describe('Rollout metrics since the last message.');
// Opaque to the trainer, which stores it in its checkpoint and hands it back as stats_file (StatsTable.fromJSON
// checks it on the way in), so the contract carries it as any JSON object.
const samplerStatsSchema = z
  .custom<StatsFile>((v) => typeof v === 'object' && v !== null && !Array.isArray(v))
  .describe("The sampler's statistics table (src/sampling/stats.ts), stored with the checkpoint.");

export const driverReadySchema = z
  .strictObject({
    type: z.literal('ready'),
    proxy: z.string().describe("The proxy's base URL."),
    ledger_size: count(),
    ledger_from: z
      .enum(['local', 's3', 'new'])
      .describe('Where the ledger came from (src/dataplane/assemble.ts).'),
    ledger_note: z.string(),
    cursor: z.number().int().min(-1).describe('The cursor the driver reads after (-1: a new ledger).'),
  })
  .describe('The driver is listening and its ledger is ready.');

export const driverBatchSchema = z
  .strictObject({
    type: z.literal('batch'),
    groups: z.array(groupRecordSchema),
    cursor: z.number().int().describe('Ledger seq of the batch’s last group: the checkpoint stores it.'),
    trainer_version: count().describe('The policy version these groups are trained into.'),
    dropped: z.array(z.string()).describe('Groups dropped for staleness or expired sessions.'),
    dropped_tokens: count().describe('Generated tokens of the groups dropped as staler than max_staleness.'),
    sampler_stats: samplerStatsSchema,
    metrics: metricsSchema,
  })
  .describe('rl: one training batch; the trainer answers with trained.');

export const driverCollectedSchema = z
  .strictObject({
    type: z.literal('collected'),
    groups: z.array(groupRecordSchema),
    sampler_stats: samplerStatsSchema,
    metrics: metricsSchema,
  })
  .describe('collect: every group, once.');

export const driverDoneSchema = z.strictObject({ type: z.literal('done') }).describe('rl: every step ran.');

export const driverMessageSchema = z
  .discriminatedUnion('type', [driverReadySchema, driverBatchSchema, driverCollectedSchema, driverDoneSchema])
  .describe('A `TRAINFLOW_RL` line of the driver.');
export type DriverMessage = z.output<typeof driverMessageSchema>;

export const trainedSchema = z
  .strictObject({
    type: z.literal('trained'),
    checkpoint: z.string().min(1).describe('The weights folder to serve next.'),
    version: count().describe('Its policy version.'),
  })
  .describe("The batch's step is trained and its weights written.");

export const stopSchema = z
  .strictObject({ type: z.literal('stop') })
  .describe('Stop now (the job is stopping).');

export const trainerMessageSchema = z
  .discriminatedUnion('type', [trainedSchema, stopSchema])
  .describe("A line on the driver's stdin.");
export type TrainerMessage = z.output<typeof trainerMessageSchema>;

export const agentRequestSchema = z
  .strictObject({
    id: z.string().min(1),
    base_url: z.string().min(1).describe("The proxy's OpenAI endpoint."),
    api_key: z.string().describe("The session's key."),
    task: z.record(z.string(), z.unknown()).describe('The task object (a tasks-file line).'),
  })
  .describe('One episode for an agent worker (a stdin line).');
export type AgentRequest = z.output<typeof agentRequestSchema>;

export const episodeSchema = z
  .strictObject({
    id: z.string().nullable().describe("The request's id (null: the request line was not JSON)."),
    task_id: z.string().optional(),
    messages: z
      .array(z.record(z.string(), z.unknown()))
      .optional()
      .describe('The conversation (--messages).'),
    reward: z.number().optional(),
    passed: z.boolean().optional(),
    verdict: z.string().optional(),
    tests: z
      .record(z.string(), z.string())
      .nullable()
      .optional()
      .describe(
        "The verifier's per-test outcomes (swe: test id → passed | failed | …); kept with the trajectory.",
      ),
    stop: z.string().optional().describe('answer | max_turns | error'),
    turns: count().optional().describe('Model turns.'),
    tool_calls: count().optional().describe('Tool calls executed.'),
    parallel_turns: count().optional().describe('Turns that asked for more than one tool call.'),
    parallel_calls: count().optional().describe('Tool calls made in such turns.'),
    max_concurrent_tools: count().optional(),
    duration_s: z.number().optional(),
    error: z.string().nullable().optional().describe('Why the episode or the request failed.'),
    completions: z
      .array(z.record(z.string(), z.unknown()))
      .optional()
      .describe('Per turn: finish_reason, usage.'),
    parallel_share: z.number().optional(),
  })
  .describe('A `TRAINFLOW_EPISODE` line: one finished episode, or {id, error} for a bad request.');
export type Episode = z.output<typeof episodeSchema>;
