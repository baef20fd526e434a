// Test helpers: the fixture checkpoints and real Python inference servers (`python -m trainflow_trainer.serve`).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

export const ROOT = path.resolve(__dirname, '../..');
export const PYTHON = path.join(ROOT, '.venv/bin/python');
export const TRAINER = path.join(ROOT, 'trainer');
export const SERVER_ADMIN = 'server-admin';

export interface Fixture {
  tokenizer: string;
  checkpoints: string[];
  letters: Record<'X' | 'Y' | 'Z', number>;
  im_end: number;
  vocab_size: number;
}

export function buildFixture(): Fixture {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tf-dataplane-'));
  const out = execFileSync(PYTHON, ['-m', 'trainflow_trainer.serve.fixture', dir], {
    cwd: TRAINER,
    encoding: 'utf8',
  });
  return JSON.parse(out) as Fixture;
}

export interface RunningServer {
  url: string;
  port: number;
  proc: ChildProcess;
  stop: () => Promise<void>;
}

export async function startServer(checkpoint: string, extraArgs: string[] = []): Promise<RunningServer> {
  const proc = spawn(
    PYTHON,
    [
      '-m',
      'trainflow_trainer.serve',
      '--checkpoint',
      checkpoint,
      '--port',
      '0',
      '--admin-token',
      SERVER_ADMIN,
      ...extraArgs,
    ],
    {
      cwd: TRAINER,
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const port = await new Promise<number>((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout });
    rl.on('line', (line) => {
      if (line.startsWith('TRAINFLOW_SERVE ')) resolve((JSON.parse(line.slice(16)) as { port: number }).port);
    });
    proc.on('exit', (code) => reject(new Error(`inference server exited with ${code}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    proc,
    stop: () =>
      new Promise((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      }),
  };
}
