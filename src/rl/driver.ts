// The rollout side of an RL or RFT stage, run by the stage's Python job as a child process:
//
//   node bin/trainflow.js rl-driver DRIVER.json      (src/cli/commands/rl-driver.ts)
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
import fs from 'node:fs';
import readline from 'node:readline';
import { z } from 'zod';
import {
  assembleDataPlane,
  ledgerShipping as placementShipping,
  prepareLedger as preparePlacement,
  type LedgerOrigin,
  type LedgerPlacement,
} from '../dataplane/assemble';
import { engineControl } from '../dataplane/engines';
import { Fleet, ProcessLauncher, shareOut } from '../dataplane/fleet';
import type { Ledger, LedgerShipping } from '../dataplane/ledger';
import type { TrajectoryProxy } from '../dataplane/proxy';
import {
  outcomeReward,
  outcomeTests,
  RolloutManager,
  type AgentOutcome,
  type Batch,
  type GroupRecord,
  type ResourceHooks,
  type Task,
} from '../dataplane/rollout';
import type { ResourceSpec } from '../dataplane/scheduler';
import type { Trajectory } from '../dataplane/sessions';
import { createSampler, StatsStore, StatsTable, TaskDrawer } from '../sampling';
import {
  driverSpecSchema,
  EPISODE_LINE_PREFIX,
  episodeSchema,
  RL_LINE_PREFIX,
  trainerMessageSchema,
  type AgentRequest,
  type DriverMessage,
  type DriverSpec,
  type Episode,
  type TrainerMessage,
} from '../contract/driver';

export type { DriverSpec } from '../contract/driver';

/** One protocol line to the parent; resolves once written (a large line must not be cut by process.exit). */
function emit(msg: DriverMessage): Promise<void> {
  return new Promise((resolve) =>
    process.stdout.write(`${RL_LINE_PREFIX}${JSON.stringify(msg)}\n`, () => resolve()),
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
          ...(a.byo ? ['--byo', JSON.stringify(a.byo)] : []),
        ],
        { cwd: a.cwd, stdio: ['pipe', 'pipe', 'inherit'] },
      );
      w.on('exit', (code, signal) => {
        if (!this.closing) fatal(`agent worker ${i} exited (code ${code}, signal ${signal})`);
      });
      readline.createInterface({ input: w.stdout }).on('line', (line) => {
        if (!line.startsWith(EPISODE_LINE_PREFIX)) return;
        const ep = parseLine(episodeSchema, line.slice(EPISODE_LINE_PREFIX.length), `agent worker ${i}`);
        if (ep.id === null) fatal(`agent worker ${i} could not read a request: ${ep.error}`);
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
      const request: AgentRequest = { id, base_url: baseUrl, api_key: apiKey, task };
      w.stdin!.write(`${JSON.stringify(request)}\n`);
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

/** One message of the protocol (src/contract/driver.ts), or a fatal error naming who sent what. */
function parseLine<T>(schema: z.ZodType<T>, text: string, from: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    fatal(`${from}: not JSON (${(err as Error).message}): ${text.slice(0, 200)}`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) fatal(`${from}: ${z.prettifyError(parsed.error).replaceAll('\n', '; ')}`);
  return parsed.data;
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

export async function main(specFile: string): Promise<void> {
  const spec = parseLine(driverSpecSchema, fs.readFileSync(specFile, 'utf8'), specFile);
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
  const fleet = spec.engines ? startFleet(spec) : null;
  const upstreams = fleet ? await fleet.start() : spec.upstreams;
  if (upstreams.length === 0) fatal('the driver spec gives neither `upstreams` nor `engines`');
  const placement = ledgerPlacement(spec);
  if (spec.ledger_uri && !placement.s3Uri)
    process.stderr.write(`trainflow rl driver: ledger_uri ${spec.ledger_uri} is not s3://: not shipped\n`);
  const { proxy, ledger, origin } = await assembleDataPlane(
    {
      upstreams,
      adminToken,
      upstreamAdminToken: spec.upstream_admin_token,
      engine: spec.upstream_engine,
      drift: 'fix',
      sessionIdleMs: idleMs,
      offerTrajectories: false,
    },
    placement,
  );
  process.stderr.write(`trainflow rl driver: ledger ${origin.from}: ${origin.note}\n`);
  if (fleet) {
    // A request that finds every engine off waits for the fleet to bring one back (restart, give-back).
    proxy.pool.waitForUpstreamMs = 120_000;
    fleet.attach(proxy.pool);
  }
  const port = await proxy.listen(0, '127.0.0.1');
  const proxyUrl = `http://127.0.0.1:${port}`;
  const perWorker = Math.max(1, Math.ceil(spec.concurrency / spec.agent.workers));
  const agents = new AgentPool(spec.agent, perWorker);
  cleanup = () => {
    agents.close();
    ledger.close();
    void fleet?.close(); // and should the driver exit first, the engines' parent-death signal stops them
  };
  const stop = (): void => {
    cleanup?.();
    // The open segment's tail goes to S3 before exiting (the ledger still reads its closed files).
    void Promise.allSettled([ledger.shutdown(), proxy.close(), fleet?.close()]).finally(() =>
      process.exit(0),
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  void emit({
    type: 'ready',
    proxy: proxyUrl,
    ledger_size: ledger.size,
    ledger_from: origin.from,
    ledger_note: origin.note,
    cursor: origin.cursor ?? -1,
  });

  const agent = async (endpoint: { baseUrl: string; apiKey: string }, task: Task): Promise<AgentOutcome> => {
    const ep = await agents.run(endpoint.baseUrl, endpoint.apiKey, task);
    stats.add(ep);
    return { reward: ep.reward ?? 0, tests: ep.tests };
  };

  // The parent's answers, one JSON line each.
  const replies: ((msg: Extract<TrainerMessage, { type: 'trained' }>) => void)[] = [];
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
    const msg = parseLine(trainerMessageSchema, line, 'the trainer');
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
    const tagged = fleet ? fleetResources(spec) : undefined;
    const engineStats = fleet ? new EngineStats(fleet, proxy) : null;
    const manager: RolloutManager = new RolloutManager({
      resources: tagged?.resources,
      hooks: tagged ? fleetHooks(fleet!, proxy) : undefined,
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
      cursor: origin.cursor ?? -1,
      trainer: {
        train: async (batch: Batch) => {
          await store.save(spec.stats_uri, table);
          const answer = new Promise<{ checkpoint: string; version: number }>((r) => replies.push(r));
          void emit({
            type: 'batch',
            groups: batch.groups,
            cursor: batch.cursor,
            trainer_version: batch.trainerVersion,
            dropped: batch.dropped,
            dropped_tokens: batch.droppedTokens,
            sampler_stats: table.toJSON(),
            metrics: { ...stats.take(), ...engineStats?.take(manager) },
          });
          const a = await answer;
          return { checkpoint: a.checkpoint, version: a.version };
        },
      },
    });
    engineStats?.watch(manager);
    await manager.run(spec.steps);
    await store.save(spec.stats_uri, table);
    await emit({ type: 'done' });
  }
  cleanup();
  await ledger.shutdown();
  await proxy.close();
  await fleet?.close();
  process.exit(0);
}

/** The fleet the spec's `engines` block describes: N engines on shares of the given CPUs and GPUs. */
function startFleet(spec: DriverSpec): Fleet {
  const e = spec.engines!;
  if (e.colocated > e.servers) fatal(`engines.colocated ${e.colocated} exceeds engines.servers ${e.servers}`);
  const cpus = e.cpus ?? [];
  return new Fleet({
    launcher: new ProcessLauncher({
      argv: e.argv,
      env: e.env,
      cwd: e.cwd,
      health_path: e.health_path,
      ready_timeout_s: e.ready_timeout_s,
      sleep: e.sleep,
      python: spec.agent.python,
    }),
    // every engine of the pool is of the spec's kind: the proxy's fan-out and the fleet use one control
    control: engineControl(spec.upstream_engine),
    shares: shareOut(e.servers, cpus, e.gpus ?? []),
    weights: { checkpoint: e.checkpoint, version: spec.initial_version },
    adminToken: spec.upstream_admin_token,
  });
}

/**
 * The tag scheduler's resources with a fleet: the trainer (tagged train) and one per engine, the last
 * `colocated` of them on train-tagged resources (train + rollout), the others rollout only.
 */
export function fleetResources(spec: DriverSpec): { resources: ResourceSpec[] } {
  const e = spec.engines!;
  const resources: ResourceSpec[] = [{ id: 'trainer', tags: ['train'] }];
  for (let i = 0; i < e.servers; i++)
    resources.push({
      id: `engine${i}`,
      tags: i >= e.servers - e.colocated ? ['train', 'rollout'] : ['rollout'],
    });
  return { resources };
}

const engineIndex = (id: string): number | null => (id.startsWith('engine') ? Number(id.slice(6)) : null);

function fleetHooks(fleet: Fleet, proxy: TrajectoryProxy): ResourceHooks {
  const indices = (ids: string[]): number[] => ids.map(engineIndex).filter((i): i is number => i !== null);
  return {
    take: (ids) => fleet.take(indices(ids)),
    give: (ids) => fleet.give(indices(ids)),
    weights: (checkpoint, version) => fleet.setWeights({ checkpoint, version }),
    load: (id) => {
      const i = engineIndex(id);
      return i === null ? 0 : proxy.pool.upstreams[i].sessions;
    },
  };
}

/**
 * Engine counts over time for the step metrics: engines serving while the trainer trained (after the
 * split took some back) and the most serving while it waited for the batch, plus restarts and failovers.
 */
class EngineStats {
  private maxWhileWaiting = 0;

  constructor(
    private readonly fleet: Fleet,
    private readonly proxy: TrajectoryProxy,
  ) {
    this.maxWhileWaiting = fleet.serving();
  }

  watch(manager: RolloutManager): void {
    this.fleet.onChange(() => {
      if (!manager.scheduler.training)
        this.maxWhileWaiting = Math.max(this.maxWhileWaiting, this.fleet.serving());
    });
  }

  take(manager: RolloutManager): Record<string, number> {
    const split = manager.splits[manager.splits.length - 1];
    const out = {
      engines: this.fleet.size,
      engines_serving_while_waiting: this.maxWhileWaiting,
      engines_serving_while_training: this.fleet.serving(),
      engines_taken_for_training: split ? split.training.filter((id) => id !== 'trainer').length : 0,
      engine_restarts: this.fleet.restarts(),
      engine_failovers: this.proxy.pool.failovers,
    };
    this.maxWhileWaiting = this.fleet.serving();
    return out;
  }
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

/**
 * The driver's ledger (see src/dataplane/assemble.ts): generations under `ledger_uri` (a non-s3 URI is not
 * shipped), restored from the checkpoint's `ledger_generation`, for the trainer's `cursor`.
 */
export function ledgerPlacement(spec: DriverSpec): LedgerPlacement {
  return {
    dir: spec.ledger_dir,
    s3Uri: spec.ledger_uri?.startsWith('s3://') ? spec.ledger_uri : null,
    storage: spec.storage,
    generations: true,
    generation: spec.ledger_generation,
    cursor: spec.cursor,
  };
}

/** Where the ledger ships (see DriverSpec.ledger_uri); undefined when the stage gave no S3 location. */
export function ledgerShipping(spec: DriverSpec): LedgerShipping | undefined {
  return placementShipping(ledgerPlacement(spec));
}

/** Makes the ledger folder the one the trainer's cursor refers to (the rule in src/dataplane/assemble.ts). */
export function prepareLedger(spec: DriverSpec): Promise<LedgerOrigin> {
  return preparePlacement(ledgerPlacement(spec));
}

/** RFT: run `spec.groups` groups (tasks drawn by the sampler) with bounded concurrency; no training. */
async function collect(
  spec: DriverSpec,
  proxy: TrajectoryProxy,
  proxyUrl: string,
  ledger: Ledger,
  sampler: { next(): Task; observe(id: string, r: readonly number[]): { keep: boolean } },
  agent: (e: { baseUrl: string; apiKey: string }, t: Task) => Promise<AgentOutcome>,
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
        const outcome = await agent({ baseUrl: `${proxyUrl}/v1`, apiKey: key }, task);
        return proxy.finish(session.id, outcomeReward(outcome), outcomeTests(outcome));
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
