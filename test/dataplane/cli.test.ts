// `trainflow dataplane serve` as a process: sessions finished over the admin API land in the ledger.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin/trainflow.js');

test('serve: issue a key, finish the session, read the trajectory back from the ledger', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tf-dp-cli-'));
  const proc = spawn(
    process.execPath,
    [
      BIN,
      'dataplane',
      'serve',
      '--upstream',
      'http://127.0.0.1:9',
      '--port',
      '0',
      '--admin-token',
      'adm',
      '--ledger-dir',
      dir,
    ],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const port = await new Promise<number>((resolve, reject) => {
      readline.createInterface({ input: proc.stdout }).on('line', (l) => {
        const m = /^TRAINFLOW_DATAPLANE .*"port":(\d+)/.exec(l);
        if (m) resolve(Number(m[1]));
      });
      proc.once('exit', (code) => reject(new Error(`exited ${code}`)));
    });
    const base = `http://127.0.0.1:${port}`;
    const admin = { authorization: 'Bearer adm', 'content-type': 'application/json' };
    const issued = (await (
      await fetch(`${base}/admin/sessions`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ task_id: 'bugfix-7' }),
      })
    ).json()) as {
      session_id: string;
      key: string;
    };
    // An external driver finishes over HTTP with the verifier's per-test outcomes, as the in-process one does.
    const tests = { 'tests/test_add.py::test_add': 'passed', 'tests/test_clamp.py::test_clamp': 'failed' };
    const bad = await fetch(`${base}/admin/sessions/${issued.session_id}/finish`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ reward: 0.5, tests: { 'tests/test_add.py::test_add': true } }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/field 'tests'/);
    const fin = await fetch(`${base}/admin/sessions/${issued.session_id}/finish`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ reward: 0.5, tests }),
    });
    expect(fin.status).toBe(200);
    const read = (await (await fetch(`${base}/admin/trajectories?after=-1`, { headers: admin })).json()) as {
      entries: { seq: number; id: string; record: { task_id: string; reward: number } }[];
    };
    expect(read.entries).toHaveLength(1);
    expect(read.entries[0]).toMatchObject({
      seq: 0,
      id: issued.session_id,
      record: { task_id: 'bugfix-7', reward: 0.5, tests },
    });
    // A live agent's key cannot read trajectories; a finished session's key no longer works at all.
    const other = (await (
      await fetch(`${base}/admin/sessions`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ task_id: 'x' }),
      })
    ).json()) as { key: string };
    const asAgent = { authorization: `Bearer ${other.key}` };
    expect((await fetch(`${base}/admin/trajectories`, { headers: asAgent })).status).toBe(403);
    const finished = { authorization: `Bearer ${issued.key}` };
    expect((await fetch(`${base}/v1/session`, { headers: finished })).status).toBe(401);
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
  }
});

function serve(args: string[]): { proc: ChildProcess; port: Promise<number> } {
  const proc = spawn(
    process.execPath,
    [
      BIN,
      'dataplane',
      'serve',
      '--upstream',
      'http://127.0.0.1:9',
      '--port',
      '0',
      '--admin-token',
      'adm',
      ...args,
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = new Promise<number>((resolve, reject) => {
    readline.createInterface({ input: proc.stdout }).on('line', (l) => {
      const m = /^TRAINFLOW_DATAPLANE .*"port":(\d+)/.exec(l);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`exited ${code}`)));
  });
  return { proc, port };
}

test('serve with --ledger-s3: SIGTERM ships the open segment; a new machine (empty --ledger-dir) restores it', async () => {
  const bucket = process.env.TRAINFLOW_BUCKET ?? 'trainflow';
  const uri = `s3://${bucket}/test/dp-cli-${Date.now()}-${process.pid}`;
  const admin = { authorization: 'Bearer adm', 'content-type': 'application/json' };
  const first = serve([
    '--ledger-dir',
    fs.mkdtempSync(path.join(os.tmpdir(), 'tf-dp-cli-')),
    '--ledger-s3',
    uri,
    '--ship-interval',
    '0',
  ]);
  let base = `http://127.0.0.1:${await first.port}`;
  const ids: string[] = [];
  for (const task of ['t-1', 't-2']) {
    const s = (await (
      await fetch(`${base}/admin/sessions`, {
        method: 'POST',
        headers: admin,
        body: JSON.stringify({ task_id: task }),
      })
    ).json()) as { session_id: string };
    const fin = await fetch(`${base}/admin/sessions/${s.session_id}/finish`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ reward: 1 }),
    });
    expect(fin.status).toBe(200);
    ids.push(s.session_id);
  }
  first.proc.kill('SIGTERM');
  expect(await new Promise((r) => first.proc.once('exit', r))).toBe(0);
  // The first machine is gone with its disk; the second starts from S3 alone.
  const second = serve([
    '--ledger-dir',
    fs.mkdtempSync(path.join(os.tmpdir(), 'tf-dp-cli-')),
    '--ledger-s3',
    uri,
  ]);
  try {
    base = `http://127.0.0.1:${await second.port}`;
    const read = (await (await fetch(`${base}/admin/trajectories?after=-1`, { headers: admin })).json()) as {
      entries: { seq: number; id: string }[];
    };
    expect(read.entries.map((e) => [e.seq, e.id])).toEqual([
      [0, ids[0]],
      [1, ids[1]],
    ]);
  } finally {
    second.proc.kill('SIGTERM');
    await new Promise((r) => second.proc.once('exit', r));
  }
});

test('serve: bad input is one clear line and exit code 1', () => {
  const r = spawnSync(
    process.execPath,
    [BIN, 'dataplane', 'serve', '--upstream', 'nope', '--admin-token', 'x'],
    { cwd: ROOT, encoding: 'utf8' },
  );
  expect(r.status).toBe(1);
  expect(r.stderr).toContain('--upstream nope is not an http(s) URL');
  const idle = spawnSync(
    process.execPath,
    [
      BIN,
      'dataplane',
      'serve',
      '--upstream',
      'http://x:1',
      '--admin-token',
      'x',
      '--session-idle-timeout',
      '10',
    ],
    { cwd: ROOT, encoding: 'utf8' },
  );
  expect(idle.status).toBe(1);
  expect(idle.stderr).toContain(
    '--session-idle-timeout must be a duration such as 30s, 5m or 1h (0: off), got 10',
  );
});
