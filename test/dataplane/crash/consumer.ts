// Crash-test consumer (the trainer's side): reads after its checkpointed cursor, "trains" on a batch, then
// commits the new cursor together with what it learned from in one atomic checkpoint write. Killed with -9.
// With SHIPPED=1 it is offered only what the ledger has shipped to S3 (what a restore would bring back).
import fs from 'node:fs';
import { readLedger, readShipped, writeAtomic } from '../../../src/dataplane/ledger';

const [dir, ckpt, nArg] = process.argv.slice(2);
const n = Number(nArg);
const read = process.env.SHIPPED === '1' ? readShipped : readLedger;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Checkpoint {
  cursor: number;
  consumed: string[];
}

void (async () => {
  let state: Checkpoint = fs.existsSync(ckpt)
    ? (JSON.parse(fs.readFileSync(ckpt, 'utf8')) as Checkpoint)
    : { cursor: -1, consumed: [] };
  while (state.consumed.length < n) {
    const batch = read(dir, state.cursor, 1 + Math.floor(Math.random() * 4));
    if (batch.length === 0) {
      await sleep(5);
      continue;
    }
    await sleep(Math.random() * 15); // the training step
    state = { cursor: batch[batch.length - 1].seq, consumed: state.consumed.concat(batch.map((e) => e.id)) };
    writeAtomic(ckpt, JSON.stringify(state));
  }
})();
