// `trainflow list [--name NAME] [--state STATE]`: recent pipeline runs, newest first, filtered through the
// pipeline's search attributes (TrainflowPipeline, TrainflowState: see src/pipeline/search-attributes.ts).
import type { Command } from 'commander';
import { trainingPipeline } from '../../../workflows';
import { UserError } from '../../errors';
import { addConnectionFlags, clientFor, type ConnectionFlags } from '../../pipeline/cli-support';
import { listQuery, STAGE_ATTRIBUTE } from '../../pipeline/search-attributes';
import type { PipelineState } from '../../pipeline/status';

const STATES: PipelineState[] = ['running', 'completed', 'failed', 'cancelled'];

type ListFlags = ConnectionFlags & { limit: string; name?: string; state?: string };

export function register(program: Command): void {
  addConnectionFlags(
    program
      .command('list')
      .description('list recent pipeline runs')
      .option('--limit <n>', 'at most this many', '20')
      .option('--name <name>', 'only runs of this pipeline (metadata.name)')
      .option('--state <state>', `only runs in this state (${STATES.join(', ')})`),
  ).action(async (opts: ListFlags) => {
    if (opts.state && !STATES.includes(opts.state as PipelineState))
      throw new UserError(`--state ${opts.state}: expected one of ${STATES.join(', ')}`);
    const limit = Number(opts.limit);
    if (!Number.isInteger(limit) || limit < 1)
      throw new UserError(`--limit ${opts.limit}: expected a positive integer`);
    const client = await clientFor(opts);
    const rows: string[][] = [['ID', 'PIPELINE', 'STATUS', 'STAGE', 'STARTED']];
    const query = listQuery(trainingPipeline.name, { name: opts.name, state: opts.state });
    for await (const wf of client.workflow.list({ query })) {
      rows.push([
        wf.workflowId,
        typeof wf.memo?.pipeline === 'string' ? wf.memo.pipeline : '',
        wf.status.name.toLowerCase(),
        wf.typedSearchAttributes.get(STAGE_ATTRIBUTE) ?? '',
        wf.startTime.toISOString(),
      ]);
      if (rows.length > limit) break;
    }
    if (rows.length === 1) {
      const filtered = opts.name || opts.state;
      process.stdout.write(
        filtered
          ? 'no pipeline runs match\n'
          : 'no pipeline runs yet (start one with `trainflow start FILE`)\n',
      );
      return;
    }
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const row of rows)
      process.stdout.write(
        `${row
          .map((c, i) => c.padEnd(widths[i]))
          .join('  ')
          .trimEnd()}\n`,
      );
  });
}
