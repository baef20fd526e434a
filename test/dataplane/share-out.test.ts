// How the fleet deals the host out to N engines (src/dataplane/fleet.ts shareOut): CPU cores in blocks (the CPU
// host's shares, unchanged), and on a GPU host equal contiguous slices of the job's GPUs, engine i the i-th: its
// CUDA_VISIBLE_DEVICES (the width is its vLLM tensor-parallel size: trainer/tests/test_vllm_gpu_split.py).
import { shareOut } from '../../src/dataplane/fleet';

test('GPUs: engine i of N on G GPUs sees the i-th G/N of them', () => {
  const gpus = ['0', '1', '2', '3', '4', '5', '6', '7'];
  expect(shareOut(2, [], gpus).map((s) => s.gpus)).toEqual([
    ['0', '1', '2', '3'],
    ['4', '5', '6', '7'],
  ]);
  expect(shareOut(8, [], gpus).map((s) => s.gpus)).toEqual(gpus.map((g) => [g]));
  expect(shareOut(1, [], gpus)[0]?.gpus).toEqual(gpus);
  // the job's own ids (a scheduler handed it GPUs 4-7), with its cores dealt out beside them
  const shares = shareOut(2, [0, 1, 2, 3], ['4', '5', '6', '7']);
  expect(shares).toEqual([
    { cpus: [0, 1], gpus: ['4', '5'], threads: 2 },
    { cpus: [2, 3], gpus: ['6', '7'], threads: 2 },
  ]);
});

test('GPUs that do not split evenly are refused (validate rejects such configs first)', () => {
  expect(() => shareOut(3, [], ['0', '1', '2', '3'])).toThrow('3 engines cannot split 4 GPU(s) evenly');
  expect(() => shareOut(4, [], ['0', '1'])).toThrow('4 engines cannot split 2 GPU(s) evenly');
});

test('CPU hosts: cores in blocks, no GPUs', () => {
  expect(shareOut(2, [0, 1, 2])).toEqual([
    { cpus: [0, 1], gpus: null, threads: 2 },
    { cpus: [2], gpus: null, threads: 1 },
  ]);
  expect(shareOut(3, [0, 1]).map((s) => s.cpus)).toEqual([[0], [1], [0]]); // fewer cores: shared round-robin
  expect(shareOut(1, [])).toEqual([{ cpus: null, gpus: null, threads: 1 }]);
});
