// A Slurm job of several nodes ends with a node's protocol code, not srun's: srun reports the highest code of
// all nodes' tasks, and a node killed by --kill-on-bad-exit after another node's bad input reads 137. Each node's
// torchrun wrapper (trainer/trainflow_trainer/torchrun.py) writes its code to TRAINFLOW_NODE_EXIT_FILE and the
// batch script takes a recorded 2, else 75. The rendered script runs here for real under bash, with stand-ins for
// what needs a Slurm allocation (srun running the node line once per node, scontrol) and for the node's job.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { renderSlurmScript } from '../../src/launchers/slurm';

function script(file: string, text: string): void {
  writeFileSync(file, `#!/bin/bash\n${text}\n`);
  chmodSync(file, 0o755);
}

/** Runs the batch script of a 2-node job whose node 0 ends with `node0` and node 1 with `node1`. */
function runJob(node0: string, node1: string): { code: number; recorded: string } {
  const root = mkdtempSync(path.join(tmpdir(), 'slurm-codes-'));
  try {
    const bin = path.join(root, 'bin');
    const jobDir = path.join(root, 'job');
    spawnSync('mkdir', ['-p', bin, jobDir]);
    script(path.join(bin, 'scontrol'), 'echo node-a; echo node-b');
    // srun: the last argument is the node line; every node runs it; srun's code is the highest (128+signal when killed)
    script(
      path.join(bin, 'srun'),
      [
        'line="${@: -1}"; max=0',
        'for n in 0 1; do SLURM_NODEID=$n bash -c "$line"; c=$?; [ $c -gt $max ] && max=$c; done',
        'exit $max',
      ].join('\n'),
    );
    // the node's job: as its torchrun wrapper would end it (exit CODE, writing it), or killed (kill -9, nothing)
    script(
      path.join(bin, 'python'),
      [
        `case "$SLURM_NODEID" in 0) how='${node0}';; *) how='${node1}';; esac`,
        'if [ "$how" = kill ]; then kill -9 $$; fi',
        'printf "%s\\n" "$how" > "$TRAINFLOW_NODE_EXIT_FILE"; exit "$how"',
      ].join('\n'),
    );
    const text = renderSlurmScript({
      name: 'p.sft',
      argv: ['python', '-m', 'trainflow_trainer.job', '--spec', '/s.json'],
      cwd: root,
      env: {},
      jobDir,
      shape: { nodes: 2, gpusPerNode: 0, procsPerNode: 2 },
    });
    const file = path.join(root, 'job.sh');
    writeFileSync(file, text);
    writeFileSync(path.join(jobDir, 'node-1.exit'), '2\n'); // stale, from an earlier attempt: removed first
    const r = spawnSync('bash', [file], {
      encoding: 'utf8',
      env: { PATH: `${bin}:/usr/bin:/bin`, SLURM_JOB_NUM_NODES: '2', SLURM_JOB_NODELIST: 'node-[a-b]' },
    });
    return { code: r.status ?? -1, recorded: readFileSync(path.join(jobDir, 'exit_code'), 'utf8').trim() };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

test("a node's bad input is the job's, though srun reports the other node's kill (137)", () => {
  expect(runJob('2', 'kill')).toEqual({ code: 2, recorded: '2' });
  expect(runJob('1', '2')).toEqual({ code: 2, recorded: '2' }); // a crash beside it: still a bad input
  expect(runJob('75', '75')).toEqual({ code: 75, recorded: '75' });
});

test('without a recorded protocol code srun’s code stands (a killed node stays a retried crash)', () => {
  expect(runJob('1', 'kill')).toEqual({ code: 137, recorded: '137' });
  expect(runJob('0', '0')).toEqual({ code: 0, recorded: '0' });
});
