// The real single-node Slurm cluster of the Slurm tests (infra/slurm/start-test-cluster.sh): started here when it
// is not up (and stopped after, by the file that started it), failing loudly when it cannot start.
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { repoRoot } from '../../src/pipeline/paths';

export const SLURM_DIR = process.env.TRAINFLOW_SLURM_DIR ?? '/tmp/trainflow-slurm';
process.env.SLURM_CONF = path.join(SLURM_DIR, 'slurm.conf');
// Jest gives test code its own copy of process.env; child processes get the real one unless `env` is passed.
export const slurmEnv = (): NodeJS.ProcessEnv => ({ ...process.env });

function up(): boolean {
  return (
    spawnSync('scontrol', ['ping'], { encoding: 'utf8', env: slurmEnv() }).stdout?.includes('UP') ?? false
  );
}

/** Starts the cluster when it is not running; returns whether this call started it. */
export function ensureSlurmCluster(): boolean {
  if (up()) return false;
  const result = spawnSync('bash', [path.join(repoRoot, 'infra/slurm/start-test-cluster.sh')], {
    encoding: 'utf8',
    env: { ...process.env, TRAINFLOW_SLURM_DIR: SLURM_DIR },
    timeout: 600_000,
  });
  if (result.status !== 0) {
    throw new Error(
      `the Slurm tests need a single-node Slurm cluster and infra/slurm/start-test-cluster.sh could not start one ` +
        `(exit ${result.status}):\n${result.stdout}\n${result.stderr}`,
    );
  }
  return true;
}

export function stopSlurmCluster(): void {
  execFileSync('bash', [path.join(repoRoot, 'infra/slurm/stop-test-cluster.sh')], {
    env: { ...process.env, TRAINFLOW_SLURM_DIR: SLURM_DIR },
    stdio: 'ignore',
  });
}

/** `scontrol show job` fields of a Slurm job (the cluster keeps finished jobs for an hour). */
export function slurmJob(jobId: string): Record<string, string> {
  const out = execFileSync('scontrol', ['show', 'job', '-o', jobId], { encoding: 'utf8', env: slurmEnv() });
  return Object.fromEntries(
    out
      .trim()
      .split(/\s+/)
      .map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)]),
  );
}
