// resources.procs_per_node: N training processes on a CPU host (FSDP2 over gloo). The local launcher starts them
// with a standalone torchrun; Slurm and Kubernetes render them as NPROC_PER_NODE of every node's torchrun; the
// config rejects it where it cannot mean anything. (The multi-rank training itself: trainer/tests/test_fsdp.py.)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseConfig } from '../../src/config/load';
import { worldSize } from '../../src/config/schema';
import { jobShape, localCommand, nodeCommand } from '../../src/launchers/cluster';
import { renderKubernetesManifests } from '../../src/launchers/kubernetes';
import { LocalLauncher } from '../../src/launchers/local';
import { renderSlurmScript } from '../../src/launchers/slurm';
import { problems } from '../config/problems';

const JOB = ['python', '-m', 'trainflow_trainer.job', '--spec', '/j/spec.json'];
const spec = (resources: object) => ({ stage: { name: 'a', resources } });

const config = (resources: string) => `api_version: trainflow/v1
metadata: { name: t }
storage: { uri: s3://trainflow/runs }
model: { tokenizer: { path: /tmp/tokenizer.json }, init: { preset: tiny } }
stages:
  - name: a
    kind: sft
    data: { sources: [{ path: /tmp/a.jsonl }] }
    train: { steps: 10, batch_size: 8 }
    resources: ${resources}
`;

describe('procs_per_node', () => {
  test('the local launcher runs a CPU job with procs_per_node > 1 under torchrun, one process otherwise', () => {
    expect(localCommand(JOB, jobShape(spec({ nodes: 1, gpus_per_node: 0, procs_per_node: 2 })))).toEqual([
      'python',
      '-m',
      'trainflow_trainer.torchrun', // torchrun, keeping a rank's exit code (2 bad input, 75 preempted)
      '--standalone',
      '--nnodes=1',
      '--nproc-per-node=2',
      '-m',
      'trainflow_trainer.job',
      '--spec',
      '/j/spec.json',
    ]);
    expect(localCommand(JOB, jobShape(spec({ nodes: 1, gpus_per_node: 0 })))).toEqual(JOB);
    expect(localCommand(['node', 'x.js'], jobShape(spec({ procs_per_node: 2 })))).toEqual(['node', 'x.js']);
  });

  test('Slurm and Kubernetes render it as the processes per node of a CPU job', () => {
    const shape = jobShape(spec({ nodes: 2, gpus_per_node: 0, procs_per_node: 4 }));
    expect(nodeCommand(JOB, shape)).toContain('--nproc-per-node=$NPROC_PER_NODE');
    const script = renderSlurmScript({ name: 'j', argv: JOB, cwd: '/w', env: {}, jobDir: '/j', shape });
    expect(script).toContain('export NPROC_PER_NODE=4');
    const pool = parseConfig(
      config('{ procs_per_node: 2 }').replace(
        'storage:',
        'pools: { default: { launcher: kubernetes, max_nodes: 2, kubernetes: { image: trainer:1 } } }\nstorage:',
      ),
      'x.yaml',
    ).pools.default;
    const m = renderKubernetesManifests({ name: 'j', argv: JOB, env: {}, spec: {}, attempt: 1, shape, pool });
    const env = m.job.spec?.template.spec?.containers[0]?.env ?? [];
    expect(env.find((e) => e.name === 'NPROC_PER_NODE')?.value).toBe('4');
    expect(env.find((e) => e.name === 'WORLD_SIZE')?.value).toBe('8');
    // one node, one process: no torchrun at all
    expect(nodeCommand(JOB, jobShape(spec({ nodes: 1, gpus_per_node: 0 })))).toEqual(JOB);
  });

  test('the world size counts it on CPU hosts and the batch must split over it', () => {
    expect(worldSize({ nodes: 2, gpus_per_node: 0, procs_per_node: 3 })).toBe(6);
    expect(worldSize({ nodes: 2, gpus_per_node: 4 })).toBe(8);
    const c = parseConfig(config('{ procs_per_node: 2 }'), 'x.yaml');
    expect(c.stages[0]?.resources.procs_per_node).toBe(2);
    expect(c.stages[0]?.train?.micro_batch_size).toBe(4); // 8 sequences over 2 processes
    expect(problems(config('{ procs_per_node: 3 }'))[0]).toMatch(
      /x\.yaml:\d+:\d+ stages\[0\]\.train\.batch_size: must be divisible by the job's 3 processes/,
    );
  });

  test('it is rejected with GPUs (one process per GPU) and above the cores requested', () => {
    expect(problems(config('{ gpus_per_node: 1, procs_per_node: 2 }')).join('\n')).toMatch(
      /stages\[0\]\.resources\.procs_per_node: a GPU job runs one process per GPU/,
    );
    expect(problems(config('{ cpus_per_node: 1, procs_per_node: 2 }')).join('\n')).toMatch(
      /stages\[0\]\.resources\.procs_per_node: more processes than the 1 CPU cores/,
    );
  });

  test('the FSDP2 policies are rejected on a one-process job, accepted on two', () => {
    const fsdp = (resources: string, f: string) =>
      config(resources).replace(
        'train: { steps: 10, batch_size: 8 }',
        `train: { steps: 10, batch_size: 8, fsdp: ${f} }`,
      );
    const one = problems(fsdp('{ nodes: 1 }', '{ mixed_precision: bf16, cpu_offload: true }')).join('\n');
    expect(one).toMatch(
      /stages\[0\]\.train\.fsdp\.mixed_precision: bf16 is an FSDP2 policy of multi-process jobs/,
    );
    expect(one).toMatch(/stages\[0\]\.train\.fsdp\.cpu_offload: CPU offload is an FSDP2 policy/);
    const two = parseConfig(
      fsdp('{ procs_per_node: 2 }', '{ mixed_precision: bf16, cpu_offload: true }'),
      'x.yaml',
    );
    expect(two.stages[0]?.train?.fsdp).toEqual({
      mixed_precision: 'bf16',
      activation_checkpointing: false,
      cpu_offload: true,
    });
  });

  test('the local launcher starts procs_per_node ranks of a real Python job, which meet over gloo', async () => {
    const root = mkdtempSync(path.join(tmpdir(), 'ppn-'));
    try {
      const script = path.join(root, 'ranks.py');
      writeFileSync(
        script,
        [
          'import os, torch, torch.distributed as dist',
          'dist.init_process_group("gloo")',
          't = torch.ones(1)',
          'dist.all_reduce(t)',
          "print(f\"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']} sum {t.item()}\", flush=True)",
          'dist.destroy_process_group()',
        ].join('\n'),
      );
      const python = path.join(__dirname, '..', '..', '.venv', 'bin', 'python');
      const launcher = new LocalLauncher(path.join(root, 'jobs'));
      await launcher.launch({
        name: 'ppn',
        command: [python, script, '--spec', '{spec}'],
        cwd: root,
        env: { OMP_NUM_THREADS: '1' },
        spec: spec({ nodes: 1, gpus_per_node: 0, procs_per_node: 2 }),
        attempt: 1,
      });
      let info = await launcher.status('ppn');
      for (let i = 0; i < 240 && info?.state === 'running'; i++) {
        await sleep(500);
        info = await launcher.status('ppn');
      }
      const log = readFileSync(path.join(root, 'jobs', 'ppn', 'job.log'), 'utf8');
      expect({ state: info?.state, exitCode: info?.exitCode }).toEqual({ state: 'exited', exitCode: 0 });
      expect(log).toContain('rank 0 of 2 sum 2.0');
      expect(log).toContain('rank 1 of 2 sum 2.0');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 150_000);
});
