// `trainflow resume ID [--from STAGE] [--config FILE] [--force]`: a new run of the pipeline that skips the
// stages its manifest records as completed (no job launched) and restarts the failed stage from its last
// committed checkpoint. A changed config is refused for completed stages, with the difference, unless --force.
import type { Command } from 'commander';
import { validateConfigFile } from '../../config/checks';
import { resumePipeline } from '../../pipeline/client';
import {
  addConnectionFlags,
  clientFor,
  follow,
  uiUrl,
  type ConnectionFlags,
} from '../../pipeline/cli-support';

export function register(program: Command): void {
  addConnectionFlags(
    program
      .command('resume')
      .description('continue a failed or cancelled pipeline: completed stages are skipped')
      .argument('<id>', 'pipeline id')
      .option('--from <stage>', 'rerun from this stage (it and the stages after it start over)')
      .option('--config <file>', 'use this (fixed) config instead of the previous run’s')
      .option('--force', 'accept config changes to completed stages (their recorded outputs are kept)')
      .option('--follow', 'show progress until the pipeline ends'),
  ).action(
    async (id: string, opts: ConnectionFlags & { from?: string; force?: boolean; follow?: boolean }) => {
      const config = opts.config ? await validateConfigFile(opts.config) : undefined;
      const client = await clientFor(opts, config);
      const handle = await resumePipeline(client, id, { config, from: opts.from, force: opts.force });
      process.stdout.write(
        `resumed pipeline ${handle.workflowId}\n  ${uiUrl(client, id, opts.address ?? config?.temporal.address)}\n`,
      );
      if (opts.follow) {
        const status = await follow(client, id);
        process.exitCode = status?.state === 'completed' ? 0 : 1;
      }
    },
  );
}
