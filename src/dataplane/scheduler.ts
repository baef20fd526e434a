// Tag scheduling: who generates rollouts and who trains, and when a new sample may start.
//
// Resources (GPUs, inference servers) carry tags: `train` (can run the trainer), `rollout` (can serve
// inference). While the trainer waits for data, resources tagged with both serve rollouts; when a batch is
// ready the scheduler takes them back for training (their in-flight generations move elsewhere and resume:
// partial rollout) and returns them when the step is done. The same class drives the real rollout manager
// and the discrete-event simulation in bench/dataplane-sim (simulated time): it holds no clock, it only
// reacts to events.
//
// Staleness: a sample is consumed by training step floor(L / batchSize) if it is the L-th launched (FIFO),
// and that step trains policy version = step number. A sample launched while the served version is v is at
// most `maxStaleness` versions old at training when L < (v + maxStaleness + 1) * batchSize (AReaL's rule);
// `admit()` enforces it. maxStaleness 0 with whole batches is the synchronous loop. Batches are taken in
// finishing order, not launch order, so a long response can still miss its batch: once the next batch it
// could join trains a version more than `maxStaleness` after its launch, `doomed()` says so and the caller
// aborts it (and calls `abandon()`, which frees its launch slot for a fresh sample) instead of decoding it
// to the end only to drop it then: no decode, no slot spent on a sample that can never be trained.
//
// The split (how many train-tagged resources train when a batch is ready; the others keep serving rollout)
// is derived from measured rates by `autoSplit` (the rule is written there), so no one hand-picks it. The
// rates are folded step by step by `foldRates`, the one place the job and the simulation both fold them. The
// rollout rate it keeps is the best one measured, not an average: a step's serving resources drain (each
// batch is launched at the start of a version, and no new sample may start until the next), so a step's
// average rate is lower the more resources serve, and an averaged rate fed back into the split gives rollout
// ever more resources (measured in bench/dataplane-sim: 28 -> 19 of 32 training, 2.16x -> 1.85x sync).
//
// Tried in bench/dataplane-sim and not kept (numbers in the README): taking finished samples oldest launch
// version first (no effect: a batch is taken the moment its B-th sample finishes, so hardly a finished
// sample is ever queued behind another batch; the real job's ledger cursor also needs batches in append
// order), a low-occupancy lane for the longest-running generations (2.08-2.14x: it takes capacity from the
// few resources serving during training), admitting beyond the staleness count, and dithering the split.

export type Tag = 'train' | 'rollout';
export type Role = 'rollout' | 'train' | 'idle';

export interface ResourceSpec {
  id: string;
  tags: Tag[];
}

export interface SchedulerPolicy {
  /** samples per training step */
  batchSize: number;
  /** how many versions older than the trainer a sample's launch version may be */
  maxStaleness: number;
  /** generate in whole batches: batch k+1 starts only after every sample of batch k finished (verl-style) */
  wholeBatches: boolean;
}

/** What the automatic split is derived from: rates measured while the job runs (or its simulation). */
export interface SplitRates {
  /**
   * tokens per second one resource generates while the trainer trains (rollout throughput per resource); one
   * step's average as measured, the best so far once folded by `foldRates`
   */
  rolloutTokensPerS: number;
  /** resource-seconds one training step takes (its wall time x the resources that trained) */
  trainResourceSeconds: number;
  /** tokens a batch holds */
  tokensPerBatch: number;
  /** generations in flight when the batch is ready (they must fit on the resources left serving) */
  inFlight?: number;
  /** generations one resource holds at once (its KV-cache capacity: vLLM max_num_seqs, the CPU --max-batch) */
  slotsPerResource?: number;
}

/**
 * How many of `n` resources should train when a batch is ready. The rule: while k resources train for
 * T/k seconds (T = trainResourceSeconds), the other n - k must generate the next batch (B tokens at R
 * tokens/s each), so that neither side waits: (n - k) R T / k = B, i.e. k = n R T / (B + R T): training gets
 * the share of resources that its share of the work needs. R is what a resource generates when it has work
 * (`foldRates` keeps the best rate measured, see the top of this file). Rounded down (a trainer that waits a
 * little costs less than a batch that is late, when the rest of the fleet generates while it waits; rounding
 * to the nearest, or dithering between the two, was measured worse). Optionally (`inFlight` and
 * `slotsPerResource`), the generations in flight must fit on the resources left serving:
 * k <= n - ceil(inFlight / slotsPerResource). Neither the job nor the simulation passes them: generations
 * that do not fit wait for a slot, and most still finish in time (measured: 29 of 32 training with ~130
 * waiting, 2.19x sync, beats the 28 this cap allows, 2.16x). At least 1, at most n - 1 so rollout never
 * stops; `max` caps it at the train-tagged count. Rates not measured yet (0, or not finite): n - 1.
 */
export function autoSplit(n: number, rates: SplitRates, max = n): number {
  const { rolloutTokensPerS: R, trainResourceSeconds: T, tokensPerBatch: B } = rates;
  let k =
    R > 0 && T > 0 && B > 0 && Number.isFinite(R * T * B) ? Math.floor((n * R * T) / (B + R * T)) : n - 1;
  const { inFlight, slotsPerResource: slots } = rates;
  if (inFlight !== undefined && slots !== undefined && slots > 0)
    k = Math.min(k, n - Math.ceil(inFlight / slots));
  return Math.max(1, Math.min(max, n - 1, k));
}

/**
 * Folds one step's measured rates into those autoSplit reads. Training time and tokens per batch: moving
 * averages (weight `a` on the new step). The rollout rate: the highest measured so far, because starvation
 * (serving resources with too little to do) only lowers a step's rate, never raises it, and a split derived
 * from a starved rate gives rollout more resources, which starves them further. A measurement that is not a
 * positive finite number (a step in which no resource served) leaves that rate as it was.
 */
export function foldRates(prev: SplitRates | null, m: SplitRates, a = 0.5): SplitRates {
  const ok = (x: number): boolean => Number.isFinite(x) && x > 0;
  const avg = (x: number, p: number | undefined): number =>
    !ok(x) ? (p ?? 0) : p === undefined || !ok(p) ? x : a * x + (1 - a) * p;
  return {
    rolloutTokensPerS: Math.max(
      ok(m.rolloutTokensPerS) ? m.rolloutTokensPerS : 0,
      prev?.rolloutTokensPerS ?? 0,
    ),
    trainResourceSeconds: avg(m.trainResourceSeconds, prev?.trainResourceSeconds),
    tokensPerBatch: avg(m.tokensPerBatch, prev?.tokensPerBatch),
  };
}

export class TagScheduler {
  readonly resources: ResourceSpec[];
  private readonly roles = new Map<string, Role>();
  /** policy version being served for rollout (= training steps finished) */
  version = 0;
  training = false;
  launched = 0;
  completed = 0;
  /** samples handed to the trainer so far */
  consumed = 0;

  constructor(
    resources: ResourceSpec[],
    readonly policy: SchedulerPolicy,
  ) {
    if (!resources.some((r) => r.tags.includes('train')))
      throw new Error('tag scheduling needs at least one resource tagged `train`');
    if (!resources.some((r) => r.tags.includes('rollout')))
      throw new Error('tag scheduling needs at least one resource tagged `rollout`');
    if (policy.batchSize < 1 || policy.maxStaleness < 0)
      throw new Error('batchSize must be >= 1 and maxStaleness >= 0');
    this.resources = resources;
    for (const r of resources) this.roles.set(r.id, r.tags.includes('rollout') ? 'rollout' : 'idle');
  }

  role(id: string): Role {
    return this.roles.get(id) ?? 'idle';
  }

  rolloutResources(): string[] {
    return this.resources.filter((r) => this.roles.get(r.id) === 'rollout').map((r) => r.id);
  }

  trainResources(): string[] {
    return this.resources.filter((r) => r.tags.includes('train')).map((r) => r.id);
  }

  /** May one more sample start now? (staleness bound, and whole-batch generation when configured) */
  admit(): boolean {
    const { batchSize, maxStaleness, wholeBatches } = this.policy;
    if (this.launched >= (this.version + maxStaleness + 1) * batchSize) return false;
    if (wholeBatches && this.launched >= (Math.floor(this.completed / batchSize) + 1) * batchSize)
      return false;
    return true;
  }

  /** Records a launch; call only after admit() said yes. Returns the sample's launch version. */
  launch(): number {
    this.launched++;
    return this.version;
  }

  /** Records a finished sample; true when a batch is ready and the trainer is free. */
  complete(): boolean {
    this.completed++;
    return this.batchReady();
  }

  /** A preempted sample that will not complete (dropped); frees its launch slot. */
  abandon(): void {
    this.launched--;
  }

  /**
   * The earliest policy version a sample still in flight can be trained at: finished samples form the
   * batches in finishing order, so an in-flight one joins the batch after those already complete (and after
   * the step training now, which advances the version).
   */
  earliestTrainVersion(): number {
    const ahead = Math.floor((this.completed - this.consumed) / this.policy.batchSize);
    return this.version + (this.training ? 1 : 0) + ahead;
  }

  /**
   * Can an in-flight sample launched at `launchVersion` no longer be trained within the staleness bound?
   * Then it should be aborted (and `abandon()`ed) now rather than decoded to the end and dropped.
   */
  doomed(launchVersion: number): boolean {
    return this.earliestTrainVersion() - launchVersion > this.policy.maxStaleness;
  }

  batchReady(): boolean {
    return !this.training && this.completed - this.consumed >= this.policy.batchSize;
  }

  /**
   * Starts a training step: `count` resources tagged `train` (all of them by default; `autoSplit` gives the
   * number) switch to training, the least loaded first (`load`: e.g. in-flight generations, so fewest move).
   * Returns the ids taken from rollout, whose in-flight generations must move (partial rollout).
   */
  startTraining(count?: number, load: (id: string) => number = () => 0): string[] {
    if (!this.batchReady()) throw new Error('startTraining without a ready batch');
    this.training = true;
    this.consumed += this.policy.batchSize;
    const candidates = this.resources.filter((r) => r.tags.includes('train'));
    const n = Math.max(1, Math.min(candidates.length, count ?? candidates.length));
    // Resources that can only train go first (they are not serving anything), then the least loaded.
    const order = candidates
      .map((r, i) => ({ r, i, lent: this.roles.get(r.id) === 'rollout', load: load(r.id) }))
      .sort((a, b) => Number(a.lent) - Number(b.lent) || a.load - b.load || a.i - b.i);
    const taken: string[] = [];
    for (const { r, lent } of order.slice(0, n)) {
      if (lent) taken.push(r.id);
      this.roles.set(r.id, 'train');
    }
    return taken;
  }

  /** The resources training now. */
  trainingResources(): string[] {
    return this.resources.filter((r) => this.roles.get(r.id) === 'train').map((r) => r.id);
  }

  /** Ends a training step: the version advances and lent resources go back to rollout. Returns them. */
  finishTraining(): string[] {
    if (!this.training) throw new Error('finishTraining while not training');
    this.training = false;
    this.version++;
    const back: string[] = [];
    for (const r of this.resources) {
      if (this.roles.get(r.id) !== 'train') continue;
      const next: Role = r.tags.includes('rollout') ? 'rollout' : 'idle';
      this.roles.set(r.id, next);
      if (next === 'rollout') back.push(r.id);
    }
    return back;
  }
}
