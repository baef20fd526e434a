// What makes a stage's result what it is: its stage block (minus operational settings such as retries, timeouts
// and placement, which change how a stage runs, not what it produces) and the model block. `resume` compares
// these to refuse silent changes to completed stages.
import type { PipelineConfig } from '../config/schema';
import { hashJson, jsonDiff } from './canonical';

const OPERATIONAL = [
  'description',
  'retry',
  'heartbeat_timeout',
  'start_to_close_timeout',
  'resources',
  'gates',
];

export function stageIdentity(config: PipelineConfig, index: number): Record<string, unknown> {
  const stage = Object.fromEntries(
    Object.entries(config.stages[index]).filter(([k]) => !OPERATIONAL.includes(k)),
  );
  return { stage, model: config.model };
}

export function stageHash(config: PipelineConfig, index: number): string {
  return hashJson(stageIdentity(config, index));
}

/**
 * Completed stages whose identity differs between the recorded config and a new one: one entry per stage with
 * its changed fields. Empty when every completed stage is unchanged.
 */
export function completedStageChanges(
  recorded: PipelineConfig,
  next: PipelineConfig,
  completed: Iterable<string>,
): { stage: string; changes: string[] }[] {
  const out: { stage: string; changes: string[] }[] = [];
  for (const name of completed) {
    const before = recorded.stages.findIndex((s) => s.name === name);
    const after = next.stages.findIndex((s) => s.name === name);
    if (before < 0) continue;
    if (after < 0) {
      out.push({ stage: name, changes: [`stage ${name} was removed from the config`] });
      continue;
    }
    const changes = jsonDiff(stageIdentity(recorded, before), stageIdentity(next, after));
    if (changes.length > 0) out.push({ stage: name, changes });
  }
  return out;
}

export function formatStageChanges(changes: { stage: string; changes: string[] }[]): string {
  return changes.map((c) => `  stage ${c.stage}:\n${c.changes.map((l) => `    ${l}`).join('\n')}`).join('\n');
}
