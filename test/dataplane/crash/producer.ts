// Crash-test producer (the data plane's side): appends trajectories traj-0..N-1 to the ledger, skipping those
// already there (a restarted data plane re-finishes what it had not yet recorded). Killed with -9 at random.
import { Ledger } from '../../../src/dataplane/ledger';

const [dir, nArg] = process.argv.slice(2);
const n = Number(nArg);
const ledger = new Ledger(dir, { segmentRecords: 25, splitWrites: true });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

void (async () => {
  for (let i = 0; i < n; i++) {
    const id = `traj-${i}`;
    if (ledger.has(id)) continue;
    ledger.append(id, {
      task_id: `task-${i % 7}`,
      reward: i % 2,
      tree: { tokens: Array.from({ length: 20 + (i % 50) }, (_, k) => k) },
    });
    await sleep(Math.random() * 12);
  }
  ledger.close();
})();
