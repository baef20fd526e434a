// `trainflow list`: recent pipeline runs, newest first.
import type { Command } from 'commander';
import { trainingPipeline } from '../../../workflows';
import { addConnectionFlags, clientFor, type ConnectionFlags } from '../../pipeline/cli-support';

export function register(program: Command): void {
  addConnectionFlags(
    program
      .command('list')
      .description('list recent pipeline runs')
      .option('--limit <n>', 'at most this many', '20'),
  ).action(async (opts: ConnectionFlags & { limit: string }) => {
    const client = await clientFor(opts);
    const rows: string[][] = [['ID', 'PIPELINE', 'STATUS', 'STARTED']];
    const limit = Number(opts.limit);
    for await (const wf of client.workflow.list({ query: `WorkflowType = '${trainingPipeline.name}'` })) {
      rows.push([
        wf.workflowId,
        typeof wf.memo?.pipeline === 'string' ? wf.memo.pipeline : '',
        wf.status.name.toLowerCase(),
        wf.startTime.toISOString(),
      ]);
      if (rows.length > limit) break;
    }
    if (rows.length === 1) {
      process.stdout.write('no pipeline runs yet (start one with `trainflow start FILE`)\n');
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
