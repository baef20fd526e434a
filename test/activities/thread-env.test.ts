// resources.cpus_per_node → the job's CPU threads, shared by the node's processes (one per GPU under torchrun).
// The end-to-end check (a stage's job sees OMP_NUM_THREADS) is in test/pipeline/pipeline.test.ts.
import { threadEnv } from '../../activities/job';

test('cpus_per_node sets the threads of each process on the node', () => {
  expect(threadEnv({})).toEqual({});
  expect(threadEnv({ cpus_per_node: 1 })).toEqual({ OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' });
  expect(threadEnv({ cpus_per_node: 96, gpus_per_node: 8 }).OMP_NUM_THREADS).toBe('12');
  expect(threadEnv({ cpus_per_node: 4, gpus_per_node: 8 }).OMP_NUM_THREADS).toBe('1');
  expect(threadEnv({ cpus_per_node: 6, gpus_per_node: 0 }).OMP_NUM_THREADS).toBe('6');
  // procs_per_node ranks on a CPU host share its cores too
  expect(threadEnv({ cpus_per_node: 6, procs_per_node: 2 }).OMP_NUM_THREADS).toBe('3');
});
