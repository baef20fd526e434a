// Per-task success statistics: what difficulty-aware sampling knows about each task. One table lives for a
// whole pipeline (across steps, stages and runs): its clock counts training steps of every stage in turn, so
// "re-check after N steps" means N steps of whichever stage is running. Serialised as one JSON object.
import { randomUUID } from 'node:crypto';
import { UserError } from '../errors';

export interface TaskStats {
  /** Rollouts of the task observed (each one outcome). */
  attempts: number;
  /** Sum of the outcomes clamped to [0, 1] (a pass counts 1). */
  successes: number;
  /** Clock value when the task was last observed. */
  last_seen_step: number;
  /** The task is filtered (not drawn) while the clock is below this; null when not filtered. */
  filtered_until: number | null;
}

export interface StatsFile {
  format: 1;
  /** Identity of this table, so merging the same table twice does not count its outcomes twice. */
  id: string;
  /** The table's clock: training steps observed so far (all stages, all runs). */
  step: number;
  /** State of the sampler's PRNG, so a resumed sampler draws what the uninterrupted one would have. */
  rng_state: number;
  /** Ids of the tables already merged into this one (seeding is idempotent). */
  merged: string[];
  updated_at: string;
  tasks: Record<string, TaskStats>;
}

/** The Beta prior of a pass rate: p̂ = (successes + alpha) / (attempts + alpha + beta). */
export interface BetaPrior {
  alpha: number;
  beta: number;
}
export const UNIFORM_PRIOR: BetaPrior = { alpha: 1, beta: 1 };

export class StatsTable {
  readonly tasks = new Map<string, TaskStats>();
  id: string = randomUUID();
  step = 0;
  rngState: number;
  merged: string[] = [];

  constructor(seed = 0) {
    this.rngState = seed >>> 0;
  }

  get(taskId: string): TaskStats | undefined {
    return this.tasks.get(taskId);
  }

  /** Adds the outcomes (rewards) of one group of rollouts of a task at the current clock. */
  record(taskId: string, outcomes: readonly number[]): TaskStats {
    for (const r of outcomes) {
      if (!Number.isFinite(r))
        throw new UserError(`sampling: outcome of task ${taskId} is not a number: ${r}`);
    }
    const s = this.tasks.get(taskId) ?? {
      attempts: 0,
      successes: 0,
      last_seen_step: 0,
      filtered_until: null,
    };
    s.attempts += outcomes.length;
    s.successes += outcomes.reduce((a, r) => a + Math.min(1, Math.max(0, r)), 0);
    s.last_seen_step = this.step;
    this.tasks.set(taskId, s);
    return s;
  }

  /** The posterior-mean pass rate under a Beta prior (the prior's mean for an unseen task). */
  passRate(taskId: string, prior: BetaPrior = UNIFORM_PRIOR): number {
    const s = this.tasks.get(taskId);
    return ((s?.successes ?? 0) + prior.alpha) / ((s?.attempts ?? 0) + prior.alpha + prior.beta);
  }

  isFiltered(taskId: string): boolean {
    const until = this.tasks.get(taskId)?.filtered_until;
    return until !== null && until !== undefined && this.step < until;
  }

  /** Adds another table's observations (e.g. RFT's pass rates seeding RL): counts add, the later clock wins.
   *  A table already merged (by id) is skipped, so seeding twice (a retried stage) counts nothing twice.
   *  Filters are not carried over: they belong to the other table's clock. Returns whether it merged. */
  merge(other: StatsTable): boolean {
    if (other.id === this.id || this.merged.includes(other.id)) return false;
    for (const [taskId, o] of other.tasks) {
      const s = this.tasks.get(taskId);
      if (s) {
        s.attempts += o.attempts;
        s.successes += o.successes;
        s.last_seen_step = Math.max(s.last_seen_step, o.last_seen_step);
      } else {
        this.tasks.set(taskId, { ...o, filtered_until: null });
      }
    }
    this.merged.push(other.id, ...other.merged.filter((m) => !this.merged.includes(m)));
    return true;
  }

  toJSON(): StatsFile {
    const tasks: Record<string, TaskStats> = {};
    for (const id of [...this.tasks.keys()].sort()) tasks[id] = { ...this.tasks.get(id)! };
    return {
      format: 1,
      id: this.id,
      step: this.step,
      rng_state: this.rngState,
      merged: [...this.merged],
      updated_at: new Date().toISOString(),
      tasks,
    };
  }

  /** Reads a stats file, checking every field; `where` names the file in the error message. */
  static fromJSON(raw: unknown, where: string): StatsTable {
    const bad = (field: string, what: string): never => {
      throw new UserError(
        `${where}: sampling statistics field ${field} ${what} (delete the file to start the statistics afresh)`,
      );
    };
    if (typeof raw !== 'object' || raw === null) return bad('(root)', 'must be a JSON object');
    const f = raw as Partial<StatsFile>;
    if (f.format !== 1) bad('format', `must be 1, got ${JSON.stringify(f.format)}`);
    if (typeof f.id !== 'string' || !f.id) bad('id', 'must be a non-empty string');
    const isCount = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
    if (!isCount(f.step) || !Number.isInteger(f.step)) bad('step', 'must be an integer ≥ 0');
    if (!isCount(f.rng_state) || !Number.isInteger(f.rng_state)) bad('rng_state', 'must be an integer ≥ 0');
    if (!Array.isArray(f.merged) || !f.merged.every((m) => typeof m === 'string'))
      bad('merged', 'must be a list of table ids');
    if (typeof f.tasks !== 'object' || f.tasks === null || Array.isArray(f.tasks))
      bad('tasks', 'must be an object keyed by task id');
    const table = new StatsTable(f.rng_state);
    table.id = f.id!;
    table.step = f.step!;
    table.merged = [...f.merged!];
    for (const [taskId, s] of Object.entries(f.tasks!)) {
      const t = s as Partial<TaskStats>;
      const at = (k: string) => `tasks[${JSON.stringify(taskId)}].${k}`;
      if (!isCount(t.attempts)) bad(at('attempts'), 'must be a number ≥ 0');
      if (!isCount(t.successes) || t.successes! > t.attempts!)
        bad(at('successes'), 'must be a number between 0 and attempts');
      if (!isCount(t.last_seen_step)) bad(at('last_seen_step'), 'must be a number ≥ 0');
      if (t.filtered_until !== null && !isCount(t.filtered_until))
        bad(at('filtered_until'), 'must be a step number or null');
      table.tasks.set(taskId, {
        attempts: t.attempts!,
        successes: t.successes!,
        last_seen_step: t.last_seen_step!,
        filtered_until: t.filtered_until ?? null,
      });
    }
    return table;
  }
}
