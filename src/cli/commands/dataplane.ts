// `trainflow dataplane serve`: the rollout data plane's trajectory proxy (with its ledger) as a process.
import type { Command } from 'commander';
import { UserError } from '../../errors';
import { parseDuration } from '../../config/units';
import { DATAPLANE_LINE_PREFIX, type DataplaneReady } from '../../contract/ready';
import { assembleDataPlane } from '../../dataplane/assemble';
import { ENGINE_KINDS, type EngineKind } from '../../dataplane/engines';
import { parseS3Uri } from '../../storage/s3';

interface ServeOptions {
  upstream: string[];
  host: string;
  port: string;
  adminToken?: string;
  upstreamAdminToken?: string;
  engine: string;
  drift: string;
  ledgerDir?: string;
  ledgerS3?: string;
  segmentRecords: string;
  shipInterval: string;
  sessionIdleTimeout: string;
}

/** A duration flag (`30s`, `5m`, `0` for off) in milliseconds, or a clear error naming the flag. */
function durationFlag(flag: string, value: string): number {
  const ms = value.trim() === '0' ? 0 : parseDuration(value);
  if (ms === undefined)
    throw new UserError(
      `dataplane serve: ${flag} must be a duration such as 30s, 5m or 1h (0: off), got ${value}`,
    );
  return ms;
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
    .option('--engine <kind>', 'what the upstreams are: local (the CPU server) or vllm', 'local')
    .option(
      '--drift <mode>',
      'tokenisation drift: detect (count it) or fix (send the recorded ids)',
      'detect',
    )
    .option('--ledger-dir <dir>', 'append finished trajectories to this ledger folder')
    .option(
      '--ledger-s3 <uri>',
      'ship ledger segments to s3://bucket/prefix (MinIO: TRAINFLOW_S3_ENDPOINT); an empty --ledger-dir is restored from there',
    )
    .option('--segment-records <n>', 'records per ledger segment', '1000')
    .option(
      '--ship-interval <duration>',
      "upload the open segment's new records this often (0: only sealed segments and at shutdown)",
      '5s',
    )
    .option(
      '--session-idle-timeout <duration>',
      'drop sessions without a request or finish for this long (their key stops working; 0: never)',
      '30m',
    )
    .action(async (opts: ServeOptions) => {
      const adminToken = opts.adminToken ?? process.env.TRAINFLOW_DATAPLANE_ADMIN_TOKEN;
      if (!adminToken)
        throw new UserError('dataplane serve: give --admin-token or set TRAINFLOW_DATAPLANE_ADMIN_TOKEN');
      if (!ENGINE_KINDS.includes(opts.engine as EngineKind))
        throw new UserError(`dataplane serve: --engine must be local or vllm, got ${opts.engine}`);
      if (opts.drift !== 'detect' && opts.drift !== 'fix')
        throw new UserError(`dataplane serve: --drift must be detect or fix, got ${opts.drift}`);
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535)
        throw new UserError(`dataplane serve: --port must be 0..65535, got ${opts.port}`);
      for (const u of opts.upstream) {
        if (!/^https?:\/\/[^/]+/.test(u))
          throw new UserError(`dataplane serve: --upstream ${u} is not an http(s) URL`);
      }
      const segmentRecords = Number(opts.segmentRecords);
      if (!Number.isInteger(segmentRecords) || segmentRecords < 1)
        throw new UserError(
          `dataplane serve: --segment-records must be a whole number >= 1, got ${opts.segmentRecords}`,
        );
      const shipIntervalMs = durationFlag('--ship-interval', opts.shipInterval);
      const sessionIdleMs = durationFlag('--session-idle-timeout', opts.sessionIdleTimeout);
      if (opts.ledgerS3 && !opts.ledgerDir)
        throw new UserError('dataplane serve: --ledger-s3 needs --ledger-dir (the local segments it ships)');
      if (opts.ledgerS3) parseS3Uri(opts.ledgerS3); // a bad URI is one clear line before anything starts
      // The ledger's one location is --ledger-s3 (no generations) and its consumers are not known here: an
      // empty --ledger-dir (a lost machine) is restored from whatever the S3 copy holds.
      const { proxy, ledger, origin } = await assembleDataPlane(
        {
          upstreams: opts.upstream,
          adminToken,
          upstreamAdminToken: opts.upstreamAdminToken ?? process.env.TRAINFLOW_SERVE_ADMIN_TOKEN,
          engine: opts.engine as EngineKind,
          drift: opts.drift,
          sessionIdleMs,
          offerTrajectories: true,
        },
        opts.ledgerDir
          ? {
              dir: opts.ledgerDir,
              s3Uri: opts.ledgerS3,
              generations: false,
              cursor: null,
              segmentRecords,
              shipIntervalMs,
            }
          : null,
      );
      if (origin) process.stderr.write(`dataplane serve: ledger ${origin.from}: ${origin.note}\n`);
      const bound = await proxy.listen(port, opts.host);
      const ready: DataplaneReady = {
        host: opts.host,
        port: bound,
        upstreams: opts.upstream,
        ...(ledger && origin ? { ledger_size: ledger.size, ledger_from: origin.from } : {}),
      };
      process.stdout.write(`${DATAPLANE_LINE_PREFIX}${JSON.stringify(ready)}\n`);
      const stop = async (): Promise<void> => {
        await proxy.close();
        if (ledger) await ledger.shutdown(); // the open segment's tail goes to S3 before exiting
        process.exit(0);
      };
      process.once('SIGTERM', () => void stop());
      process.once('SIGINT', () => void stop());
    });
}
