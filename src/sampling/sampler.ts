// Task samplers: which tasks the rollout manager sends out next, and whether a finished group trains.
//
// Both samplers share one interface and one statistics table, and differ only in how they draw:
//   difficulty  weight p̂(1−p̂) + bonus/(1+attempts), p̂ the task's Beta-posterior pass rate. The variance
//               p(1−p) bounds a task's expected improvement under a policy gradient (arXiv 2504.03380):
//               tasks always or never solved teach nothing, tasks of middle difficulty the most. The bonus
//               sends unseen tasks out first and fades as they are tried. Filtered tasks are not drawn.
//   uniform     every task equally likely (the baseline the bench compares against).
// Filtering (DAPO dynamic sampling): a group whose outcomes are all equal has zero advantage everywhere and
// carries no signal, so it is dropped from the batch and — for the difficulty sampler — its task rests for
// `recheck_every` steps and is then drawn again (its difficulty may have changed since).
import { samplingSchema, type StageConfig } from '../config/schema';
import { UserError } from '../errors';
import { Rng } from './rng';
import { StatsTable, UNIFORM_PRIOR, type BetaPrior } from './stats';

/** The stage config's resolved `sampling` block (src/config/schema.ts: one definition, no drift). */
export type SamplingConfig = NonNullable<StageConfig['sampling']>;

/** The block's defaults, from the schema (a stage without `sampling` gets exactly these). */
export const DEFAULT_SAMPLING: SamplingConfig = samplingSchema.parse({});

export interface GroupDecision {
  /** Whether the group goes into the training batch. */
  keep: boolean;
  /** Why not, when it does not. */
  reason?: 'all-equal';
  /** The task's pass rate after this group. */
  pass_rate: number;
}

export interface TaskSampler {
  readonly strategy: SamplingConfig['strategy'];
  readonly stats: StatsTable;
  /** `k` task ids for the next groups: distinct while enough tasks are eligible, repeating only beyond. */
  draw(k: number): string[];
  /** Records a finished group's outcomes and decides whether it trains. */
  observe(taskId: string, outcomes: readonly number[]): GroupDecision;
  /** Advances the clock by one training step. */
  step(): void;
  /** The draw weight of each task now (uniform: all 1). */
  weights(): Map<string, number>;
}

/** Whether a group's outcomes are all equal within `tolerance` (max − min): 1, 1, 1, 1 + 1e-7 carries no
 * signal, only float noise that group normalisation would blow up into advantages of ±1. */
export function allEqual(outcomes: readonly number[], tolerance: number): boolean {
  return Math.max(...outcomes) - Math.min(...outcomes) <= tolerance;
}

/** The difficulty weight of a task with pass rate estimate `p` after `attempts` rollouts. */
export function difficultyWeight(p: number, attempts: number, explorationBonus: number): number {
  return p * (1 - p) + explorationBonus / (1 + attempts);
}

abstract class BaseSampler implements TaskSampler {
  abstract readonly strategy: SamplingConfig['strategy'];
  protected readonly rng: Rng;

  constructor(
    protected readonly taskIds: readonly string[],
    readonly stats: StatsTable,
    protected readonly config: SamplingConfig,
    protected readonly prior: BetaPrior,
  ) {
    if (taskIds.length === 0) throw new UserError('sampling: no tasks to sample from (tasks.count is 0?)');
    if (new Set(taskIds).size !== taskIds.length) throw new UserError('sampling: duplicate task ids');
    this.rng = new Rng(stats.rngState);
  }

  abstract weights(): Map<string, number>;

  draw(k: number): string[] {
    if (!Number.isInteger(k) || k < 0) throw new UserError(`sampling: cannot draw ${k} tasks`);
    const weights = this.weights();
    let pool = this.taskIds.filter((id) => (weights.get(id) ?? 0) > 0);
    if (pool.length === 0) pool = [...this.taskIds]; // everything filtered: re-check early rather than stall
    const out: string[] = [];
    while (out.length < k) {
      // Weighted sampling without replacement (Efraimidis–Spirakis): key u^(1/w), take the largest keys.
      const keyed = pool.map((id) => ({
        id,
        key: Math.log(this.rng.next() || Number.MIN_VALUE) / (weights.get(id) || 1),
      }));
      keyed.sort((a, b) => b.key - a.key);
      out.push(...keyed.slice(0, k - out.length).map((x) => x.id));
    }
    this.stats.rngState = this.rng.state;
    return out;
  }

  observe(taskId: string, outcomes: readonly number[]): GroupDecision {
    if (!this.taskIds.includes(taskId))
      throw new UserError(`sampling: unknown task id ${JSON.stringify(taskId)}`);
    if (outcomes.length === 0) throw new UserError(`sampling: empty group for task ${taskId}`);
    const s = this.stats.record(taskId, outcomes);
    const pass_rate = this.stats.passRate(taskId, this.prior);
    if (
      this.config.filter_all_equal &&
      outcomes.length > 1 &&
      allEqual(outcomes, this.config.all_equal_tolerance)
    ) {
      if (this.strategy === 'difficulty') s.filtered_until = this.stats.step + this.config.recheck_every;
      return { keep: false, reason: 'all-equal', pass_rate };
    }
    s.filtered_until = null; // a group with signal: the task is in play again (re-check passed)
    return { keep: true, pass_rate };
  }

  step(): void {
    this.stats.step += 1;
  }
}

export class DifficultySampler extends BaseSampler {
  readonly strategy = 'difficulty' as const;

  weights(): Map<string, number> {
    const w = new Map<string, number>();
    for (const id of this.taskIds) {
      if (this.stats.isFiltered(id)) {
        w.set(id, 0);
        continue;
      }
      const attempts = this.stats.get(id)?.attempts ?? 0;
      w.set(
        id,
        difficultyWeight(this.stats.passRate(id, this.prior), attempts, this.config.exploration_bonus),
      );
    }
    return w;
  }
}

export class UniformSampler extends BaseSampler {
  readonly strategy = 'uniform' as const;

  weights(): Map<string, number> {
    return new Map(this.taskIds.map((id) => [id, 1]));
  }
}

/** The sampler a stage's `sampling` block asks for, over these tasks, continuing `stats` (or a new table). */
export function createSampler(
  taskIds: readonly string[],
  config: Partial<SamplingConfig> = {},
  stats: StatsTable = new StatsTable(),
  prior: BetaPrior = UNIFORM_PRIOR,
): TaskSampler {
  // the config's own rules, for callers that did not come through `validate`
  const parsed = samplingSchema.safeParse(config);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new UserError(`sampling.${issue.path.join('.')}: ${issue.message}`);
  }
  const full = parsed.data;
  return full.strategy === 'difficulty'
    ? new DifficultySampler(taskIds, stats, full, prior)
    : new UniformSampler(taskIds, stats, full, prior);
}
