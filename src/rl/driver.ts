// The rollout side of an RL or RFT stage, run by the stage's Python job as a child process:
//
//   node -e "require('tsx/cjs'); require('./src/rl/driver.ts').main()" DRIVER.json
//
// It holds the data plane in one process: the token-recording proxy in front of the inference server(s),
// the trajectory ledger, the difficulty-aware sampler (src/sampling) and the rollout manager
// (src/dataplane/rollout.ts), and it runs the reference agent as long-lived `--worker` subprocesses. The
// Python trainer is the rollout manager's TrainerPort: each batch goes to the parent as one stdout line
// `TRAINFLOW_RL {"type":"batch",...}` and the parent answers on stdin `{"type":"trained","checkpoint":DIR,
// "version":N}` once the step's weights are written; the manager then pauses the servers, reloads, resumes.
//
// The batch line carries the sampler's statistics, so the trainer stores them in the same checkpoint commit
// as the weights and the ledger cursor: a retry restarts this driver with all three from that checkpoint.
//
// mode "collect" (RFT): run `groups` groups once, no training, then print one `collected` line with them.
// mode "eval" (an eval stage): the same, each task once in file order, the sampler's statistics untouched.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import readline from 'node:readline';
import path from 'node:path';
import {
  Ledger,
  listSegments,
  restoreFromS3,
  shippedThrough,
  type LedgerShipping,
} from '../dataplane/ledger';
import { TrajectoryProxy } from '../dataplane/proxy';
import { RolloutManager, type Batch, type GroupRecord, type Task } from '../dataplane/rollout';
import type { Trajectory } from '../dataplane/sessions';
import { createSampler, StatsStore, StatsTable, TaskDrawer, type SamplingConfig } from '../sampling';
import { parseS3Uri, s3Client } from '../storage/s3';

export interface DriverSpec {
  mode: 'rl' | 'collect' | 'eval';
  upstreams: string[];
  upstream_admin_token?: string;
  ledger_dir: string;
  /**
   * s3://bucket/prefix the ledger ships to (segments, and the open segment's tail every few seconds and at
   * shutdown), under one sub-folder per ledger folder: PREFIX/<ledger generation>/segments/. A ledger the
   * stage starts afresh (a new machine) gets a new generation, so it never overwrites an earlier one's copy.
   */
  ledger_uri?: string | null;
  /**
   * The generation the trainer's checkpoint cursor refers to (its checkpoint records it). When the ledger
   * folder is empty (a retry on a new machine) and `cursor` >= 0, the ledger is restored from
   * PREFIX/<ledger_generation>/segments/ and continues in that generation (see prepareLedger).
   */
  ledger_generation?: string | null;
  /** rl mode: drop agent sessions idle this long (stage rollout.session_idle_timeout; default sessionIdleMs) */
  session_idle_timeout_s?: number | null;
  tasks_file: string;
  group_size: number;
  batch_groups: number;
  concurrency: number;
  max_staleness: number;
  initial_version: number;
  cursor: number;
  steps: number;
  groups: number;
  sampling: Partial<SamplingConfig>;
  stats_uri: string;
  /** statistics restored from the trainer's checkpoint: they win over stats_uri */
  stats_file?: string;
  seed: number;
  storage?: { endpoint?: string; region?: string; force_path_style?: boolean };
  agent: {
    python: string;
    cwd: string;
    workers: number;
    max_turns: number;
    max_tokens: number;
    temperature: number;
    top_p: number;
    timeout_s: number;
  };
}

interface Episode {
  id: string;
  reward?: number;
  passed?: boolean;
  turns?: number;
  tool_calls?: number;
  parallel_calls?: number;
  stop?: string;
  error?: string | null;
}

/** One protocol line to the parent; resolves once written (a large line must not be cut by process.exit). */
function emit(obj: unknown): Promise<void> {
  return new Promise((resolve) =>
    process.stdout.write(`TRAINFLOW_RL ${JSON.stringify(obj)}\n`, () => resolve()),
  );
}

/** The reference agent as `--worker` subprocesses: one JSON request per stdin line, one episode line back. */
class AgentPool {
  private readonly workers: ChildProcess[] = [];
  private readonly waiting = new Map<string, (e: Episode) => void>();
  private seq = 0;

  constructor(a: DriverSpec['agent'], perWorker: number) {
    for (let i = 0; i < a.workers; i++) {
      const w = spawn(
        a.python,
        [
          '-m',
          'trainflow_trainer.agent',
          '--worker',
          '--concurrency',
          String(perWorker),
          '--max-turns',
          String(a.max_turns),
          '--max-tokens',
          String(a.max_tokens),
          '--temperature',
          String(a.temperature),
          '--top-p',
          String(a.top_p),
          '--timeout',
          String(a.timeout_s),
        ],
        { cwd: a.cwd, stdio: ['pipe', 'pipe', 'inherit'] },
      );
      w.on('exit', (code, signal) => {
        if (!this.closing) fatal(`agent worker ${i} exited (code ${code}, signal ${signal})`);
      });
      readline.createInterface({ input: w.stdout }).on('line', (line) => {
        if (!line.startsWith('TRAINFLOW_EPISODE ')) return;
        const ep = JSON.parse(line.slice('TRAINFLOW_EPISODE '.length)) as Episode;
        const done = this.waiting.get(ep.id);
        this.waiting.delete(ep.id);
        done?.(ep);
      });
      this.workers.push(w);
    }
  }

  closing = false;

  run(baseUrl: string, apiKey: string, task: Task): Promise<Episode> {
    const id = `r${this.seq++}`;
    const w = this.workers[this.seq % this.workers.length];
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      w.stdin!.write(`${JSON.stringify({ id, base_url: baseUrl, api_key: apiKey, task })}\n`);
    });
  }

  close(): void {
    this.closing = true;
    for (const w of this.workers) {
      w.stdin?.end();
      w.kill('SIGTERM');
    }
  }
}

let cleanup: (() => void) | null = null;

function fatal(msg: string): never {
  process.stderr.write(`trainflow rl driver: ${msg}\n`);
  cleanup?.();
  process.exit(1);
}

/** Per-step rollout metrics: every episode finished since the last batch (filtered groups included). */
class EpisodeStats {
  rewards: number[] = [];
  passed = 0;
  turns = 0;
  toolCalls = 0;
  parallelCalls = 0;
  errors = 0;
  groups = 0;
  filtered = 0;

  add(e: Episode): void {
    this.rewards.push(e.reward ?? 0);
    this.passed += e.passed ? 1 : 0;
    this.turns += e.turns ?? 0;
    this.toolCalls += e.tool_calls ?? 0;
    this.parallelCalls += e.parallel_calls ?? 0;
    this.errors += e.error ? 1 : 0;
  }

  take(): Record<string, number> {
    const n = this.rewards.length;
    const out = {
      episodes: n,
      reward_mean: n ? this.rewards.reduce((a, r) => a + r, 0) / n : 0,
      pass_rate: n ? this.passed / n : 0,
      turns_mean: n ? this.turns / n : 0,
      parallel_call_share: this.toolCalls ? this.parallelCalls / this.toolCalls : 0,
      agent_errors: this.errors,
      groups: this.groups,
      no_signal_fraction: this.groups ? this.filtered / this.groups : 0,
    };
    Object.assign(this, new EpisodeStats());
    return out;
  }
}

export async function main(argv = process.argv.slice(1)): Promise<void> {
  const specFile = argv.find((a) => a.endsWith('.json'));
  if (!specFile) fatal('usage: driver.ts DRIVER.json');
  const spec = JSON.parse(fs.readFileSync(specFile, 'utf8')) as DriverSpec;
  const tasks = fs
    .readFileSync(spec.tasks_file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Task);

  const store = new StatsStore(spec.storage ?? {});
  const table = spec.stats_file
    ? StatsTable.fromJSON(JSON.parse(fs.readFileSync(spec.stats_file, 'utf8')), spec.stats_file)
    : await store.loadOrCreate(spec.stats_uri, spec.seed);
  const drawer = new TaskDrawer(
    tasks,
    createSampler(
      tasks.map((t) => t.id),
      spec.sampling,
      table,
    ),
    spec.mode === 'collect' ? 1 : spec.batch_groups,
  );
  const stats = new EpisodeStats();
  // The sampler the rollout manager sees: the drawer, with its decisions counted for no_signal_fraction.
  // A policy that solves nothing (or everything) makes every group all-equal; after `patience` filtered
  // groups in a row the next one trains anyway (zero advantage: the step changes nothing but the clock), so
  // the stage advances and shows no_signal_fraction near 1 instead of waiting forever.
  const patience = Math.max(8, 4 * spec.batch_groups);
  let filteredInARow = 0;
  let evalNext = 0;
  const sampler = {
    next: () => (spec.mode === 'eval' ? tasks[evalNext++ % tasks.length] : drawer.next()),
    observe: (taskId: string, rewards: readonly number[]) => {
      if (spec.mode === 'eval') return { keep: true };
      const d = drawer.observe(taskId, rewards);
      stats.groups++;
      if (!d.keep) stats.filtered++;
      if (spec.mode === 'collect') return { keep: true };
      filteredInARow = d.keep ? 0 : filteredInARow + 1;
      if (!d.keep && filteredInARow > patience) return { keep: true };
      return d;
    },
    step: () => drawer.step(),
  };

  const adminToken = `tfa_${process.pid}_${Date.now()}`;
  const idleMs = sessionIdleMs(spec);
  const origin = await prepareLedger(spec);
  process.stderr.write(`trainflow rl driver: ledger ${origin.from}: ${origin.note}\n`);
  const ledger = new Ledger(spec.ledger_dir, { ship: ledgerShipping(spec) });
  const proxy = new TrajectoryProxy({
    upstreams: spec.upstreams,
    adminToken,
    upstreamAdminToken: spec.upstream_admin_token,
    drift: 'fix',
    sessionIdleMs: idleMs,
    onTrajectory: (t) => {
      ledger.append(t.trajectory_id, { kind: 'trajectory', ...t });
      return Promise.resolve();
    },
  });
  const port = await proxy.listen(0, '127.0.0.1');
  const proxyUrl = `http://127.0.0.1:${port}`;
  const perWorker = Math.max(1, Math.ceil(spec.concurrency / spec.agent.workers));
  const agents = new AgentPool(spec.agent, perWorker);
  cleanup = () => {
    agents.close();
    ledger.close();
  };
  const stop = (): void => {
    cleanup?.();
    // The open segment's tail goes to S3 before exiting (the ledger still reads its closed files).
    void Promise.allSettled([ledger.shutdown(), proxy.close()]).finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  void emit({
    type: 'ready',
    proxy: proxyUrl,
    ledger_size: ledger.size,
    ledger_from: origin.from,
    ledger_note: origin.note,
    cursor: origin.cursor,
  });

  const agent = async (endpoint: { baseUrl: string; apiKey: string }, task: Task): Promise<number> => {
    const ep = await agents.run(endpoint.baseUrl, endpoint.apiKey, task);
    stats.add(ep);
    return ep.reward ?? 0;
  };

  // The parent's answers, one JSON line each.
  const replies: ((msg: { type: string; checkpoint?: string; version?: number }) => void)[] = [];
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
    const msg = JSON.parse(line) as { type: string };
    if (msg.type === 'stop') return stop();
    replies.shift()?.(msg);
  });
  process.stdin.on('end', stop); // the parent is gone: no orphans

  if (spec.mode === 'collect' || spec.mode === 'eval') {
    const groups = await collect(spec, proxy, proxyUrl, ledger, sampler, agent);
    await ledger.syncShipped(); // what the trainer gets is in S3 first
    if (spec.mode === 'collect') await store.save(spec.stats_uri, table);
    await emit({ type: 'collected', groups, sampler_stats: table.toJSON(), metrics: stats.take() });
  } else {
    const manager = new RolloutManager({
      proxy,
      proxyUrl,
      ledger,
      sampler,
      agent,
      groupSize: spec.group_size,
      batchGroups: spec.batch_groups,
      concurrency: spec.concurrency,
      maxStaleness: spec.max_staleness,
      initialVersion: spec.initial_version,
      cursor: origin.cursor,
      trainer: {
        train: async (batch: Batch) => {
          await store.save(spec.stats_uri, table);
          const answer = new Promise<{ checkpoint?: string; version?: number }>((r) => replies.push(r));
          void emit({
            type: 'batch',
            groups: batch.groups,
            cursor: batch.cursor,
            trainer_version: batch.trainerVersion,
            dropped: batch.dropped,
            dropped_tokens: batch.droppedTokens,
            sampler_stats: table.toJSON(),
            metrics: stats.take(),
          });
          const a = await answer;
          if (typeof a.checkpoint !== 'string' || typeof a.version !== 'number')
            fatal(`expected {"type":"trained","checkpoint":...,"version":...}, got ${JSON.stringify(a)}`);
          return { checkpoint: a.checkpoint, version: a.version };
        },
      },
    });
    await manager.run(spec.steps);
    await store.save(spec.stats_uri, table);
    await emit({ type: 'done' });
  }
  cleanup();
  await ledger.shutdown();
  await proxy.close();
  process.exit(0);
}

/** Where the ledger ships (see DriverSpec.ledger_uri); undefined when the stage gave no S3 location. */
export function ledgerShipping(spec: DriverSpec): LedgerShipping | undefined {
  if (!spec.ledger_uri) return undefined;
  if (!spec.ledger_uri.startsWith('s3://')) {
    process.stderr.write(`trainflow rl driver: ledger_uri ${spec.ledger_uri} is not s3://: not shipped\n`);
    return undefined;
  }
  const loc = parseS3Uri(spec.ledger_uri);
  const endpoint = spec.storage?.endpoint ?? process.env.TRAINFLOW_S3_ENDPOINT;
  return {
    client: s3Client({
      endpoint,
      region: spec.storage?.region,
      force_path_style: spec.storage?.force_path_style ?? Boolean(endpoint),
    }),
    bucket: loc.bucket,
    prefix: `${loc.key}/${ledgerGeneration(spec.ledger_dir)}`,
  };
}

/**
 * How long an idle agent session lives (ms; 0: forever). Only the RL rollout manager copes with an expired
 * session (it drops the group); RFT's collect waits. Default: the longer of 5 minutes and 3 agent timeouts.
 */
export function sessionIdleMs(spec: DriverSpec): number {
  if (spec.mode !== 'rl') return 0;
  const s = spec.session_idle_timeout_s ?? Math.max(300, 3 * spec.agent.timeout_s);
  if (typeof s !== 'number' || !Number.isFinite(s) || s <= 0)
    throw new Error(
      `session_idle_timeout_s: expected a positive number of seconds (stage rollout.session_idle_timeout), got ${JSON.stringify(s)}`,
    );
  return s * 1000;
}

export interface LedgerOrigin {
  /** local: the folder's own ledger; s3: restored from the checkpoint's generation; new: a fresh ledger */
  from: 'local' | 's3' | 'new';
  /** the cursor to read after (-1 for a new ledger: what the checkpoint trained stays trained) */
  cursor: number;
  note: string;
}

/**
 * Makes the ledger folder the one the trainer's cursor refers to. A folder that holds segments is used as it
 * is (the parent checked that it reaches the cursor). An empty folder with a cursor >= 0 is a retry on a new
 * machine: the checkpoint's generation is restored from S3, and the trainer's cursor applies to it, since a
 * record is offered (and so acknowledged) only once it is in S3: what comes after the cursor was produced by
 * the lost machine and is trained once, what is at or before it never again. When S3 holds nothing that
 * reaches the cursor (no generation recorded, no shipping, an unreadable or short copy), the ledger starts
 * anew under a new generation with cursor -1, as before shipping existed.
 */
export async function prepareLedger(spec: DriverSpec): Promise<LedgerOrigin> {
  const dir = spec.ledger_dir;
  if (listSegments(dir).length > 0)
    return { from: 'local', cursor: spec.cursor, note: `${dir} (cursor ${spec.cursor})` };
  if (spec.cursor < 0) return { from: 'new', cursor: -1, note: `${dir} is empty and nothing was consumed` };
  const fresh = (why: string): LedgerOrigin => {
    fs.rmSync(dir, { recursive: true, force: true }); // a new generation, never overwriting the old copy
    return {
      from: 'new',
      cursor: -1,
      note: `${why}: a new ledger (the checkpoint's cursor ${spec.cursor} is void)`,
    };
  };
  if (!spec.ledger_uri?.startsWith('s3://') || !spec.ledger_generation)
    return fresh(`${dir} is empty and the checkpoint names no ledger shipped to S3`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'generation'), `${spec.ledger_generation}\n`);
  const ship = ledgerShipping(spec)!;
  const where = `s3://${ship.bucket}/${ship.prefix}`;
  try {
    const segments = await restoreFromS3(dir, ship);
    const through = segments > 0 ? shippedThrough(dir) : -1;
    if (through < spec.cursor)
      return fresh(`${where} holds records up to seq ${through}, short of the checkpoint's cursor`);
    return {
      from: 's3',
      cursor: spec.cursor,
      note: `${segments} segment(s) from ${where}, seqs 0..${through}; reading after cursor ${spec.cursor}`,
    };
  } catch (err) {
    return fresh(`${where} could not be restored (${(err as Error).message})`);
  } finally {
    ship.client.destroy();
  }
}

/** The ledger folder's generation: made when the folder is new, kept with it (DIR/generation). */
function ledgerGeneration(dir: string): string {
  const file = path.join(dir, 'generation');
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  fs.mkdirSync(dir, { recursive: true });
  const gen = `g-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
  fs.writeFileSync(file, `${gen}\n`);
  return gen;
}

/** RFT: run `spec.groups` groups (tasks drawn by the sampler) with bounded concurrency; no training. */
async function collect(
  spec: DriverSpec,
  proxy: TrajectoryProxy,
  proxyUrl: string,
  ledger: Ledger,
  sampler: { next(): Task; observe(id: string, r: readonly number[]): { keep: boolean } },
  agent: (e: { baseUrl: string; apiKey: string }, t: Task) => Promise<number>,
): Promise<GroupRecord[]> {
  const out: GroupRecord[] = [];
  const groupsAtOnce = Math.max(1, Math.floor(spec.concurrency / spec.group_size));
  let next = 0;
  const runOne = async (g: number): Promise<void> => {
    const task = sampler.next();
    const groupId = `rft${g}-${task.id}`;
    const trajectories: Trajectory[] = await Promise.all(
      Array.from({ length: spec.group_size }, async () => {
        const { session, key } = proxy.sessions.issue(task.id, groupId, {
          launch_version: spec.initial_version,
        });
        const reward = await agent({ baseUrl: `${proxyUrl}/v1`, apiKey: key }, task);
        return proxy.finish(session.id, reward);
      }),
    );
    sampler.observe(
      task.id,
      trajectories.map((t) => t.reward),
    );
    const rec: GroupRecord = {
      kind: 'group',
      group_id: groupId,
      task_id: task.id,
      launch_version: spec.initial_version,
      trajectories,
    };
    ledger.append(groupId, rec);
    out.push(rec);
  };
  await Promise.all(
    Array.from({ length: groupsAtOnce }, async () => {
      while (next < spec.groups) await runOne(next++);
    }),
  );
  return out;
}
