// `trainflow cancel ID`: cancels the pipeline; the running stage's job is stopped (whole process group).
import type { Command } from 'commander';
import { UserError } from '../../errors';
import { addConnectionFlags, clientFor, type ConnectionFlags } from '../../pipeline/cli-support';

export function register(program: Command): void {
  addConnectionFlags(
    program
      .command('cancel')
      .description('cancel a pipeline and stop its running job')
      .argument('<id>', 'pipeline id'),
  ).action(async (id: string, opts: ConnectionFlags) => {
    const client = await clientFor(opts);
    const handle = client.workflow.getHandle(id);
    const d = await handle.describe().catch(() => {
      throw new UserError(`no pipeline ${id}`);
    });
    if (d.status.name !== 'RUNNING')
      throw new UserError(`pipeline ${id} is not running (${d.status.name.toLowerCase()})`);
    await handle.cancel();
    process.stdout.write(
      `cancellation requested for ${id}; its job stops once the stage's activity sees it (seconds)\n`,
    );
  });
}
