// `trainflow dev up | down | status` on a private stack (own ports and data folder, so the stack the other
// tests use is untouched): up is idempotent, down leaves nothing running, a taken port is a clear error.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stackSettings, up } from '../../src/dev/stack';

const run = promisify(execFile);
const CLI = join(__dirname, '..', '..', 'bin', 'trainflow.js');
const dataDir = mkdtempSync(join(tmpdir(), 'trainflow-stack-'));
const env = {
  ...process.env,
  TRAINFLOW_STACK_DIR: dataDir,
  TRAINFLOW_TEMPORAL_PORT: '27233',
  TRAINFLOW_TEMPORAL_UI_PORT: '28233',
  TRAINFLOW_MINIO_PORT: '29000',
  TRAINFLOW_MINIO_CONSOLE_PORT: '29001',
};
const cli = (...args: string[]) => run('node', [CLI, 'dev', ...args], { env, timeout: 110_000 });

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const server = createServer();
    server.once('error', () => done(false));
    server.listen(port, '127.0.0.1', () => server.close(() => done(true)));
  });
}

afterAll(async () => {
  await cli('down').catch(() => undefined);
  rmSync(dataDir, { recursive: true, force: true });
});

test('dev up twice in a row, then dev down leaves nothing running', async () => {
  const first = await cli('up');
  expect(first.stdout).toContain('minio: started');
  expect(first.stdout).toContain('temporal: started');
  expect(first.stdout).toContain('Temporal gRPC  127.0.0.1:27233');
  expect(first.stdout).toContain('Temporal UI    http://127.0.0.1:28233');
  expect(first.stdout).toContain('S3 (MinIO)     http://127.0.0.1:29000');
  expect(first.stdout).toContain('npx trainflow dev down');

  const second = await cli('up');
  expect(second.stdout).toMatch(/minio: already running \(pid \d+\)/);
  expect(second.stdout).toMatch(/temporal: already running \(pid \d+\)/);

  const status = JSON.parse((await cli('status', '--json')).stdout) as {
    services: { name: string; state: string; pid: number }[];
  };
  expect(status.services.map((s) => [s.name, s.state])).toEqual([
    ['temporal', 'running'],
    ['minio', 'running'],
  ]);
  const pids = status.services.map((s) => s.pid);
  // The second `up` started nothing new: the pids are those of the first.
  for (const name of ['minio', 'temporal']) {
    const pid = Number(new RegExp(`${name}: already running \\(pid (\\d+)\\)`).exec(second.stdout)?.[1]);
    expect(pids).toContain(pid);
  }

  const downOut = await cli('down');
  expect(downOut.stdout).toMatch(/temporal: stopped/);
  expect(downOut.stdout).toMatch(/minio: stopped/);
  for (const pid of pids) expect(alive(pid)).toBe(false);
  for (const port of [27233, 28233, 29000, 29001]) expect(await portFree(port)).toBe(true);

  const after = await cli('status').catch((err: { stdout: string; code: number }) => err);
  expect(after.stdout).toMatch(/temporal\s+stopped/);
  expect(after.stdout).toMatch(/minio\s+stopped/);
  expect((await cli('down')).stdout).toContain('temporal: not running');
});

test('a port already taken is a clear error, not a hang, and nothing is left running', async () => {
  const blocker: Server = createServer();
  await new Promise<void>((r) => blocker.listen(39000, '127.0.0.1', () => r()));
  const s = {
    ...stackSettings({ ...env, TRAINFLOW_MINIO_PORT: '39000', TRAINFLOW_TEMPORAL_PORT: '37233' }),
    dataDir: join(dataDir, 'blocked'),
  };
  try {
    await expect(up(s, { timeoutMs: 20_000 })).rejects.toThrow(
      /minio: port 127\.0\.0\.1:39000 is already taken by a process trainflow did not start/,
    );
    expect(await portFree(37233)).toBe(true); // Temporal was not started either
  } finally {
    blocker.close();
  }
});
