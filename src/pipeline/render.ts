// The human view of a pipeline's status: one line per stage with a progress bar, step/total, loss and ETA.
import type { PipelineStatus, StageStatus } from './status';

const MARK: Record<StageStatus['state'], string> = {
  pending: '·',
  running: '▶',
  completed: '✓',
  skipped: '↷',
  failed: '✗',
  cancelled: '■',
};

function bar(fraction: number, width = 24): string {
  const filled = Math.max(0, Math.min(width, Math.round(fraction * width)));
  return `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
}

export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function eta(stage: StageStatus, now: number): string {
  if (stage.state !== 'running' || !stage.startedAt || stage.step <= 0 || stage.totalSteps <= 0) return '';
  const elapsed = (now - Date.parse(stage.startedAt)) / 1000;
  return `ETA ${formatSeconds((elapsed / stage.step) * (stage.totalSteps - stage.step))}`;
}

export function renderStatus(status: PipelineStatus, uiUrl?: string, now = Date.now()): string {
  const lines = [`pipeline ${status.pipelineId} (${status.name || '?'}): ${status.state}`];
  if (uiUrl) lines.push(`  ${uiUrl}`);
  const width = Math.max(...status.stages.map((s) => s.name.length), 5);
  for (const stage of status.stages) {
    const total = stage.totalSteps || 0;
    const fraction =
      stage.state === 'completed' || stage.state === 'skipped' ? 1 : total > 0 ? stage.step / total : 0;
    const loss = stage.metrics.loss !== undefined ? `loss ${stage.metrics.loss.toFixed(3)}` : '';
    const attempt = stage.attempt > 1 ? `attempt ${stage.attempt}` : '';
    const parts = [
      `${MARK[stage.state]} ${stage.name.padEnd(width)}`,
      stage.kind.padEnd(8),
      bar(fraction),
      `${stage.step}/${total || '?'}`.padStart(11),
      loss,
      eta(stage, now),
      attempt,
      stage.state === 'skipped' ? '(completed earlier)' : '',
    ];
    lines.push(`  ${parts.filter(Boolean).join('  ')}`);
    if (stage.error) lines.push(`      ${stage.error.split('\n')[0]}`);
  }
  const last = [...status.stages].reverse().find((s) => s.outputCheckpoint);
  if (last) lines.push(`  latest output: ${last.outputCheckpoint}`);
  if (status.error && !status.stages.some((s) => s.error)) lines.push(`  error: ${status.error}`);
  return lines.join('\n');
}

/** The part of a stage's status whose change is worth a line: state, attempt and step in tenths of the stage. */
function stageKey(stage: StageStatus): string {
  const bucket = stage.totalSteps > 0 ? Math.floor((10 * stage.step) / stage.totalSteps) : 0;
  return `${stage.state}|${stage.attempt}|${bucket}`;
}

/** One line for a stage: `stage sft: running, step 40/200, loss 1.234, attempt 2`. */
export function stageLine(stage: StageStatus): string {
  const parts = [`${stage.state}`];
  if (stage.state !== 'pending') parts.push(`step ${stage.step}/${stage.totalSteps || '?'}`);
  if (stage.metrics.loss !== undefined) parts.push(`loss ${stage.metrics.loss.toFixed(3)}`);
  if (stage.attempt > 1) parts.push(`attempt ${stage.attempt}`);
  const error = stage.error ? `: ${stage.error.split('\n')[0]}` : '';
  return `stage ${stage.name}: ${parts.join(', ')}${error}`;
}

/**
 * For output that is not a terminal (a log file, a pipe): the lines describing what changed since the last
 * call — the pipeline's state, and each stage whose state, attempt or step decile moved. `seen` carries the
 * previous keys between calls. Never a redraw: a log reads top to bottom.
 */
export function changeLines(seen: Map<string, string>, status: PipelineStatus): string[] {
  const lines: string[] = [];
  const header = `pipeline ${status.pipelineId} (${status.name || '?'}): ${status.state}`;
  const ended = status.state !== 'running';
  if (!ended && seen.get('') !== status.state) lines.push(header);
  for (const stage of status.stages) {
    const key = stageKey(stage);
    if (seen.get(stage.name) === key) continue;
    // A pending stage is news only once the run has shown it was there (its first line says so).
    if (stage.state !== 'pending' || seen.has(stage.name)) lines.push(stageLine(stage));
    seen.set(stage.name, key);
  }
  if (ended && seen.get('') !== status.state) {
    const last = [...status.stages].reverse().find((s) => s.outputCheckpoint);
    if (last) lines.push(`latest output: ${last.outputCheckpoint}`);
    if (status.error && !status.stages.some((s) => s.error)) lines.push(`error: ${status.error}`);
    lines.push(header);
  }
  seen.set('', status.state);
  return lines;
}
