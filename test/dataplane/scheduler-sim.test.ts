// The automatic split as the simulation drives it (bench/dataplane-sim, the same TagScheduler, autoSplit and
// foldRates as the job): chosen from the rates measured, it settles where the workload puts it instead of
// drifting toward rollout, and no step trains a response staler than the bound. A few simulated steps of
// the documented 32-GPU workload (deterministic, ~3 s); the speed-ups themselves are the benchmark's.
import { calibrate, modes, simulate, WORKLOAD } from '../../bench/dataplane-sim/run';

test('dataplane-sim: the automatic split follows the measured rates and holds (no drift toward rollout)', () => {
  const { trainSecondsPerTokenGpu } = calibrate();
  const auto = modes('auto')[2];
  expect(auto.split).toBe('auto');
  const r = simulate(auto, trainSecondsPerTokenGpu, 8);
  expect(r.steps).toBe(8);
  // Step 0 has nothing measured: n - 1 train. From then on the rule gives 29 of 32 (the balance of the
  // measured rates): never all of them (rollout must not stop), never fewer than 28.
  expect(r.train_gpus.max).toBe(WORKLOAD.gpus - 1);
  expect(r.train_gpus.min).toBeGreaterThanOrEqual(28);
  expect(r.train_gpus.mean).toBeGreaterThan(28.5);
  expect(r.max_staleness_seen).toBeLessThanOrEqual(1);
  expect(r.stale_dropped).toBe(0); // doomed ones are aborted in flight, not decoded and then dropped
});
