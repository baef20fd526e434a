// The local stack: Temporal's dev server (SQLite file under the data folder, so runs survive a restart) and
// MinIO as S3, built from the Go module proxy into a cache outside the checkout. `up` is idempotent and
// waits for health; `down` stops only what `up` started, identified by the pid files it wrote.
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { UserError } from '../errors';
import { devServerSearchAttributeArgs, SEARCH_ATTRIBUTES } from '../pipeline/search-attributes';

export const REPO_ROOT = resolve(__dirname, '..', '..');

export type StackSettings = {
  cacheDir: string;
  dataDir: string;
  host: string;
  temporalPort: number;
  temporalUiPort: number;
  minioPort: number;
  minioConsolePort: number;
  mlflowPort: number;
  accessKey: string;
  secretKey: string;
  bucket: string;
};

function envInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0 || n > 65535)
    throw new UserError(`${name}=${raw}: expected a TCP port number`);
  return n;
}

/** Settings from the environment, with the documented defaults. */
export function stackSettings(env = process.env): StackSettings {
  return {
    cacheDir: env.TRAINFLOW_CACHE ?? join(homedir(), '.cache', 'trainflow'),
    dataDir: resolve(env.TRAINFLOW_STACK_DIR ?? join(REPO_ROOT, '.data', 'stack')),
    host: '127.0.0.1',
    temporalPort: envInt(env, 'TRAINFLOW_TEMPORAL_PORT', 7233),
    temporalUiPort: envInt(env, 'TRAINFLOW_TEMPORAL_UI_PORT', 8233),
    minioPort: envInt(env, 'TRAINFLOW_MINIO_PORT', 9000),
    minioConsolePort: envInt(env, 'TRAINFLOW_MINIO_CONSOLE_PORT', 9001),
    mlflowPort: envInt(env, 'TRAINFLOW_MLFLOW_PORT', 5050),
    accessKey: env.AWS_ACCESS_KEY_ID ?? 'trainflow',
    secretKey: env.AWS_SECRET_ACCESS_KEY ?? 'trainflow-secret',
    bucket: env.TRAINFLOW_BUCKET ?? 'trainflow',
  };
}

export type ServiceName = 'temporal' | 'minio' | 'mlflow';
type ServiceSpec = {
  name: ServiceName;
  binary: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  ports: number[];
  healthy: () => Promise<boolean>;
};

function services(s: StackSettings): Record<ServiceName, ServiceSpec> {
  const bin = join(s.cacheDir, 'bin');
  return {
    temporal: {
      name: 'temporal',
      binary: join(bin, 'temporal'),
      args: [
        'server',
        'start-dev',
        '--db-filename',
        join(s.dataDir, 'temporal', 'temporal.db'),
        '--ip',
        s.host,
        '--port',
        String(s.temporalPort),
        '--ui-port',
        String(s.temporalUiPort),
        '--log-level',
        'warn',
        ...devServerSearchAttributeArgs(),
      ],
      env: process.env,
      ports: [s.temporalPort, s.temporalUiPort],
      healthy: () => temporalHealthy(s),
    },
    minio: {
      name: 'minio',
      binary: join(bin, 'minio'),
      args: [
        'server',
        join(s.dataDir, 'minio'),
        '--address',
        `${s.host}:${s.minioPort}`,
        '--console-address',
        `${s.host}:${s.minioConsolePort}`,
        '--quiet',
      ],
      env: {
        ...process.env,
        MINIO_ROOT_USER: s.accessKey,
        MINIO_ROOT_PASSWORD: s.secretKey,
        MINIO_BROWSER: 'on',
        MINIO_UPDATE: 'off',
      },
      ports: [s.minioPort, s.minioConsolePort],
      healthy: () => httpOk(`http://${s.host}:${s.minioPort}/minio/health/live`),
    },
    // optional (`dev up --mlflow`): its SQLite store and artifacts under the data folder, like the others
    mlflow: {
      name: 'mlflow',
      binary: mlflowBinary(s) ?? join(s.cacheDir, 'venvs', 'mlflow', 'bin', 'mlflow'),
      args: [
        'server',
        '--host',
        s.host,
        '--port',
        String(s.mlflowPort),
        '--workers',
        '1',
        '--backend-store-uri',
        `sqlite:///${join(s.dataDir, 'mlflow', 'mlflow.db')}`,
        '--default-artifact-root',
        join(s.dataDir, 'mlflow', 'artifacts'),
      ],
      env: process.env,
      ports: [s.mlflowPort],
      healthy: () => httpOk(`http://${s.host}:${s.mlflowPort}/health`),
    },
  };
}

/** The MLflow server `make setup-mlflow` installed (infra/dev/setup-mlflow.sh names its version). */
function mlflowBinary(s: StackSettings): string | undefined {
  const venvs = join(s.cacheDir, 'venvs');
  if (!existsSync(venvs)) return undefined;
  const found = readdirSync(venvs)
    .filter((d) => d.startsWith('mlflow-') && existsSync(join(venvs, d, '.complete')))
    .sort()
    .pop();
  return found === undefined ? undefined : join(venvs, found, 'bin', 'mlflow');
}

// ---- health ------------------------------------------------------------------------------------------------

async function httpOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch {
    return false;
  }
}

async function temporalHealthy(s: StackSettings): Promise<boolean> {
  // The UI answers only once the frontend is serving; the gRPC check below confirms the namespace exists.
  const { Connection } = await import('@temporalio/client');
  let connection: Awaited<ReturnType<typeof Connection.connect>> | undefined;
  try {
    connection = await Connection.connect({ address: `${s.host}:${s.temporalPort}`, connectTimeout: 1000 });
    await connection.workflowService.describeNamespace({ namespace: 'default' });
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

/**
 * Registers the pipeline's search attributes on a dev server whose database predates them: `start-dev
 * --search-attribute` registers only when it creates the database.
 */
// temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD (every trainflow attribute is a Keyword);
// the proto package is not a direct dependency.
const INDEXED_VALUE_TYPE_KEYWORD = 2;

async function ensureSearchAttributes(s: StackSettings): Promise<void> {
  const { Connection } = await import('@temporalio/client');
  const connection = await Connection.connect({
    address: `${s.host}:${s.temporalPort}`,
    connectTimeout: 5000,
  });
  try {
    const namespace = 'default';
    const known = await connection.operatorService.listSearchAttributes({ namespace });
    const missing = SEARCH_ATTRIBUTES.filter((key) => !known.customAttributes?.[key.name]);
    if (missing.length === 0) return;
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((key) => [key.name, INDEXED_VALUE_TYPE_KEYWORD])),
    });
  } finally {
    await connection.close().catch(() => undefined);
  }
}

function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen(port, host, () => server.close(() => done(true)));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- pid files ---------------------------------------------------------------------------------------------

type PidRecord = { pid: number; binary: string; startedAt: string };

const pidFile = (s: StackSettings, name: ServiceName) => join(s.dataDir, 'pids', `${name}.json`);
const logFile = (s: StackSettings, name: ServiceName) => join(s.dataDir, 'logs', `${name}.log`);

function readPid(s: StackSettings, name: ServiceName): PidRecord | undefined {
  try {
    return JSON.parse(readFileSync(pidFile(s, name), 'utf8')) as PidRecord;
  } catch {
    return undefined;
  }
}

/** True if the pid is alive and still runs our binary (a recycled pid belongs to someone else). */
function isOurs(record: PidRecord): boolean {
  try {
    process.kill(record.pid, 0);
  } catch {
    return false;
  }
  try {
    const cmdline = readFileSync(`/proc/${record.pid}/cmdline`, 'utf8').split('\0');
    return cmdline[0] === record.binary;
  } catch {
    return true; // no /proc (macOS): trust the live pid
  }
}

// ---- the verbs ---------------------------------------------------------------------------------------------

export type ServiceState = { name: ServiceName; state: 'running' | 'stopped' | 'unhealthy'; pid?: number };

export function ensureTools(s: StackSettings, log: (line: string) => void): void {
  const specs = services(s);
  if (Object.values(specs).every((spec) => existsSync(spec.binary))) return;
  log('building the local stack (Temporal CLI and MinIO) from the Go module proxy; this takes minutes, once');
  const result = spawnSync('bash', [join(REPO_ROOT, 'infra', 'dev', 'install-tools.sh')], {
    stdio: 'inherit',
    env: { ...process.env, TRAINFLOW_CACHE: s.cacheDir },
  });
  if (result.status !== 0) throw new UserError('building the local stack failed (see the output above)');
}

async function startService(
  s: StackSettings,
  spec: ServiceSpec,
  timeoutMs: number,
  log: (l: string) => void,
) {
  const existing = readPid(s, spec.name);
  if (existing && isOurs(existing)) {
    if (await waitHealthy(spec, timeoutMs)) {
      log(`${spec.name}: already running (pid ${existing.pid})`);
      return;
    }
    throw new UserError(
      `${spec.name} (pid ${existing.pid}) runs but is not healthy; see ${logFile(s, spec.name)}`,
    );
  }
  for (const port of spec.ports) {
    if (!(await portFree(s.host, port))) {
      throw new UserError(
        `${spec.name}: port ${s.host}:${port} is already taken by a process trainflow did not start; ` +
          `stop that process, or choose other ports with TRAINFLOW_TEMPORAL_PORT / TRAINFLOW_TEMPORAL_UI_PORT / ` +
          `TRAINFLOW_MINIO_PORT / TRAINFLOW_MINIO_CONSOLE_PORT`,
      );
    }
  }
  for (const dir of ['pids', 'logs', 'temporal', 'minio', 'mlflow'])
    mkdirSync(join(s.dataDir, dir), { recursive: true });
  const out = openSync(logFile(s, spec.name), 'a');
  const child = spawn(spec.binary, spec.args, { detached: true, stdio: ['ignore', out, out], env: spec.env });
  closeSync(out);
  if (child.pid === undefined) throw new UserError(`${spec.name}: could not start ${spec.binary}`);
  child.unref();
  writeFileSync(
    pidFile(s, spec.name),
    JSON.stringify({ pid: child.pid, binary: spec.binary, startedAt: new Date().toISOString() }),
  );
  if (!(await waitHealthy(spec, timeoutMs, child.pid))) {
    stopPid(s, spec.name);
    throw new UserError(
      `${spec.name} did not become healthy within ${timeoutMs / 1000} s; its log: ${logFile(s, spec.name)}`,
    );
  }
  log(`${spec.name}: started (pid ${child.pid})`);
}

async function waitHealthy(spec: ServiceSpec, timeoutMs: number, pid?: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await spec.healthy()) return true;
    if (pid !== undefined) {
      try {
        process.kill(pid, 0);
      } catch {
        return false; // exited: no point waiting
      }
    }
    await sleep(250);
  }
  return false;
}

function stopPid(s: StackSettings, name: ServiceName): boolean {
  const record = readPid(s, name);
  rmSync(pidFile(s, name), { force: true });
  if (!record || !isOurs(record)) return false;
  try {
    process.kill(-record.pid, 'SIGTERM'); // its process group: the dev server has no children, MinIO may
  } catch {
    process.kill(record.pid, 'SIGTERM');
  }
  return true;
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await sleep(100);
  }
  return false;
}

async function stopService(s: StackSettings, name: ServiceName, log: (l: string) => void): Promise<void> {
  const record = readPid(s, name);
  if (!stopPid(s, name) || !record) {
    log(`${name}: not running`);
    return;
  }
  if (!(await waitGone(record.pid, 15_000))) {
    try {
      process.kill(-record.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    await waitGone(record.pid, 5000);
  }
  log(`${name}: stopped (pid ${record.pid})`);
}

async function ensureBucket(s: StackSettings): Promise<void> {
  const client = new S3Client({
    endpoint: `http://${s.host}:${s.minioPort}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: s.accessKey, secretAccessKey: s.secretKey },
  });
  try {
    await client.send(new HeadBucketCommand({ Bucket: s.bucket }));
  } catch {
    await client.send(new CreateBucketCommand({ Bucket: s.bucket }));
  } finally {
    client.destroy();
  }
}

export function addresses(s: StackSettings) {
  return {
    temporal: `${s.host}:${s.temporalPort}`,
    temporalUi: `http://${s.host}:${s.temporalUiPort}`,
    s3: `http://${s.host}:${s.minioPort}`,
    bucket: `s3://${s.bucket}`,
    mlflow: `http://${s.host}:${s.mlflowPort}`,
  };
}

export async function up(
  s = stackSettings(),
  opts: { timeoutMs?: number; log?: (l: string) => void; mlflow?: boolean } = {},
) {
  const log = opts.log ?? (() => undefined);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  ensureTools(s, log);
  const specs = services(s);
  await startService(s, specs.minio, timeoutMs, log);
  await ensureBucket(s);
  await startService(s, specs.temporal, timeoutMs, log);
  await ensureSearchAttributes(s);
  if (opts.mlflow) {
    if (mlflowBinary(s) === undefined)
      throw new UserError(
        'MLflow is not installed: run `make setup-mlflow` (once), then `trainflow dev up --mlflow`',
      );
    await startService(s, specs.mlflow, timeoutMs, log);
  }
  return addresses(s);
}

export async function down(s = stackSettings(), log: (l: string) => void = () => undefined): Promise<void> {
  if (readPid(s, 'mlflow')) await stopService(s, 'mlflow', log);
  await stopService(s, 'temporal', log);
  await stopService(s, 'minio', log);
}

export async function status(s = stackSettings()): Promise<ServiceState[]> {
  const specs = services(s);
  const out: ServiceState[] = [];
  // MLflow is optional: listed only when `up --mlflow` started it
  const names: ServiceName[] = ['temporal', 'minio', ...(readPid(s, 'mlflow') ? ['mlflow' as const] : [])];
  for (const name of names) {
    const record = readPid(s, name);
    if (!record || !isOurs(record)) out.push({ name, state: 'stopped' });
    else out.push({ name, state: (await specs[name].healthy()) ? 'running' : 'unhealthy', pid: record.pid });
  }
  return out;
}

/** Stop and restart only the Temporal dev server (its SQLite file keeps every run): for durability tests. */
export async function stopTemporal(s = stackSettings()): Promise<void> {
  await stopService(s, 'temporal', () => undefined);
}

/** kill -9 of the Temporal dev server (no shutdown at all), for crash tests; `startTemporal` brings it back. */
export async function killTemporal(s = stackSettings()): Promise<void> {
  const record = readPid(s, 'temporal');
  rmSync(pidFile(s, 'temporal'), { force: true });
  if (!record || !isOurs(record)) return;
  try {
    process.kill(-record.pid, 'SIGKILL');
  } catch {
    process.kill(record.pid, 'SIGKILL');
  }
  await waitGone(record.pid, 5000);
}

export async function startTemporal(s = stackSettings(), timeoutMs = 60_000): Promise<void> {
  await startService(s, services(s).temporal, timeoutMs, () => undefined);
  await ensureSearchAttributes(s);
}
