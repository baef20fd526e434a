// bench/dataplane-sim: the real TagScheduler (src/dataplane/scheduler.ts) driving a discrete-event simulation
// of RL training on 32 GPUs, in simulated time, for three loops over one workload:
//   sync          all GPUs generate a batch, wait for its longest response, then all train (colocated, verl sync)
//   one-step-off  a fixed split: 16 GPUs only generate (whole batches), 16 only train, one step of staleness
//   trainflow     tag scheduling: every GPU tagged train+rollout; all generate while the trainer waits, and when
//                 a batch is ready the automatic split (autoSplit in scheduler.ts, from the rates measured in
//                 the previous steps and folded by foldRates, as the job does; n - 1 before any is measured)
//                 takes the least loaded k of them to train (their in-flight responses move to the others and
//                 continue: partial rollout); streaming admission, staleness bound 1, and when a step starts
//                 the responses that can no longer be trained within it are aborted (the scheduler's
//                 `doomed`) rather than decoded to the end and dropped
//   trainflow 28/4  the hand-picked fixed split it replaces, for comparison (and a sweep of fixed splits)
// plus the sync and trainflow rows on 256 GPUs, and upper bounds on the speed-up any schedule could reach
// (`bounds`: perfect packing; a clairvoyant scheduler under the staleness bound).
// Run: npx tsx bench/dataplane-sim/run.ts   → bench/results/dataplane-sim.json
import fs from 'node:fs';
import path from 'node:path';
import {
  autoSplit,
  foldRates,
  TagScheduler,
  type ResourceSpec,
  type SchedulerPolicy,
  type SplitRates,
} from '../../src/dataplane/scheduler';

// ------------------------------------------------------------------------------------- the workload
export type Workload = typeof WORKLOAD;

export const WORKLOAD = {
  gpus: 32,
  /** responses per training step (e.g. 64 prompts x 8 samples) */
  batchSize: 512,
  /** training steps simulated per mode */
  steps: 40,
  /** response length: lognormal with this median and p99, capped */
  lengthMedian: 2000,
  lengthP99: 16000,
  lengthCap: 32000,
  /** decode speed of one sequence on a GPU decoding b sequences: perSeqTokS / (1 + b / halfSpeedBatch) */
  perSeqTokS: 60,
  halfSpeedBatch: 48,
  /** KV-cache capacity: sequences one GPU can hold */
  maxSeqsPerGpu: 128,
  /** re-prefill cost when a preempted response continues on another GPU (tokens so far / this rate) */
  prefillTokS: 20000,
  /** weight sync after each training step: every GPU pauses this long */
  weightSyncS: 10,
  /** training takes this fraction of a synchronous step (generate + train + sync); calibrated below */
  trainFractionOfSyncStep: 0.4,
  seed: 1234,
};

// ------------------------------------------------------------------------------------ randomness
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function lengthSampler(w: Workload): () => number {
  const u = rng(w.seed);
  const mu = Math.log(w.lengthMedian);
  const sigma = Math.log(w.lengthP99 / w.lengthMedian) / 2.3263;
  return () => {
    const z = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    return Math.min(w.lengthCap, Math.max(1, Math.round(Math.exp(mu + sigma * z))));
  };
}

// ------------------------------------------------------------------------------------ the simulator
interface Seq {
  id: number;
  length: number;
  remaining: number;
  launchVersion: number;
  /** seconds of re-prefill still owed before decoding resumes (after a move) */
  prefill: number;
}

interface Gpu {
  spec: ResourceSpec;
  active: Seq[];
  busy: number;
}

export interface ModeConfig {
  name: string;
  resources: ResourceSpec[];
  policy: SchedulerPolicy;
  /** how many train-tagged GPUs train per step: all (default), or derived by autoSplit from measured rates */
  split?: 'all' | 'auto';
}

export interface ModeResult {
  name: string;
  tokens_per_s: number;
  idle_fraction: number;
  sim_seconds: number;
  steps: number;
  mean_step_s: number;
  stale_dropped: number;
  /** in-flight responses aborted once they could no longer be trained within the staleness bound */
  aborted_stale: number;
  /** share of all decoded tokens that were never trained (aborted or dropped as stale) */
  wasted_decode_fraction: number;
  preempted_moves: number;
  max_staleness_seen: number;
  /** GPUs that trained, per step (the automatic split's choice) */
  train_gpus: { mean: number; min: number; max: number };
}

export function simulate(
  mode: ModeConfig,
  trainSecondsPerTokenGpu: number,
  steps = WORKLOAD.steps,
  w: Workload = WORKLOAD,
): ModeResult {
  const sched = new TagScheduler(mode.resources, mode.policy);
  const gpus = new Map<string, Gpu>(mode.resources.map((r) => [r.id, { spec: r, active: [], busy: 0 }]));
  const nextLength = lengthSampler(w);
  const pending: Seq[] = []; // moved (preempted) responses waiting for a slot, oldest first
  const done: Seq[] = []; // finished responses not yet trained on, in finishing order
  let now = 0;
  let seqId = 0;
  let trainEnd = Infinity;
  let syncEnd = 0;
  let tokensTrained = 0;
  let stepsDone = 0;
  let staleDropped = 0;
  let moves = 0;
  let maxStale = 0;
  let aborted = 0;
  let droppedTokens = 0;
  let abortedTokens = 0;
  let decodedTokens = 0;
  let training: string[] = [];
  const trainCounts: number[] = [];
  // Measured rates for the automatic split, folded step by step as the job folds them (foldRates).
  let rates: SplitRates = { rolloutTokensPerS: 0, trainResourceSeconds: 0, tokensPerBatch: 0 };
  let phaseTokens = 0; // tokens decoded by GPUs not training, since the step started
  let phaseStart = 0;

  const rate = (b: number): number => w.perSeqTokS / (1 + b / w.halfSpeedBatch);

  const dispatch = (): void => {
    if (now < syncEnd) return;
    const rollout = sched.rolloutResources().map((id) => gpus.get(id)!);
    if (rollout.length === 0) return;
    for (;;) {
      let target: Gpu | null = null;
      for (const g of rollout)
        if (g.active.length < w.maxSeqsPerGpu && (!target || g.active.length < target.active.length))
          target = g;
      if (!target) return;
      if (pending.length > 0) {
        const s = pending.shift()!;
        s.prefill = (s.length - s.remaining) / w.prefillTokS;
        target.active.push(s);
      } else if (sched.admit()) {
        const len = nextLength();
        target.active.push({
          id: seqId++,
          length: len,
          remaining: len,
          launchVersion: sched.launch(),
          prefill: 0,
        });
      } else return;
    }
  };

  /**
   * Aborts the in-flight responses that can no longer be trained within the staleness bound (the scheduler's
   * `doomed`): their decode stops now, and their launch slots go to fresh samples.
   */
  const abortDoomed = (): void => {
    const doomed = (q: Seq): boolean => sched.doomed(q.launchVersion);
    const abort = (q: Seq): void => {
      sched.abandon();
      aborted++;
      abortedTokens += q.length - q.remaining;
    };
    for (const g of gpus.values()) {
      const keep: Seq[] = [];
      for (const q of g.active)
        if (doomed(q)) abort(q);
        else keep.push(q);
      g.active = keep;
    }
    for (let i = pending.length - 1; i >= 0; i--) if (doomed(pending[i])) abort(pending.splice(i, 1)[0]);
  };

  const startTraining = (): void => {
    abortDoomed();
    // Before any step is measured autoSplit gives n - 1, as in the job (rollout.ts).
    const count = mode.split === 'auto' ? autoSplit(w.gpus, rates, sched.trainResources().length) : undefined;
    const taken = sched.startTraining(count, (id) => gpus.get(id)!.active.length);
    training = sched.trainingResources();
    trainCounts.push(training.length);
    for (const id of taken) {
      const g = gpus.get(id)!;
      moves += g.active.length;
      pending.unshift(...g.active); // partial rollout: continue elsewhere with the tokens so far
      g.active = [];
    }
    const batch = done.splice(0, w.batchSize);
    let tokens = 0;
    for (const s of batch) {
      const stale = sched.version - s.launchVersion;
      if (stale > mode.policy.maxStaleness) {
        staleDropped++;
        droppedTokens += s.length;
        continue;
      }
      maxStale = Math.max(maxStale, stale);
      tokens += s.length;
    }
    tokensTrained += tokens;
    stepTokens = tokens;
    trainEnd = now + (tokens * trainSecondsPerTokenGpu) / training.length;
    for (const id of training) gpus.get(id)!.busy -= now; // busy from now until trainEnd
    phaseTokens = 0;
    phaseStart = now;
  };
  let stepTokens = 0;

  dispatch();
  while (stepsDone < steps) {
    // Next event: a response finishing, training ending, or the weight sync ending.
    let dt = Infinity;
    if (now < syncEnd) dt = syncEnd - now;
    else {
      for (const g of gpus.values()) {
        const r = rate(g.active.length);
        for (const s of g.active) dt = Math.min(dt, s.prefill > 0 ? s.prefill : s.remaining / r);
      }
    }
    dt = Math.min(dt, trainEnd - now);
    if (!Number.isFinite(dt))
      throw new Error(`${mode.name}: the simulation stalled at t=${now.toFixed(1)}s (nothing can run)`);
    // Advance decoding.
    if (now >= syncEnd) {
      for (const g of gpus.values()) {
        if (g.active.length === 0) continue;
        g.busy += dt;
        const r = rate(g.active.length);
        for (const s of g.active) {
          if (s.prefill > 0) s.prefill = Math.max(0, s.prefill - dt);
          else {
            s.remaining -= r * dt;
            phaseTokens += r * dt;
            decodedTokens += r * dt;
          }
        }
      }
    }
    now += dt;
    // Finished responses.
    for (const g of gpus.values()) {
      const still: Seq[] = [];
      for (const s of g.active) {
        if (s.remaining <= 1e-6) {
          done.push(s);
          sched.complete();
        } else still.push(s);
      }
      g.active = still;
    }
    // Training done: the version advances, weights sync, lent GPUs come back.
    if (now >= trainEnd - 1e-9) {
      for (const id of training) gpus.get(id)!.busy += trainEnd;
      const duration = now - phaseStart;
      if (duration > 0)
        rates = foldRates(rates, {
          // no GPU served (all trained): no rollout rate measured (NaN, which foldRates ignores)
          rolloutTokensPerS: phaseTokens / ((w.gpus - training.length) * duration),
          trainResourceSeconds: duration * training.length,
          tokensPerBatch: stepTokens,
        });
      training = [];
      trainEnd = Infinity;
      sched.finishTraining();
      stepsDone++;
      syncEnd = now + w.weightSyncS;
    }
    if (sched.batchReady() && now >= syncEnd) startTraining();
    dispatch();
  }
  const busy = [...gpus.values()].reduce((a, g) => a + g.busy, 0);
  return {
    name: mode.name,
    tokens_per_s: tokensTrained / now,
    idle_fraction: 1 - busy / (w.gpus * now),
    sim_seconds: now,
    steps: stepsDone,
    mean_step_s: now / stepsDone,
    stale_dropped: staleDropped,
    aborted_stale: aborted,
    wasted_decode_fraction: (abortedTokens + droppedTokens) / Math.max(1, decodedTokens),
    preempted_moves: moves,
    max_staleness_seen: maxStale,
    train_gpus: {
      mean: trainCounts.reduce((a, b) => a + b, 0) / Math.max(1, trainCounts.length),
      min: Math.min(...trainCounts),
      max: Math.max(...trainCounts),
    },
  };
}

function gpuSpecs(spec: { train: number; rollout: number; both: number }): ResourceSpec[] {
  const out: ResourceSpec[] = [];
  for (let i = 0; i < spec.both; i++) out.push({ id: `gpu${out.length}`, tags: ['train', 'rollout'] });
  for (let i = 0; i < spec.train; i++) out.push({ id: `gpu${out.length}`, tags: ['train'] });
  for (let i = 0; i < spec.rollout; i++) out.push({ id: `gpu${out.length}`, tags: ['rollout'] });
  return out;
}

/**
 * The loops compared. trainflow: every GPU tagged train+rollout, the split chosen per step by autoSplit from
 * measured rates; `trainFlowBoth` instead gives a fixed split (that many train+rollout GPUs, the rest
 * rollout-only, all train-tagged ones training: the hand-picked form the sweep shows).
 */
export function modes(trainFlowBoth: number | 'auto' = 'auto', w: Workload = WORKLOAD): ModeConfig[] {
  const n = w.gpus;
  const B = w.batchSize;
  const both = trainFlowBoth === 'auto' ? n : trainFlowBoth;
  return [
    {
      name: 'sync',
      resources: gpuSpecs({ both: n, train: 0, rollout: 0 }),
      policy: { batchSize: B, maxStaleness: 0, wholeBatches: true },
    },
    {
      name: 'one-step-off',
      resources: gpuSpecs({ both: 0, train: n / 2, rollout: n / 2 }),
      policy: { batchSize: B, maxStaleness: 1, wholeBatches: true },
    },
    {
      name: trainFlowBoth === 'auto' ? 'trainflow' : `trainflow ${both}/${n - both}`,
      resources: gpuSpecs({ both, train: 0, rollout: n - both }),
      policy: { batchSize: B, maxStaleness: 1, wholeBatches: false },
      split: trainFlowBoth === 'auto' ? 'auto' : 'all',
    },
  ];
}

/** Training cost per token per GPU such that training is `trainFractionOfSyncStep` of a synchronous step. */
export function calibrate(w: Workload = WORKLOAD): {
  trainSecondsPerTokenGpu: number;
  syncGenerateAndSyncS: number;
} {
  const probe = simulate(modes('auto', w)[0], 0, 10, w);
  const f = w.trainFractionOfSyncStep;
  const genAndSync = probe.mean_step_s;
  const meanTokens = (probe.tokens_per_s * probe.sim_seconds) / probe.steps;
  const trainS = (genAndSync * f) / (1 - f);
  return { trainSecondsPerTokenGpu: (trainS * w.gpus) / meanTokens, syncGenerateAndSyncS: genAndSync };
}

/** The same workload on more GPUs: batch and GPU count scaled together (responses per GPU unchanged). */
export function scaled(gpus: number, steps: number): Workload {
  return { ...WORKLOAD, gpus, batchSize: (WORKLOAD.batchSize * gpus) / WORKLOAD.gpus, steps };
}

/**
 * Upper bounds on tokens/s from the workload's per-token costs alone (fluid: any fraction of a GPU, the
 * trainer never waits, moves free), as multiples of `syncTokS`. A response decoded at r tokens/s per
 * sequence shares its GPU with b = H(P/r - 1) others (P perSeqTokS, H halfSpeedBatch), so it costs
 * 1/(b r) = 1/(H (P - r)) GPU-seconds per token: decoding faster costs more, full occupancy (maxSeqsPerGpu)
 * is the cheapest.
 *   perfect_packing: every response at full occupancy, none lost: training + cheapest decode + weight sync.
 *   clairvoyant: every response must also finish within the staleness bound: launched no earlier than the
 *     end of a training step and trained no later than the start of the step after next, i.e. within one
 *     step period plus one weight sync (generous: decoding pauses during syncs). A scheduler that knew each
 *     response's length at launch would decode it at the slowest rate that meets this deadline, and never
 *     launch those that would cost more than a threshold per token (the best threshold is chosen), the
 *     period solved self-consistently. An online scheduler learns a length only by decoding it.
 */
export function bounds(
  w: Workload,
  trainSecondsPerTokenGpu: number,
  syncTokS: number,
  samples = 200_000,
): { perfect_packing: number; clairvoyant: number; clairvoyant_never_launched_fraction: number } {
  const next = lengthSampler(w);
  const lengths = Array.from({ length: samples }, next);
  const rMin = w.perSeqTokS / (1 + w.maxSeqsPerGpu / w.halfSpeedBatch);
  const cost = (r: number): number => 1 / (w.halfSpeedBatch * (w.perSeqTokS - r));
  const c = trainSecondsPerTokenGpu;
  const perBatch = w.batchSize / samples;
  const rate = (tokens: number, decode: number): { tokS: number; step: number } => {
    const step = (tokens * c + decode + w.gpus * w.weightSyncS) / w.gpus;
    return { tokS: tokens / step, step };
  };
  const mean = lengths.reduce((a, b) => a + b, 0) / samples;
  const perfect = rate(w.batchSize * mean, w.batchSize * mean * cost(rMin)).tokS / syncTokS;
  let best = { x: 0, never: 0 };
  for (let i = 0; i <= 60; i++) {
    const threshold = i === 60 ? Infinity : cost(rMin) * (1 + 0.1 * i);
    let step = (w.batchSize * mean * c) / w.gpus; // first guess; iterated to the fixed point
    let x = 0;
    let never = 0;
    for (let it = 0; it < 40; it++) {
      const deadline = step + w.weightSyncS;
      let tokens = 0;
      let decode = 0;
      never = 0;
      for (const L of lengths) {
        const r = Math.max(rMin, L / deadline);
        const k = r < w.perSeqTokS ? cost(r) : Infinity;
        if (!Number.isFinite(k) || k > threshold) never++;
        else {
          tokens += L;
          decode += L * k;
        }
      }
      const got = rate(tokens * perBatch, decode * perBatch);
      step = got.step;
      x = got.tokS / syncTokS;
    }
    if (x > best.x) best = { x, never: never / samples };
  }
  return { perfect_packing: perfect, clairvoyant: best.x, clairvoyant_never_launched_fraction: best.never };
}

function row(r: ModeResult, base: number): string {
  return `${r.name.padEnd(16)} ${r.tokens_per_s.toFixed(0).padStart(8)}   ${(r.tokens_per_s / base).toFixed(2).padStart(6)}x  ${(r.idle_fraction * 100).toFixed(1).padStart(5)}%  ${r.mean_step_s.toFixed(0).padStart(8)}s  ${r.train_gpus.mean.toFixed(1).padStart(9)}   ${String(r.stale_dropped).padStart(8)}   ${String(r.aborted_stale).padStart(7)}   ${(r.wasted_decode_fraction * 100).toFixed(1).padStart(5)}%   ${String(r.preempted_moves).padStart(6)}`;
}

const HEADER =
  'mode             tokens/s   vs sync   idle    mean step   training GPUs   dropped   aborted   wasted   moved';

function main(): void {
  const t0 = Date.now();
  const cal = calibrate();
  const c = cal.trainSecondsPerTokenGpu;
  const results = [...modes(), modes(28)[2]].map((m) => simulate(m, c));
  const sweep = [8, 16, 24, 27, 28, 29, 30, 32].map((k) => ({
    train_rollout_gpus: k,
    ...simulate(modes(k)[2], c),
  }));
  const base = results[0].tokens_per_s;
  console.log(
    `dataplane-sim: ${WORKLOAD.gpus} GPUs, batch ${WORKLOAD.batchSize}, ${WORKLOAD.steps} steps; sync step = ${cal.syncGenerateAndSyncS.toFixed(0)}s generate+sync + training at ${(WORKLOAD.trainFractionOfSyncStep * 100).toFixed(0)}%`,
  );
  console.log(HEADER);
  for (const r of results) console.log(row(r, base));
  console.log('fixed splits (GPUs tagged train+rollout / rollout only, all train-tagged training):');
  for (const s of sweep)
    console.log(
      `  ${s.train_rollout_gpus}/${WORKLOAD.gpus - s.train_rollout_gpus}: ${s.tokens_per_s.toFixed(0)} tokens/s (${(s.tokens_per_s / base).toFixed(2)}x), idle ${(s.idle_fraction * 100).toFixed(1)}%`,
    );
  // 256 GPUs: fewer steps (the event loop is O(GPUs x sequences) per event); calibrated on its own.
  const big = scaled(256, 12);
  const bigCal = calibrate(big);
  const bigRows = [modes('auto', big)[0], modes('auto', big)[2]].map((m) =>
    simulate(m, bigCal.trainSecondsPerTokenGpu, big.steps, big),
  );
  console.log(`${big.gpus} GPUs, batch ${big.batchSize}, ${big.steps} steps:`);
  console.log(HEADER);
  for (const r of bigRows) console.log(row(r, bigRows[0].tokens_per_s));
  const bound = bounds(WORKLOAD, c, base);
  const best = [...results, ...sweep].reduce((a, b) => (b.tokens_per_s > a.tokens_per_s ? b : a));
  console.log(
    `upper bounds (x sync): perfect packing, nothing lost ${bound.perfect_packing.toFixed(3)}; clairvoyant under the staleness bound ${bound.clairvoyant.toFixed(3)} (never launching ${(bound.clairvoyant_never_launched_fraction * 100).toFixed(1)}% of responses); best measured: ${best.name} ${(best.tokens_per_s / base).toFixed(3)}`,
  );
  const out = {
    bench: 'dataplane-sim',
    workload: WORKLOAD,
    calibration: cal,
    modes: results.map((r) => ({ ...r, speedup_vs_sync: r.tokens_per_s / base })),
    trainflow_split_sweep: sweep,
    bounds_vs_sync: {
      ...bound,
      best_measured: { name: best.name, speedup_vs_sync: best.tokens_per_s / base },
      note: 'fluid upper bounds from per-token costs (see bounds() in bench/dataplane-sim/run.ts); clairvoyant knows each response length at launch',
    },
    gpus_256: {
      workload: big,
      calibration: bigCal,
      modes: bigRows.map((r) => ({ ...r, speedup_vs_sync: r.tokens_per_s / bigRows[0].tokens_per_s })),
    },
    wall_ms: Date.now() - t0,
  };
  const file = path.resolve(__dirname, '../results/dataplane-sim.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

if (require.main === module) main();
