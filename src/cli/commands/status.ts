// `trainflow status ID [--watch] [--json]`: every stage's state, step/total, loss, ETA and checkpoints.
import type { Command } from 'commander';
import { UserError } from '../../errors';
import {
  addConnectionFlags,
  clientFor,
  follow,
  readStatus,
  uiUrl,
  type ConnectionFlags,
} from '../../pipeline/cli-support';
import { renderStatus } from '../../pipeline/render';

export function register(program: Command): void {
  addConnectionFlags(
    program
      .command('status')
      .description(
        'show a pipeline’s stages: progress bar, step/total, loss, ETA, checkpoints, Temporal UI link',
      )
      .argument('<id>', 'pipeline id')
      .option('--watch', 'redraw every second until the pipeline ends')
      .option('--json', 'print the status query result as JSON'),
  ).action(async (id: string, opts: ConnectionFlags & { watch?: boolean; json?: boolean }) => {
    const client = await clientFor(opts);
    if (opts.watch && !opts.json) {
      await follow(client, id);
      return;
    }
    const status = await readStatus(client, id).catch((err: unknown) => {
      if ((err as Error).name === 'WorkflowNotFoundError') throw new UserError(`no pipeline ${id}`);
      throw err;
    });
    if (!status)
      throw new UserError(
        `pipeline ${id}: no control worker answers its status query; start one with \`trainflow worker\``,
      );
    process.stdout.write(
      opts.json
        ? `${JSON.stringify(status, null, 2)}\n`
        : `${renderStatus(status, uiUrl(client, id, opts.address))}\n`,
    );
  });
}
