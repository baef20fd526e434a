// `trainflow run FILE`: one command on the local stack — starts the stack if it is down, runs the control
// worker and the launcher workers in this process, starts the pipeline and follows it to the end.
// Interrupted (Ctrl-C), the workers stop but the pipeline stays durable in Temporal and its job keeps running;
// `trainflow run FILE --id ID` (or any workers) picks it up again.
import { type Client, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { Command } from 'commander';
import { validateConfigFile } from '../../config/checks';
import { setTimeout as sleep } from 'node:timers/promises';
import { logger } from '../../log';
import type { PipelineState, PipelineStatus } from '../../pipeline/status';
import type { PipelineConfig } from '../../config/schema';
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

      const { connection, workers } = await startLocalWorkers(config);
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
      const interruption = new Promise<void>((resolve) => (stopFollowing = resolve));
      const onSignal = () => {
        interrupted = true;
        stopFollowing();
        process.stderr.write(
          `\ninterrupted: workers stopping. Pipeline ${id} stays durable and its job keeps running; continue with \`trainflow run ${file} --id ${id}\` or \`trainflow worker\`.\n`,
        );
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      // Workers that all stopped on their own (a fatal worker error) end the wait too: nothing would run the
      // pipeline any more. Their error, before the outcome is known, is this command's error.
      let workerError: Error | undefined;
      const ended = Promise.all(runs).then(
        () => undefined,
        (err: unknown) => void (workerError = err instanceof Error ? err : new Error(String(err))),
      );
      const stop = Promise.race([interruption, ended]);

      // Ordered: stop following, learn the outcome, and only then shut workers down and close connections.
      await follow(client, id!, process.stdout, stop);
      const outcome = interrupted ? undefined : await pipelineOutcome(client, id!, stop);
      if (workerError) throw workerError;
      if (!interrupted && !outcome)
        process.stderr.write(
          `the workers stopped before pipeline ${id} ended; it stays durable in Temporal\n`,
        );
      const code = interrupted ? 130 : outcome === 'completed' ? 0 : 1;
      // From here the exit status is known: nothing late (a gRPC retry timer firing after its connection closed,
      // a worker's drain error) may change it.
      holdExitCode(code);
      await shutDown(workers, runs, connection, client);
      process.exit(code);
    });
}

/**
 * The pipeline's outcome from its result (the status query can say `completed` a moment before the workflow
 * has recorded it). The result's long poll breaks while the server restarts: ask again until it answers.
 */
async function pipelineOutcome(
  client: Client,
  id: string,
  stop: Promise<unknown>,
): Promise<PipelineState | undefined> {
  let stopped = false;
  void stop.then(() => (stopped = true));
  const handle = client.workflow.getHandle(id);
  while (!stopped) {
    try {
      const result = (await handle.result()) as PipelineStatus;
      return result.state;
    } catch (err) {
      if (err instanceof WorkflowFailedError)
        return err.cause instanceof CancelledFailure ? 'cancelled' : 'failed';
      if (err instanceof WorkflowNotFoundError) throw err;
      logger.debug({ err }, 'waiting for the pipeline result: Temporal did not answer; asking again');
      await Promise.race([sleep(1000), stop]);
    }
  }
  return undefined;
}

/** After the outcome is known: a late error is logged (at debug) and the process exits with the outcome's code. */
function holdExitCode(code: number): void {
  process.exitCode = code;
  const late = (err: unknown) => {
    logger.debug({ err }, 'late error after the pipeline ended (ignored: the exit status is the outcome)');
    process.exit(code);
  };
  process.on('uncaughtException', late);
  process.on('unhandledRejection', late);
}

async function shutDown(
  workers: Worker[],
  runs: Promise<void>[],
  connection: NativeConnection,
  client: Client,
) {
  for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
  // Workers drain within their shutdown grace time; never let a stuck drain keep the terminal.
  await Promise.race([Promise.allSettled(runs), sleep(20_000, undefined, { ref: false })]);
  await connection.close().catch((err: unknown) => logger.debug({ err }, 'closing the worker connection'));
  // Every client call of this command has ended (follow and the result wait await theirs), so no retry is
  // pending on this channel when it closes.
  await client.connection.close().catch((err: unknown) => logger.debug({ err }, 'closing the client'));
}

/** The control worker and a launcher worker per local pool, in this process (other pools: a hint). */
async function startLocalWorkers(
  config: PipelineConfig,
): Promise<{ connection: NativeConnection; workers: Worker[] }> {
  const { address, namespace } = config.temporal;
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
  return { connection, workers };
}
