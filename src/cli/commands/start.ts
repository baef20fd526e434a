// `trainflow start FILE [--follow] [--id ID]`: validate the config, check Temporal and S3, start the pipeline.
import type { Command } from 'commander';
import { validateConfigFile } from '../../config/checks';
import { startPipeline, storageOf } from '../../pipeline/client';
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
      .command('start')
      .description('start a pipeline run from a config (workers must be running: `trainflow worker`)')
      .argument('<file>', 'pipeline config (YAML)')
      .option('--id <id>', 'pipeline id (default: NAME-YYYYMMDD-HHMMSS)')
      .option('--follow', 'show progress until the pipeline ends'),
  ).action(async (file: string, opts: ConnectionFlags & { id?: string; follow?: boolean }) => {
    const config = await validateConfigFile(file);
    const client = await clientFor(opts, config);
    await storageOf(config).checkBucket(config.storage.uri);
    const handle = await startPipeline(client, config, { id: opts.id });
    const address = opts.address ?? config.temporal.address;
    process.stdout.write(
      `started pipeline ${handle.workflowId}\n  ${uiUrl(client, handle.workflowId, address)}\n`,
    );
    if (!opts.follow) {
      process.stdout.write(`follow it with: trainflow status ${handle.workflowId} --watch\n`);
      return;
    }
    const status = await follow(client, handle.workflowId);
    process.exitCode = status?.state === 'completed' ? 0 : 1;
  });
}
