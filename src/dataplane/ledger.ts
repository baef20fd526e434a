// The trajectory ledger: an append-only, fsync'd log of finished trajectories, shipped to S3.
//
// Layout: DIR/segment-<first seq, 12 digits>.log, one record per line: `<checksum> <json>\n` where json is
// {seq, id, record}. Sequence numbers are dense (0, 1, 2, ...), so a consumer's position is one integer,
// the cursor: the seq of the last record it consumed. The trainer keeps its cursor in its checkpoint, in
// the same atomic commit as the weights that learned from those records; after any crash it resumes reading
// after its checkpointed cursor, so nothing acknowledged is offered twice and nothing unacknowledged is
// skipped. Appends are idempotent by trajectory id (a retried finish does not duplicate a trajectory).
//
// A crash can tear the last line (a write cut short). Readers ignore a final line that is incomplete or
// fails its checksum; the writer, on opening, cuts it off before appending.
//
// Shipping to S3 (PREFIX/segments/<segment name>): a sealed (full) segment is uploaded once; the open
// segment's complete records are uploaded again every `shipIntervalMs` when it grew, and on clean shutdown
// (`shutdown`), overwriting the same key (a segment only ever grows, so each upload is a longer prefix of
// the final one). A machine lost for good therefore loses at most one interval of records. After each upload
// DIR/shipped.json records the last seq known to be in S3. What is offered to a consumer must be in S3
// first (`syncShipped`, `readShipped`): a trainer never acknowledges a record that a restore from S3 would
// not bring back, so after a restore nothing acknowledged is offered again (the records after the restored
// end are appended anew, with new seqs after it) and nothing is lost that was acknowledged.
// `restoreFromS3` rebuilds an empty local folder from the uploaded segments.
import { hash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';

export interface LedgerEntry<T = unknown> {
  seq: number;
  id: string;
  record: T;
}

export interface LedgerShipping {
  client: S3Client;
  bucket: string;
  prefix: string;
}

export interface LedgerOptions {
  segmentRecords?: number;
  ship?: LedgerShipping;
  /** upload the open segment's new records this often (ms); 0: only when sealed and at shutdown */
  shipIntervalMs?: number;
  /** test hook: write each record in two syscalls so a kill -9 can tear it */
  splitWrites?: boolean;
}

const SEGMENT_RE = /^segment-(\d{12})\.log$/;

function checksum(json: string): string {
  return hash('sha256', json, 'hex').slice(0, 16);
}

export function encodeLine(entry: LedgerEntry): string {
  const json = JSON.stringify(entry);
  return `${checksum(json)} ${json}\n`;
}

/** Parses a segment's text; returns the valid entries and the byte length they span (a torn tail excluded). */
export function parseSegment(text: Buffer): { entries: LedgerEntry[]; validBytes: number } {
  const entries: LedgerEntry[] = [];
  let pos = 0;
  for (;;) {
    const nl = text.indexOf(0x0a, pos);
    if (nl < 0) break; // incomplete final line
    const line = text.subarray(pos, nl).toString('utf8');
    const sp = line.indexOf(' ');
    const json = line.slice(sp + 1);
    if (sp !== 16 || checksum(json) !== line.slice(0, 16)) break; // torn or corrupt: stop here
    entries.push(JSON.parse(json) as LedgerEntry);
    pos = nl + 1;
  }
  return { entries, validBytes: pos };
}

const SHIPPED_FILE = 'shipped.json';

function segmentName(firstSeq: number): string {
  return `segment-${String(firstSeq).padStart(12, '0')}.log`;
}

/** The segment files of a ledger folder, oldest first. */
export function listSegments(dir: string): { name: string; first: number }[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((name) => ({ name, m: SEGMENT_RE.exec(name) }))
    .filter((x) => x.m)
    .map((x) => ({ name: x.name, first: Number(x.m![1]) }))
    .sort((a, b) => a.first - b.first);
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The last seq known to be in S3 (DIR/shipped.json), or -1 when nothing was shipped yet. */
export function shippedThrough(dir: string): number {
  const file = path.join(dir, SHIPPED_FILE);
  if (!fs.existsSync(file)) return -1;
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { through: number }).through;
}

/** readLedger limited to what is in S3: what a consumer of a shipped ledger may be offered. */
export function readShipped(dir: string, after: number, limit = Infinity): LedgerEntry[] {
  const through = shippedThrough(dir);
  if (through <= after) return [];
  return readLedger(dir, after, Math.min(limit, through - after));
}

/** The single writer of a ledger folder. */
export class Ledger {
  private fd: number | null = null;
  private activeFirst = 0;
  private activeCount = 0;
  /** bytes of complete records in the active segment (what a tail upload sends) */
  private activeBytes = 0;
  private nextSeq = 0;
  private readonly ids = new Map<string, number>();
  private readonly segmentRecords: number;
  private shipping: Promise<void> = Promise.resolve();
  /** the last seq an upload has been queued for (uploads run one at a time, in order) */
  private queuedThrough = -1;
  private shipped = -1;
  private shipTimer: NodeJS.Timeout | null = null;
  shipErrors: unknown[] = [];

  constructor(
    readonly dir: string,
    private readonly opts: LedgerOptions = {},
  ) {
    this.segmentRecords = opts.segmentRecords ?? 1000;
    fs.mkdirSync(dir, { recursive: true });
    const segs = listSegments(dir);
    for (let i = 0; i < segs.length; i++) {
      const file = path.join(dir, segs[i].name);
      const buf = fs.readFileSync(file);
      const { entries, validBytes } = parseSegment(buf);
      if (validBytes < buf.length) {
        if (i !== segs.length - 1)
          throw new Error(`${file}: corrupt record at byte ${validBytes} in a sealed segment`);
        fs.truncateSync(file, validBytes); // a torn tail from a crash: cut it off before appending
      }
      for (const e of entries) {
        if (e.seq !== this.nextSeq) throw new Error(`${file}: expected seq ${this.nextSeq}, found ${e.seq}`);
        this.ids.set(e.id, e.seq);
        this.nextSeq++;
      }
      this.activeFirst = segs[i].first;
      this.activeCount = entries.length;
      this.activeBytes = validBytes;
    }
    if (opts.ship) {
      // Whatever a previous run appended but did not ship (it was killed) goes up now, oldest first.
      this.shipped = Math.min(shippedThrough(dir), this.nextSeq - 1);
      this.queuedThrough = this.shipped;
    }
    if (segs.length === 0 || this.activeCount >= this.segmentRecords) this.roll();
    else {
      this.fd = fs.openSync(path.join(dir, segmentName(this.activeFirst)), 'a');
      this.shipTail();
    }
    const every = opts.shipIntervalMs ?? 5000;
    if (opts.ship && every > 0) {
      this.shipTimer = setInterval(() => this.shipTail(), every);
      this.shipTimer.unref(); // a pending upload keeps the process alive; an idle timer does not
    }
  }

  get size(): number {
    return this.nextSeq;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Appends durably (written and fsync'd when this returns); idempotent by id. Returns the seq. */
  append(id: string, record: unknown): number {
    const known = this.ids.get(id);
    if (known !== undefined) return known;
    if (this.activeCount >= this.segmentRecords) this.roll();
    const seq = this.nextSeq;
    const line = Buffer.from(encodeLine({ seq, id, record }));
    if (this.opts.splitWrites) {
      const half = line.length >> 1;
      fs.writeSync(this.fd!, line, 0, half);
      fs.writeSync(this.fd!, line, half, line.length - half);
    } else {
      fs.writeSync(this.fd!, line);
    }
    fs.fsyncSync(this.fd!);
    this.ids.set(id, seq);
    this.nextSeq++;
    this.activeCount++;
    this.activeBytes += line.length;
    return seq;
  }

  private roll(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.activeFirst = this.nextSeq;
    this.activeCount = 0;
    this.activeBytes = 0;
    this.fd = fs.openSync(path.join(this.dir, segmentName(this.activeFirst)), 'a');
    fsyncDir(this.dir);
    this.shipTail(); // the segment just sealed (and anything an earlier failure left behind)
  }

  /**
   * Queues uploads for every record not yet queued: sealed segments whole, the open one up to its last
   * complete record. Called on each roll, every `shipIntervalMs`, and before offering or shutting down.
   */
  shipTail(): void {
    if (!this.opts.ship || this.nextSeq - 1 <= this.queuedThrough) return;
    const segs = listSegments(this.dir);
    for (let i = 0; i < segs.length; i++) {
      const open = segs[i].first === this.activeFirst;
      const last = open ? this.nextSeq - 1 : segs[i + 1].first - 1;
      if (last <= this.queuedThrough || last < segs[i].first) continue; // queued already, or empty
      this.queueUpload(segs[i].name, segs[i].first, open ? this.activeBytes : null, last);
    }
  }

  /**
   * Queues an upload of segment `name` (first seq `first`; its first `bytes` bytes, null: the whole file)
   * holding records up to `through`. DIR/shipped.json advances only over a gapless run of uploaded records;
   * after a failure the next shipTail queues again from the last gapless point.
   */
  private queueUpload(name: string, first: number, bytes: number | null, through: number): void {
    const ship = this.opts.ship!;
    const file = path.join(this.dir, name);
    this.queuedThrough = through;
    this.shipping = this.shipping.then(async () => {
      // An earlier upload failed: uploading this one would leave a hole in S3 (a restored ledger would
      // have a gap in its seqs); the next shipTail queues both again, in order.
      if (first - 1 > this.shipped) {
        this.queuedThrough = Math.min(this.queuedThrough, this.shipped);
        return;
      }
      try {
        let body = fs.readFileSync(file);
        if (bytes !== null) body = body.subarray(0, bytes);
        await ship.client.send(
          new PutObjectCommand({
            Bucket: ship.bucket,
            Key: `${ship.prefix.replace(/\/$/, '')}/segments/${name}`,
            Body: body,
          }),
        );
        if (through > this.shipped) {
          this.shipped = through;
          writeAtomic(path.join(this.dir, SHIPPED_FILE), JSON.stringify({ through }));
        }
      } catch (err) {
        this.shipErrors.push(err);
        this.queuedThrough = Math.min(this.queuedThrough, this.shipped);
      }
    });
  }

  /** The last seq known to be in S3 (-1: none; without shipping, every appended record counts). */
  get shippedThrough(): number {
    return this.opts.ship ? this.shipped : this.nextSeq - 1;
  }

  /** Waits for the uploads queued so far. */
  async flushShipping(): Promise<void> {
    await this.shipping;
  }

  /**
   * Ships everything appended so far and waits until it is in S3 (a no-op without shipping): call before
   * offering records to a consumer. Tries `attempts` times, then throws with the last upload error.
   */
  async syncShipped(attempts = 3): Promise<void> {
    for (let i = 0; i < attempts && this.shippedThrough < this.nextSeq - 1; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 500 * i));
      this.shipTail();
      await this.shipping;
    }
    if (this.shippedThrough < this.nextSeq - 1) {
      const last = this.shipErrors[this.shipErrors.length - 1];
      throw new Error(
        `ledger ${this.dir}: records up to seq ${this.nextSeq - 1} could not be shipped to ` +
          `s3://${this.opts.ship!.bucket}/${this.opts.ship!.prefix} (${(last as Error)?.message ?? String(last)})`,
      );
    }
  }

  /** Seals the active segment (if it holds anything) so it ships whole. */
  seal(): void {
    if (this.activeCount > 0) this.roll();
  }

  /** Clean shutdown: ships the open segment's tail, waits for every upload, closes. */
  async shutdown(): Promise<void> {
    if (this.shipTimer) clearInterval(this.shipTimer);
    this.shipTimer = null;
    this.shipTail();
    await this.shipping;
    this.close();
  }

  /**
   * Records how far the consumer got (monotonic; DIR/ack.json). The trainer's checkpoint holds the cursor
   * that matters; this copy lets operators and the proxy see consumption without the trainer.
   */
  ack(cursor: number): void {
    if (cursor >= this.size)
      throw new Error(`cannot acknowledge seq ${cursor}: the ledger holds ${this.size} records`);
    if (cursor > this.acked()) writeAtomic(path.join(this.dir, 'ack.json'), JSON.stringify({ cursor }));
  }

  acked(): number {
    const file = path.join(this.dir, 'ack.json');
    return fs.existsSync(file)
      ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { cursor: number }).cursor
      : -1;
  }

  read(after: number, limit = Infinity): LedgerEntry[] {
    return readLedger(this.dir, after, limit);
  }

  close(): void {
    if (this.shipTimer) clearInterval(this.shipTimer);
    this.shipTimer = null;
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** Reads entries with seq > after from a ledger folder (safe while a writer appends: torn tails are ignored). */
export function readLedger(dir: string, after: number, limit = Infinity): LedgerEntry[] {
  const segs = listSegments(dir);
  const out: LedgerEntry[] = [];
  for (let i = 0; i < segs.length && out.length < limit; i++) {
    const nextFirst = i + 1 < segs.length ? segs[i + 1].first : Infinity;
    if (nextFirst - 1 <= after) continue; // every record of this segment is at or before the cursor
    const { entries } = parseSegment(fs.readFileSync(path.join(dir, segs[i].name)));
    for (const e of entries) {
      if (e.seq > after) out.push(e);
      if (out.length >= limit) break;
    }
  }
  return out;
}

/**
 * Rebuilds an empty local ledger folder from the segments shipped to S3 (after the local disk was lost);
 * returns how many segments it fetched. DIR/shipped.json then says everything restored is in S3.
 */
export async function restoreFromS3(dir: string, ship: LedgerShipping): Promise<number> {
  fs.mkdirSync(dir, { recursive: true });
  if (listSegments(dir).length > 0)
    throw new Error(
      `cannot restore the ledger into ${dir}: it already holds segments (restore needs an empty folder)`,
    );
  const prefix = `${ship.prefix.replace(/\/$/, '')}/segments/`;
  let token: string | undefined;
  let n = 0;
  do {
    const page = await ship.client.send(
      new ListObjectsV2Command({ Bucket: ship.bucket, Prefix: prefix, ContinuationToken: token }),
    );
    for (const obj of page.Contents ?? []) {
      const name = obj.Key!.slice(prefix.length);
      if (!SEGMENT_RE.test(name)) continue;
      const res = await ship.client.send(new GetObjectCommand({ Bucket: ship.bucket, Key: obj.Key }));
      fs.writeFileSync(path.join(dir, name), Buffer.from(await res.Body!.transformToByteArray()));
      n++;
    }
    token = page.NextContinuationToken;
  } while (token);
  const segs = listSegments(dir);
  if (segs.length > 0) {
    const last = segs[segs.length - 1];
    const { entries } = parseSegment(fs.readFileSync(path.join(dir, last.name)));
    const through = entries.length ? entries[entries.length - 1].seq : last.first - 1;
    writeAtomic(path.join(dir, SHIPPED_FILE), JSON.stringify({ through }));
  }
  return n;
}

/** A consumer's position, written atomically (temp file, fsync, rename): the cursor the trainer checkpoints. */
export function writeAtomic(file: string, content: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(path.dirname(file));
}
