// gpus_per_node > 1 on the local launcher: one rank per GPU under a standalone torchrun (NCCL, trainer/train.py
// init_distributed), and a launch that refuses, naming the field and the fix, when the host shows fewer GPUs.
// No GPU host runs these tests: the command line and the refusals are tested; the probe's count comes from a
// stand-in (`gpus`), or from a stand-in nvidia-smi on PATH for the probe itself. The GPU run is untested on hardware.
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { jobShape, localCommand } from '../../src/launchers/cluster';
import { checkLocalGpus, cutToVisible, LocalLauncher, visibleGpus } from '../../src/launchers/local';

const JOB = ['/v/bin/python', '-m', 'trainflow_trainer.job', '--spec', '/j/spec.json'];
const spec = (resources: object) => ({ stage: { name: 'sft', resources } });

test('a local job with gpus_per_node > 1 runs one rank per GPU under the torchrun wrapper', () => {
  expect(localCommand(JOB, jobShape(spec({ gpus_per_node: 4 })))).toEqual([
    '/v/bin/python',
    '-m',
    'trainflow_trainer.torchrun',
    '--standalone',
    '--nnodes=1',
    '--nproc-per-node=4',
    '-m',
    'trainflow_trainer.job',
    '--spec',
    '/j/spec.json',
  ]);
  expect(localCommand(JOB, jobShape(spec({ gpus_per_node: 1 })))).toEqual(JOB); // one GPU: one process
});

test('the GPUs a job sees: nvidia-smi -L cut to CUDA_VISIBLE_DEVICES', () => {
  expect(cutToVisible(8, undefined)).toBe(8);
  expect(cutToVisible(8, '0,3')).toBe(2);
  expect(cutToVisible(8, '')).toBe(0);
  expect(cutToVisible(1, '0,1,2')).toBe(1); // more entries than GPUs: the GPUs count
  const bin = mkdtempSync(path.join(tmpdir(), 'fake-smi-'));
  try {
    // stand-in for a GPU host's nvidia-smi (its `-L` format)
    const smi = path.join(bin, 'nvidia-smi');
    writeFileSync(
      smi,
      '#!/bin/sh\nprintf "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)\\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-b)\\n"\n',
    );
    chmodSync(smi, 0o755);
    expect(visibleGpus({ PATH: bin })).toBe(2);
    expect(visibleGpus({ PATH: bin, CUDA_VISIBLE_DEVICES: '1' })).toBe(1);
    expect(visibleGpus({ PATH: '/nonexistent' })).toBe(0); // no nvidia-smi: no GPU
  } finally {
    rmSync(bin, { recursive: true, force: true });
  }
});

test('a launch asking more GPUs than the host shows is refused, naming the field and the fix', async () => {
  expect(() => checkLocalGpus(jobShape(spec({ gpus_per_node: 2 })), 'sft', () => 2)).not.toThrow();
  expect(() => checkLocalGpus(jobShape(spec({ gpus_per_node: 0 })), 'sft', () => 0)).not.toThrow();
  const root = mkdtempSync(path.join(tmpdir(), 'local-gpus-'));
  try {
    let seen: NodeJS.ProcessEnv | undefined;
    const launcher = new LocalLauncher(path.join(root, 'jobs'), {
      gpus: (env) => {
        seen = env;
        return 1;
      },
    });
    await expect(
      launcher.launch({
        name: 'p.sft',
        command: JOB,
        cwd: root,
        env: { CUDA_VISIBLE_DEVICES: '0' },
        spec: spec({ gpus_per_node: 4 }),
        attempt: 1,
      }),
    ).rejects.toThrow(
      'stage sft resources.gpus_per_node: 4 GPU(s) asked but this host shows 1 (nvidia-smi -L, cut to CUDA_VISIBLE_DEVICES); lower gpus_per_node to 1, or run the stage on a pool whose hosts have the GPUs (slurm, kubernetes)',
    );
    expect(seen?.CUDA_VISIBLE_DEVICES).toBe('0'); // the job's own environment decides what it would see
    expect(existsSync(path.join(root, 'jobs', 'p.sft'))).toBe(false); // nothing was started
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
