// Crash-test producer (the data plane's side): appends trajectories traj-0..N-1 to the ledger, skipping those
// already there (a restarted data plane re-finishes what it had not yet recorded). Killed with -9 at random.
// With SHIP_PREFIX set it ships to the local MinIO (bucket TRAINFLOW_BUCKET) every SHIP_INTERVAL_MS and,
// after the last record, shuts down cleanly (which ships the open segment's tail). GEN: machines lost so far.
import { S3Client } from '@aws-sdk/client-s3';
import { Ledger, type LedgerShipping } from '../../../src/dataplane/ledger';

const [dir, nArg] = process.argv.slice(2);
const n = Number(nArg);
const prefix = process.env.SHIP_PREFIX;
const gen = Number(process.env.GEN ?? 0);
const ship: LedgerShipping | undefined = prefix
  ? {
      client: new S3Client({
        endpoint: process.env.TRAINFLOW_S3_ENDPOINT ?? 'http://127.0.0.1:9000',
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: {
          accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'trainflow',
          secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'trainflow-secret',
        },
      }),
      bucket: process.env.TRAINFLOW_BUCKET ?? 'trainflow',
      prefix,
    }
  : undefined;
const ledger = new Ledger(dir, {
  segmentRecords: 25,
  splitWrites: true,
  ship,
  shipIntervalMs: Number(process.env.SHIP_INTERVAL_MS ?? 100),
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
// Up to this many ms between appends (a rollout finishing now and then); the loss loop slows it down so the
// producer is still running, and killable, through its twenty rounds.
const pace = Number(process.env.PRODUCER_PACE_MS ?? 12);
process.stdout.write('READY\n'); // the test kills at random moments counted from here, not from spawn

void (async () => {
  for (let i = 0; i < n; i++) {
    // After a lost machine (GEN > 0) work redone is a new trajectory with a new id (a re-run session), so a
    // consumer that had taken the lost record would be caught: its id is in no ledger any more.
    let done = false;
    for (let g = 0; g <= gen && !done; g++) done = ledger.has(g === 0 ? `traj-${i}` : `traj-${i}@${g}`);
    if (done) continue;
    const id = gen === 0 ? `traj-${i}` : `traj-${i}@${gen}`;
    ledger.append(id, {
      task_id: `task-${i % 7}`,
      reward: i % 2,
      tree: { tokens: Array.from({ length: 20 + (i % 50) }, (_, k) => k) },
    });
    await sleep(Math.random() * pace);
  }
  await ledger.shutdown();
  if (ledger.shipErrors.length) throw new Error(`shipping failed: ${String(ledger.shipErrors[0])}`);
  ship?.client.destroy();
})();
