// `trainflow dev up | down | status`: the local stack (Temporal dev server + MinIO) on this machine.
import type { Command } from 'commander';
import { addresses, down, stackSettings, status, up } from '../../dev/stack';

const say = (line: string) => process.stdout.write(`${line}\n`);

export function register(program: Command): void {
  const dev = program.command('dev').description('the local stack: Temporal dev server and MinIO (S3)');

  dev
    .command('up')
    .description('build (once) and start the local stack; idempotent; waits until it is healthy')
    .option('--timeout <seconds>', 'how long to wait for health', '90')
    .option('--mlflow', 'also start an MLflow tracking server (install it once with `make setup-mlflow`)')
    .action(async (opts: { timeout: string; mlflow?: boolean }) => {
      const s = stackSettings();
      const a = await up(s, { timeoutMs: Number(opts.timeout) * 1000, log: say, mlflow: opts.mlflow });
      say('');
      say(`Temporal gRPC  ${a.temporal}`);
      say(`Temporal UI    ${a.temporalUi}`);
      say(`S3 (MinIO)     ${a.s3}  bucket ${a.bucket}  (key ${s.accessKey})`);
      if (opts.mlflow) say(`MLflow         ${a.mlflow}`);
      say(`data           ${s.dataDir}`);
      say('stop it with   npx trainflow dev down');
    });

  dev
    .command('down')
    .description('stop what `dev up` started (by pid); data is kept')
    .action(async () => {
      await down(stackSettings(), say);
    });

  dev
    .command('status')
    .description('tell which parts of the local stack run')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const s = stackSettings();
      const states = await status(s);
      if (opts.json) {
        say(JSON.stringify({ services: states, addresses: addresses(s) }, null, 2));
        return;
      }
      const a = addresses(s);
      const where = { temporal: `${a.temporal} (UI ${a.temporalUi})`, minio: a.s3, mlflow: a.mlflow };
      for (const st of states)
        say(
          `${st.name.padEnd(9)} ${st.state.padEnd(10)} ${st.pid ? `pid ${st.pid}  ` : ''}${where[st.name]}`,
        );
      if (states.some((st) => st.state !== 'running')) process.exitCode = 3;
    });
}
