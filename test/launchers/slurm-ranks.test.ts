// A 2-rank trainer job on a real single-node Slurm cluster (infra/slurm/start-test-cluster.sh, as slurm.test.ts):
// the batch script's srun runs `python -m trainflow_trainer.torchrun --nproc-per-node=$NPROC_PER_NODE ...`, both
// ranks of the real job entry meet a bad input (a job spec that fails the contract's validation) and exit 2, and
// the job ends with exit code 2 — not torchrun's 1 — so the activity fails the stage without a retry.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { repoRoot } from '../../src/pipeline/paths';
import { SlurmLauncher } from '../../src/launchers/slurm';
import { ensureSlurmCluster, stopSlurmCluster } from './slurm-cluster';

let startedCluster = false;
beforeAll(() => {
  startedCluster = ensureSlurmCluster();
}, 600_000);
afterAll(() => {
  if (startedCluster) stopSlurmCluster();
});

test('a bad input on both ranks of a Slurm job under the torchrun wrapper ends the job with exit code 2', async () => {
  const jobRoot = mkdtempSync(path.join(tmpdir(), 'slurm-ranks-'));
  const launcher = new SlurmLauncher({ jobRoot, queryIntervalMs: 300 });
  await launcher.launch({
    name: 'ranks.sft',
    command: [path.join(repoRoot, '.venv/bin/python'), '-m', 'trainflow_trainer.job', '--spec', '{spec}'],
    cwd: path.join(repoRoot, 'trainer'),
    env: { OMP_NUM_THREADS: '1', TRAINFLOW_DEVICE: 'cpu' },
    // no protocol, ids or model: every rank's load_spec refuses it (job.py: bad input, exit 2)
    spec: { stage: { name: 'sft', resources: { nodes: 1, procs_per_node: 2 } } },
    attempt: 1,
  });
  let info = await launcher.status('ranks.sft');
  for (let i = 0; i < 600 && info?.state === 'running'; i++) {
    await sleep(250);
    info = await launcher.status('ranks.sft');
  }
  const log = readFileSync(path.join(jobRoot, 'ranks.sft', 'job.log'), 'utf8');
  expect({ state: info?.state, exitCode: info?.exitCode }).toEqual({ state: 'exited', exitCode: 2 });
  const python = path.join(repoRoot, '.venv/bin/python');
  expect(readFileSync(path.join(jobRoot, 'ranks.sft', 'job.sh'), 'utf8')).toContain(
    `exec ${python} -m trainflow_trainer.torchrun --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE"`,
  );
  expect(log).toMatch(
    /trainflow: bad input: job spec \S+spec\.json: protocol: Field required.* \(rank [01]\)/,
  ); // whichever rank recorded first: torchrun stops the other
  expect(readFileSync(path.join(jobRoot, 'ranks.sft', 'node-0.exit'), 'utf8')).toBe('2\n');
  await launcher.release('ranks.sft');
  rmSync(jobRoot, { recursive: true, force: true });
}, 300_000);
