// `trainflow worker [--pool NAME] [--config FILE]`: the control worker (workflows, light activities), or with
// --pool the launcher worker of that pool (runs and watches its jobs). Stops gracefully on SIGTERM/SIGINT;
// jobs keep running and the next worker re-attaches to them.
import type { Command } from 'commander';
import { loadConfigFile } from '../../config/load';
import { UserError } from '../../errors';
import { connectWorker, temporalAddress } from '../../temporal/connection';

export function register(program: Command): void {
  program
    .command('worker')
    .description('run the control worker, or with --pool a pool’s launcher worker, until SIGTERM/SIGINT')
    .option('--pool <name>', 'run the launcher worker of this pool instead of the control worker')
    .option('--config <file>', 'take the Temporal address, namespace and task queues from this config')
    .option(
      '--address <host:port>',
      'Temporal frontend (default: the config’s, $TEMPORAL_ADDRESS or 127.0.0.1:7233)',
    )
    .option('--task-queue <name>', 'override the task queue')
    .action(async (opts: { pool?: string; config?: string; address?: string; taskQueue?: string }) => {
      const config = opts.config ? loadConfigFile(opts.config) : undefined;
      const address = opts.address ?? config?.temporal.address ?? temporalAddress();
      const namespace = config?.temporal.namespace ?? process.env.TEMPORAL_NAMESPACE ?? 'default';
      // Loaded on demand (the worker package and workflow bundler take seconds to load); require, not
      // import(): tsx resolves a dynamic import() of a .ts path as ESM, without extension lookup.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const workersModule = require('../../../workers/build') as typeof import('../../../workers/build');
      const { createControlWorker, createLauncherWorker, jobCommandFromEnv } = workersModule;
      const connection = await connectWorker(address);
      let worker;
      if (opts.pool) {
        const pool = config?.pools[opts.pool];
        if (config && !pool)
          throw new UserError(
            `--pool ${opts.pool}: no such pool in ${opts.config} (pools: ${Object.keys(config.pools).join(', ')})`,
          );
        const taskQueue = opts.taskQueue ?? pool?.task_queue ?? `trainflow-pool-${opts.pool}`;
        worker = await createLauncherWorker({
          connection,
          namespace,
          taskQueue,
          job: { command: jobCommandFromEnv() },
        });
      } else {
        const taskQueue =
          opts.taskQueue ?? config?.temporal.task_queue ?? process.env.TRAINFLOW_TASK_QUEUE ?? 'trainflow';
        worker = await createControlWorker({ connection, namespace, taskQueue });
      }
      process.stderr.write(
        `${opts.pool ? `launcher worker (pool ${opts.pool})` : 'control worker'} on ${address}, task queue ${worker.options.taskQueue}; Ctrl-C to stop\n`,
      );
      await worker.run();
      await connection.close();
    });
}
