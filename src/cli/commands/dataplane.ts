// `trainflow dataplane serve`: the rollout data plane's trajectory proxy (with its ledger) as a process.
import type { Command } from 'commander';
import { UserError } from '../../errors';
import { Ledger, readLedger, type LedgerShipping } from '../../dataplane/ledger';
import { TrajectoryProxy } from '../../dataplane/proxy';
import { parseS3Uri, s3Client } from '../../storage/s3';

interface ServeOptions {
  upstream: string[];
  host: string;
  port: string;
  adminToken?: string;
  upstreamAdminToken?: string;
  drift: string;
  ledgerDir?: string;
  ledgerS3?: string;
  segmentRecords: string;
}

const collect = (value: string, previous: string[]): string[] => previous.concat([value]);

export function register(program: Command): void {
  const dp = program
    .command('dataplane')
    .description('the rollout data plane (token-recording proxy, trajectory ledger)');
  dp.command('serve')
    .description('run the OpenAI-compatible trajectory proxy in front of inference servers')
    .requiredOption('--upstream <url>', 'inference server base URL (repeat for several)', collect, [])
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', '8100')
    .option('--admin-token <token>', 'admin token (default: $TRAINFLOW_DATAPLANE_ADMIN_TOKEN)')
    .option(
      '--upstream-admin-token <token>',
      "the inference servers' admin token (default: $TRAINFLOW_SERVE_ADMIN_TOKEN)",
    )
    .option(
      '--drift <mode>',
      'tokenisation drift: detect (count it) or fix (send the recorded ids)',
      'detect',
    )
    .option('--ledger-dir <dir>', 'append finished trajectories to this ledger folder')
    .option(
      '--ledger-s3 <uri>',
      'ship sealed ledger segments to s3://bucket/prefix (MinIO: TRAINFLOW_S3_ENDPOINT)',
    )
    .option('--segment-records <n>', 'records per ledger segment', '1000')
    .action(async (opts: ServeOptions) => {
      const adminToken = opts.adminToken ?? process.env.TRAINFLOW_DATAPLANE_ADMIN_TOKEN;
      if (!adminToken)
        throw new UserError('dataplane serve: give --admin-token or set TRAINFLOW_DATAPLANE_ADMIN_TOKEN');
      if (opts.drift !== 'detect' && opts.drift !== 'fix')
        throw new UserError(`dataplane serve: --drift must be detect or fix, got ${opts.drift}`);
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new UserError(`dataplane serve: --port must be 0..65535, got ${opts.port}`);
      for (const u of opts.upstream) {
        if (!/^https?:\/\/[^/]+/.test(u))
          throw new UserError(`dataplane serve: --upstream ${u} is not an http(s) URL`);
      }
      let ship: LedgerShipping | undefined;
      if (opts.ledgerS3) {
        if (!opts.ledgerDir)
          throw new UserError(
            'dataplane serve: --ledger-s3 needs --ledger-dir (the local segments it ships)',
          );
        const loc = parseS3Uri(opts.ledgerS3);
        const endpoint = process.env.TRAINFLOW_S3_ENDPOINT;
        ship = {
          client: s3Client({ endpoint, force_path_style: Boolean(endpoint) }),
          bucket: loc.bucket,
          prefix: loc.key,
        };
      }
      const ledger = opts.ledgerDir
        ? new Ledger(opts.ledgerDir, { segmentRecords: Number(opts.segmentRecords), ship })
        : null;
      const proxy = new TrajectoryProxy({
        upstreams: opts.upstream,
        adminToken,
        upstreamAdminToken: opts.upstreamAdminToken ?? process.env.TRAINFLOW_SERVE_ADMIN_TOKEN,
        drift: opts.drift,
        onTrajectory: ledger
          ? (t) => {
              ledger.append(t.trajectory_id, { kind: 'trajectory', ...t });
              return Promise.resolve();
            }
          : undefined,
        readTrajectories: ledger
          ? (after, limit) =>
              Promise.resolve({ entries: readLedger(ledger.dir, after, limit), acked: ledger.acked() })
          : undefined,
      });
      const bound = await proxy.listen(port, opts.host);
      process.stdout.write(
        `TRAINFLOW_DATAPLANE ${JSON.stringify({ host: opts.host, port: bound, upstreams: opts.upstream })}\n`,
      );
      const stop = async (): Promise<void> => {
        await proxy.close();
        if (ledger) {
          ledger.seal();
          await ledger.flushShipping();
          ledger.close();
        }
        process.exit(0);
      };
      process.once('SIGTERM', () => void stop());
      process.once('SIGINT', () => void stop());
    });
}
