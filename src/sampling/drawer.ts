// The bridge to the rollout manager (src/dataplane/rollout.ts), which asks its sampler for one task at a
// time (`next()`): tasks are drawn from the TaskSampler in chunks of `chunk` distinct tasks (a batch's worth
// of groups), so one chunk never repeats a task and each chunk sees the statistics of the groups before it.
// When a group completes, `observe` records its rewards and says whether the group trains (DAPO filter);
// `step` advances the statistics' clock once per training step.
import { UserError } from '../errors';
import type { GroupDecision, TaskSampler } from './sampler';

export class TaskDrawer<T extends { id: string }> {
  private readonly byId: Map<string, T>;
  private queue: string[] = [];

  constructor(
    tasks: readonly T[],
    readonly sampler: TaskSampler,
    private readonly chunk = 1,
  ) {
    if (!Number.isInteger(chunk) || chunk < 1)
      throw new UserError('sampling: chunk must be a positive integer');
    this.byId = new Map(tasks.map((t) => [t.id, t]));
    if (this.byId.size !== tasks.length) throw new UserError('sampling: duplicate task ids');
  }

  next(): T {
    if (this.queue.length === 0) this.queue = this.sampler.draw(this.chunk);
    const id = this.queue.shift()!;
    const task = this.byId.get(id);
    if (!task)
      throw new UserError(`sampling: the sampler drew ${JSON.stringify(id)}, which is not a task here`);
    return task;
  }

  observe(taskId: string, rewards: readonly number[]): GroupDecision {
    return this.sampler.observe(taskId, rewards);
  }

  step(): void {
    this.sampler.step();
  }
}
