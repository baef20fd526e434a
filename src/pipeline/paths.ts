// Where things live on a worker host: the repository root (for the trainer's venv and cwd) and the data folder
// (job records and logs of the local launcher), overridable with TRAINFLOW_DATA_DIR.
import { existsSync } from 'node:fs';
import path from 'node:path';

function findRepoRoot(): string {
  let dir = __dirname;
  while (dir !== path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'workflows'))) return dir;
    dir = path.dirname(dir);
  }
  return process.cwd();
}

export const repoRoot = findRepoRoot();

export function dataDir(): string {
  return path.resolve(process.env.TRAINFLOW_DATA_DIR ?? path.join(repoRoot, '.data'));
}

/** The command of a real stage: the trainer's job module in the venv, run from `trainer/`. */
export function trainerJobCommand(): { command: string[]; cwd: string } {
  return {
    command: [
      path.join(repoRoot, '.venv', 'bin', 'python'),
      '-m',
      'trainflow_trainer.job',
      '--spec',
      '{spec}',
    ],
    cwd: path.join(repoRoot, 'trainer'),
  };
}
