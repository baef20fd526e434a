// The rollout manager: sets the rhythm between agents and the trainer.
//
// It draws tasks from a sampler, runs `groupSize` agent sessions per task (each with its own proxy key) with
// at most `concurrency` sessions in flight, and when a task's group is complete appends it to the ledger (each
// session's trajectory was appended on its own when it finished). When `batchGroups` groups are ready the
// trainer gets a batch read from the ledger after its cursor; the trainer returns the checkpoint to serve,
// and the manager updates the weights: pause the inference servers, reload, resume. Generations in flight
// continue under the new weights (partial rollout; every token keeps its version tag). The TagScheduler
// (also used by bench/dataplane-sim) decides when a new group may start so that no group is trained on more
// than `maxStaleness` versions after it started, and the batch check drops any group whose oldest token is
// older than that (which admission makes rare). Batches are taken in finishing order, so a group with a
// long response can still miss the last batch it could join: when a training step starts, every group in
// flight that the scheduler calls `doomed` (it can no longer be trained within the bound) is aborted at once
// (its sessions cancelled in the proxy, so its agents' next requests are refused and the engines stop
// decoding for it), recorded as filtered, and its launch slot goes to a fresh group: no decode is spent
// on a group only to drop it later.
//
// With a fleet of engines (`resources` + `hooks`), the engines are the scheduler's resources next to the
// trainer: an engine on train-tagged resources serves rollout while the trainer waits; when a batch is
// ready the scheduler takes back as many train-tagged resources as `autoSplit` derives from the rates
// measured in the previous steps (generated tokens per serving engine per second while training, training
// time, tokens per batch, folded by `foldRates`: the best rollout rate seen, see scheduler.ts), the hooks
// stop those engines (their sessions fail over) and start them again on the new weights when the step is
// done.
//
// A member session that expires (its agent went quiet for the proxy's idle timeout) has no reward and the
// group's baseline would be biased without it: the whole group is recorded as filtered (never trained on)
// and its launch slot is freed, whether or not the hung agent ever returns. Batches are offered only once
// their records are in S3 when the ledger ships (Ledger.syncShipped).
import { randomBytes } from 'node:crypto';
import type { Ledger, LedgerEntry } from './ledger';
import type { TrajectoryProxy } from './proxy';
import { autoSplit, foldRates, TagScheduler, type ResourceSpec, type SplitRates } from './scheduler';
import type { Trajectory } from './sessions';
import { generatedTokens } from './tree';

export interface Task {
  id: string;
  [key: string]: unknown;
}

export interface Sampler {
  next(): Task;
  /** Told each finished group's rewards; `keep: false` filters the group out of training (DAPO). */
  observe?(taskId: string, rewards: readonly number[]): { keep: boolean; reason?: string };
  /** Told when a training step finished (difficulty statistics age by steps). */
  step?(): void;
}

/** Draws tasks uniformly at random (seeded); the difficulty-aware sampler comes with the RL stage. */
export class UniformSampler implements Sampler {
  private state: number;
  constructor(
    private readonly tasks: Task[],
    seed = 0,
  ) {
    if (tasks.length === 0) throw new Error('the task sampler needs at least one task');
    this.state = seed >>> 0 || 1;
  }

  next(): Task {
    // xorshift32: reproducible without a dependency.
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.tasks[Math.floor((this.state / 2 ** 32) * this.tasks.length)]; // high bits: the low ones are weak
  }
}

export interface AgentEndpoint {
  baseUrl: string;
  apiKey: string;
}

/** What an agent's verifier said: the reward, and the per-test outcomes when it ran named tests (swe). */
export type AgentOutcome = number | { reward: number; tests?: Record<string, string> | null };
export const outcomeReward = (o: AgentOutcome): number => (typeof o === 'number' ? o : o.reward);
export const outcomeTests = (o: AgentOutcome): Record<string, string> | null | undefined =>
  typeof o === 'number' ? undefined : o.tests;

/** An agent: talks to the OpenAI endpoint it is given, returns the reward its verifier gave (and its tests). */
export type Agent = (endpoint: AgentEndpoint, task: Task) => Promise<AgentOutcome>;

export interface GroupRecord {
  kind: 'group';
  group_id: string;
  task_id: string;
  launch_version: number;
  trajectories: Trajectory[];
  /** set when the sampler filtered the group out (e.g. all rewards equal): recorded, never trained on */
  filtered?: string;
}

export interface Batch {
  groups: GroupRecord[];
  /** ledger seq of the last group in the batch: the trainer stores it in its checkpoint */
  cursor: number;
  /** the policy version the trainer is at (the one these groups are trained into) */
  trainerVersion: number;
  dropped: string[];
  /** generated tokens of the groups dropped as staler than max_staleness (reported as dropped_stale_tokens) */
  droppedTokens: number;
}

export interface TrainerPort {
  /** Trains one step; returns the checkpoint to serve next and its policy version. */
  train(batch: Batch): Promise<{ checkpoint: string; version: number }>;
}

export interface RolloutOptions {
  proxy: TrajectoryProxy;
  proxyUrl: string;
  ledger: Ledger;
  sampler: Sampler;
  agent: Agent;
  trainer: TrainerPort;
  groupSize: number;
  batchGroups: number;
  concurrency: number;
  maxStaleness: number;
  /** the policy version served at start */
  initialVersion: number;
  /** ledger cursor restored from the trainer's checkpoint (-1: from the start) */
  cursor?: number;
  resources?: ResourceSpec[];
  /** what taking a resource back and giving it back means (a fleet: stop and start engines) */
  hooks?: ResourceHooks;
}

export interface ResourceHooks {
  /** resources taken back for a training step: they stop serving (their in-flight generations fail over) */
  take(ids: string[]): Promise<void>;
  /** resources given back after the step: they serve the new weights (`weights` was called first) */
  give(ids: string[]): void;
  /** the weights served from now on (before the fan-out reload, so an engine starting meanwhile gets them) */
  weights?(checkpoint: string, version: number): void;
  /** a resource's load (e.g. its sessions): the least loaded ones are taken back first */
  load?(id: string): number;
}

export interface RolloutStats {
  steps: number;
  groupsLaunched: number;
  sessions: number;
  dropped: number;
  /** groups dropped because a member session expired */
  expiredGroups: number;
  /** groups aborted in flight because they could no longer be trained within maxStaleness */
  abortedGroups: number;
  batches: Batch[];
}

export class RolloutManager {
  readonly scheduler: TagScheduler;
  private cursor: number;
  private inFlight = 0;
  private groupSeq = 0;
  /**
   * Group ids are unique across manager runs: a resumed run appends to the same (or a restored) ledger, whose
   * appends are idempotent by id, so a repeated `g0-<task>` would silently stand for the earlier group.
   */
  private readonly runTag = randomBytes(3).toString('hex');
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  /** generated tokens of the sessions finished so far (the rollout rate the split is derived from) */
  private tokensGenerated = 0;
  /** the rates measured over the steps so far (folded by foldRates); null until a step has run */
  rates: SplitRates | null = null;
  /** groups in flight: their launch version (the scheduler's count) and how to abort them */
  private readonly live = new Map<string, { launch: number; abort: (reason: string) => void }>();
  /** per step: the resources that trained and the ones that served meanwhile */
  readonly splits: { training: string[]; serving: string[] }[] = [];

  constructor(private readonly o: RolloutOptions) {
    if (o.groupSize < 1 || o.batchGroups < 1 || o.concurrency < o.groupSize) {
      throw new Error('rollout: need groupSize >= 1, batchGroups >= 1 and concurrency >= groupSize');
    }
    this.scheduler = new TagScheduler(
      o.resources ?? [
        { id: 'trainer', tags: ['train'] },
        { id: 'inference', tags: ['rollout'] },
      ],
      { batchSize: o.batchGroups, maxStaleness: o.maxStaleness, wholeBatches: false },
    );
    this.cursor = o.cursor ?? -1;
    // Groups already in the ledger after the cursor (a resumed stage: finished by the previous run, or
    // restored from S3 after a lost machine) count as launched and complete: they are the next batches, and
    // the trainer gets them without waiting for new groups to finish first.
    for (const e of o.ledger.read(this.cursor)) {
      const rec = e.record as { kind?: string; filtered?: string };
      if (rec.kind !== 'group' || rec.filtered) continue;
      this.scheduler.launch();
      this.scheduler.complete();
    }
  }

  get version(): number {
    return this.o.initialVersion + this.scheduler.version;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  async run(steps: number): Promise<RolloutStats> {
    const stats: RolloutStats = {
      steps: 0,
      groupsLaunched: 0,
      sessions: 0,
      dropped: 0,
      expiredGroups: 0,
      abortedGroups: 0,
      batches: [],
    };
    let training: Promise<void> | null = null;
    while (stats.steps < steps) {
      if (this.failure) throw this.failure;
      while (this.scheduler.admit() && this.inFlight + this.o.groupSize <= this.o.concurrency) {
        this.launchGroup(stats);
      }
      if (!training && this.scheduler.batchReady()) {
        training = this.trainStep(stats).then(
          () => {
            training = null;
            this.notify();
          },
          (err: unknown) => {
            this.failure = err instanceof Error ? err : new Error(String(err));
            this.notify();
          },
        );
      }
      await new Promise<void>((r) => (this.wake = r));
    }
    await training;
    // Let in-flight sessions finish so nothing is left running (their groups stay in the ledger for later).
    while (this.inFlight > 0) await new Promise<void>((r) => (this.wake = r));
    if (this.failure) throw this.failure;
    return stats;
  }

  private launchGroup(stats: RolloutStats): void {
    const task = this.o.sampler.next();
    const launch = this.scheduler.launch();
    const launchVersion = this.o.initialVersion + launch;
    const groupId = `g${this.groupSeq++}.${this.runTag}-${task.id}`;
    stats.groupsLaunched++;
    this.inFlight += this.o.groupSize;
    // Aborting the group (doomed: it can no longer be trained) ends every member at once, without a trajectory.
    let abortReason: string | null = null;
    let onAbort: () => void = () => undefined;
    const aborted = new Promise<null>((resolve) => (onAbort = () => resolve(null)));
    const sessionIds: string[] = [];
    this.live.set(groupId, {
      launch,
      abort: (reason) => {
        abortReason = reason;
        for (const id of sessionIds) this.o.proxy.cancel(id);
        onAbort();
      },
    });
    const members = Array.from({ length: this.o.groupSize }, async (): Promise<Trajectory | null> => {
      const { session, key } = this.o.proxy.sessions.issue(task.id, groupId, {
        launch_version: launchVersion,
      });
      sessionIds.push(session.id);
      stats.sessions++;
      let released = false;
      const release = (): void => {
        if (!released) this.inFlight--;
        released = true;
      };
      let stopListening: () => void = () => undefined;
      const expired = new Promise<null>((resolve) => {
        stopListening = this.o.proxy.onExpire((s) => {
          if (s.id === session.id) resolve(null);
        });
      });
      const finished = (async () => {
        const outcome = await this.o.agent({ baseUrl: `${this.o.proxyUrl}/v1`, apiKey: key }, task);
        const t = await this.o.proxy.finish(session.id, outcomeReward(outcome), outcomeTests(outcome));
        this.tokensGenerated += generatedTokens(t.tree);
        return t;
      })();
      try {
        return await Promise.race([finished, expired, aborted]);
      } catch (err) {
        // An agent that fails after its session expired only confirms what expiry already decided.
        if (session.finished && !this.o.proxy.sessions.get(session.id)) return null;
        throw err;
      } finally {
        stopListening();
        release();
        // A hung agent may still answer later: its result (or error) no longer matters.
        finished.catch(() => undefined);
      }
    });
    Promise.all(members).then(
      (results) => {
        this.live.delete(groupId);
        const trajectories = abortReason === null ? results.filter((t): t is Trajectory => t !== null) : [];
        const expired = results.length - trajectories.length;
        const decision =
          abortReason !== null
            ? { keep: false, reason: abortReason }
            : expired > 0
              ? { keep: false, reason: `${expired} of ${results.length} sessions expired without finishing` }
              : (this.o.sampler.observe?.(
                  task.id,
                  trajectories.map((t) => t.reward),
                ) ?? { keep: true });
        if (abortReason !== null) stats.abortedGroups++;
        else if (expired > 0) stats.expiredGroups++;
        const rec: GroupRecord = {
          kind: 'group',
          group_id: groupId,
          task_id: task.id,
          launch_version: launchVersion,
          trajectories,
        };
        if (!decision.keep) rec.filtered = decision.reason ?? 'filtered by the sampler';
        this.o.ledger.append(groupId, rec);
        if (decision.keep) this.scheduler.complete();
        else this.scheduler.abandon(); // frees its launch slot: another group takes its place in the batch
        this.notify();
      },
      (err: unknown) => {
        this.failure = err instanceof Error ? err : new Error(String(err));
        this.notify();
      },
    );
  }

  /** How many train-tagged resources train this step: the automatic split from the measured rates. */
  private split(): number {
    const n = this.scheduler.resources.length;
    const max = this.scheduler.trainResources().length;
    return autoSplit(
      n,
      this.rates ?? { rolloutTokensPerS: 0, trainResourceSeconds: 0, tokensPerBatch: 0 },
      max,
    );
  }

  /** Folds one step's rates into those autoSplit reads (foldRates: the same fold as the simulation). */
  private measure(
    batch: Batch,
    split: { training: string[]; serving: string[] },
    seconds: number,
    tokens: number,
  ): void {
    if (seconds <= 0) return;
    const m: SplitRates = {
      rolloutTokensPerS: tokens / (Math.max(1, split.serving.length) * seconds),
      trainResourceSeconds: seconds * split.training.length,
      tokensPerBatch: batch.groups.reduce(
        (n, g) => n + g.trajectories.reduce((k, t) => k + generatedTokens(t.tree), 0),
        0,
      ),
    };
    this.rates = foldRates(this.rates, m);
  }

  /** Aborts the groups in flight that can no longer be trained within maxStaleness (the scheduler's rule). */
  private abortDoomed(): void {
    const next = this.o.initialVersion + this.scheduler.earliestTrainVersion();
    for (const [, g] of this.live)
      if (this.scheduler.doomed(g.launch))
        g.abort(
          `aborted in flight: launched at version ${this.o.initialVersion + g.launch}, it could be trained no earlier than version ${next} (max_staleness ${this.o.maxStaleness})`,
        );
  }

  /** Reads the next batch of group records after the cursor (trajectory records are skipped). */
  private nextBatch(): Batch {
    const groups: GroupRecord[] = [];
    const dropped: string[] = [];
    let droppedTokens = 0;
    let cursor = this.cursor;
    const trainerVersion = this.version;
    while (groups.length + dropped.length < this.o.batchGroups) {
      const entries: LedgerEntry[] = this.o.ledger.read(cursor, 256);
      if (entries.length === 0)
        throw new Error('rollout: the scheduler said a batch is ready but the ledger has too few groups');
      for (const e of entries) {
        cursor = e.seq;
        const rec = e.record as { kind?: string };
        if (rec.kind !== 'group') continue;
        const g = rec as GroupRecord;
        if (g.filtered) continue;
        const oldest = Math.min(
          g.launch_version,
          ...g.trajectories.map((t) => t.versions?.min ?? g.launch_version),
        );
        if (trainerVersion - oldest > this.o.maxStaleness) {
          dropped.push(g.group_id);
          droppedTokens += g.trajectories.reduce((n, t) => n + generatedTokens(t.tree), 0);
        } else groups.push(g);
        if (groups.length + dropped.length === this.o.batchGroups) break;
      }
    }
    return { groups, cursor, trainerVersion, dropped, droppedTokens };
  }

  private async trainStep(stats: RolloutStats): Promise<void> {
    await this.o.ledger.syncShipped(); // the trainer only ever acknowledges records that are in S3
    const batch = this.nextBatch();
    const hooks = this.o.hooks;
    const count = hooks ? this.split() : undefined;
    const taken = this.scheduler.startTraining(count, (id) => hooks?.load?.(id) ?? 0);
    this.abortDoomed();
    const split = {
      training: this.scheduler.trainingResources(),
      serving: this.scheduler.rolloutResources(),
    };
    this.splits.push(split);
    await hooks?.take(taken);
    const t0 = Date.now();
    const tokens0 = this.tokensGenerated;
    const { checkpoint, version } = await this.o.trainer.train(batch);
    this.measure(batch, split, (Date.now() - t0) / 1000, this.tokensGenerated - tokens0);
    hooks?.weights?.(checkpoint, version);
    // Weight update: in-flight generations pause between two tokens and continue under the new weights.
    await this.o.proxy.pauseAll();
    try {
      await this.o.proxy.reloadAll(checkpoint, version);
    } finally {
      await this.o.proxy.resumeAll();
    }
    const back = this.scheduler.finishTraining(); // (not inside hooks?.give(...): it must always run)
    hooks?.give(back);
    this.o.sampler.step?.();
    if (this.version !== version)
      throw new Error(`rollout: the trainer returned version ${version}, expected ${this.version}`);
    this.cursor = batch.cursor;
    this.o.ledger.ack(batch.cursor);
    stats.steps++;
    stats.dropped += batch.dropped.length;
    stats.batches.push(batch);
  }
}
