// `trainflow run FILE`: one command on the local stack — starts the stack if it is down, runs the control
// worker and the launcher workers in this process, starts the pipeline and follows it to the end.
// Interrupted (Ctrl-C), the workers stop but the pipeline stays durable in Temporal and its job keeps running;
// `trainflow run FILE --id ID` (or any workers) picks it up again.
import type { Command } from 'commander';
import { validateConfigFile } from '../../config/checks';
import { startPipeline, storageOf } from '../../pipeline/client';
import { follow } from '../../pipeline/cli-support';
import { StorageUnreachableError } from '../../storage/s3';
import { connectClient, connectWorker, TemporalUnreachableError } from '../../temporal/connection';

const isLocal = (address: string) =>
  /^(127\.0\.0\.1|localhost)(:|$)/.test(address.replace(/^https?:\/\//, ''));

export function register(program: Command): void {
  program
    .command('run')
    .description('run a pipeline end to end on the local stack (starts the stack and workers as needed)')
    .argument('<file>', 'pipeline config (YAML)')
    .option('--id <id>', 'pipeline id; if a run with this id is in progress, serve and follow it')
    .action(async (file: string, opts: { id?: string }) => {
      // Every check that needs no job (schema, input files) runs before the stack or a worker starts.
      const config = await validateConfigFile(file);
      const { address, namespace } = config.temporal;
      if (config.storage.endpoint && isLocal(config.storage.endpoint.replace(/^https?:\/\//, ''))) {
        // On the local stack its own MinIO credentials are the default; any set in the environment win.
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { stackSettings } = require('../../dev/stack') as typeof import('../../dev/stack');
        const stack = stackSettings();
        process.env.AWS_ACCESS_KEY_ID ??= stack.accessKey;
        process.env.AWS_SECRET_ACCESS_KEY ??= stack.secretKey;
      }
      let client;
      try {
        client = await connectClient({ address, namespace });
        await storageOf(config).checkBucket(config.storage.uri);
      } catch (err) {
        const local =
          isLocal(address) &&
          (!config.storage.endpoint || isLocal(config.storage.endpoint.replace(/^https?:\/\//, '')));
        if (!(err instanceof TemporalUnreachableError || err instanceof StorageUnreachableError) || !local)
          throw err;
        process.stderr.write('the local stack is down: starting it (trainflow dev up)…\n');
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { up } = require('../../dev/stack') as typeof import('../../dev/stack');
        await up(undefined, { log: (line) => process.stderr.write(`${line}\n`) });
        client = await connectClient({ address, namespace });
      }

      // Loaded on demand (the worker package and workflow bundler take seconds to load); require, not
      // import(): tsx resolves a dynamic import() of a .ts path as ESM, without extension lookup.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const workersModule = require('../../../workers/build') as typeof import('../../../workers/build');
      const { createControlWorker, createLauncherWorker, jobCommandFromEnv } = workersModule;
      const connection = await connectWorker(address);
      const workers = [
        await createControlWorker({ connection, namespace, taskQueue: config.temporal.task_queue }),
      ];
      const pools = new Set(config.stages.map((s) => s.resources.pool));
      for (const name of pools) {
        const pool = config.pools[name];
        if (pool.launcher !== 'local') {
          process.stderr.write(
            `pool ${name} uses the ${pool.launcher} launcher: start its worker with \`trainflow worker --pool ${name}\`\n`,
          );
          continue;
        }
        workers.push(
          await createLauncherWorker({
            connection,
            namespace,
            taskQueue: pool.task_queue,
            job: { command: jobCommandFromEnv() },
          }),
        );
      }
      const runs = workers.map((w) => w.run());

      let id = opts.id;
      const running = id
        ? await client.workflow
            .getHandle(id)
            .describe()
            .then(
              (d) => d.status.name === 'RUNNING',
              () => false,
            )
        : false;
      if (!running) id = (await startPipeline(client, config, { id })).workflowId;
      process.stderr.write(`${running ? 'serving' : 'started'} pipeline ${id}\n`);

      let interrupted = false;
      let stopFollowing: () => void = () => undefined;
      const interruption = new Promise<undefined>((resolve) => (stopFollowing = () => resolve(undefined)));
      const onSignal = () => {
        interrupted = true;
        stopFollowing();
        process.stderr.write(
          `\ninterrupted: workers stopping. Pipeline ${id} stays durable and its job keeps running; continue with \`trainflow run ${file} --id ${id}\` or \`trainflow worker\`.\n`,
        );
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const ended = Promise.all(runs).then(() => undefined);
      const status = await Promise.race([follow(client, id!), ended, interruption]);
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      // Workers drain within their shutdown grace time; never let a stuck drain keep the terminal.
      await Promise.race([Promise.allSettled(runs), new Promise((r) => setTimeout(r, 20_000).unref())]);
      await connection.close();
      await client.connection.close();
      process.exitCode = interrupted ? 130 : status?.state === 'completed' ? 0 : 1;
      if (interrupted) process.exit(130);
    });
}
