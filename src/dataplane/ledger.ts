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
// fails its checksum; the writer, on opening, cuts it off before appending. Sealed segments (full ones) are
// uploaded to S3 under PREFIX/segments/, and `restore` rebuilds an empty local folder from there.
import { createHash } from 'node:crypto';
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
  /** test hook: write each record in two syscalls so a kill -9 can tear it */
  splitWrites?: boolean;
}

const SEGMENT_RE = /^segment-(\d{12})\.log$/;

function checksum(json: string): string {
  return createHash('sha256').update(json).digest('hex').slice(0, 16);
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

function segmentName(firstSeq: number): string {
  return `segment-${String(firstSeq).padStart(12, '0')}.log`;
}

function listSegments(dir: string): { name: string; first: number }[] {
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

/** The single writer of a ledger folder. */
export class Ledger {
  private fd: number | null = null;
  private activeFirst = 0;
  private activeCount = 0;
  private nextSeq = 0;
  private readonly ids = new Map<string, number>();
  private readonly segmentRecords: number;
  private shipping: Promise<void> = Promise.resolve();
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
    }
    if (segs.length === 0 || this.activeCount >= this.segmentRecords) this.roll();
    else this.fd = fs.openSync(path.join(dir, segmentName(this.activeFirst)), 'a');
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
    return seq;
  }

  private roll(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      const sealed = segmentName(this.activeFirst);
      if (this.opts.ship) this.queueShip(sealed);
    }
    this.activeFirst = this.nextSeq;
    this.activeCount = 0;
    this.fd = fs.openSync(path.join(this.dir, segmentName(this.activeFirst)), 'a');
    fsyncDir(this.dir);
  }

  private queueShip(name: string): void {
    const ship = this.opts.ship!;
    const file = path.join(this.dir, name);
    this.shipping = this.shipping.then(async () => {
      try {
        await ship.client.send(
          new PutObjectCommand({
            Bucket: ship.bucket,
            Key: `${ship.prefix.replace(/\/$/, '')}/segments/${name}`,
            Body: fs.readFileSync(file),
          }),
        );
      } catch (err) {
        this.shipErrors.push(err);
      }
    });
  }

  /** Uploads every sealed segment not yet known to be in S3 and waits for all uploads. */
  async flushShipping(): Promise<void> {
    await this.shipping;
  }

  /** Seals the active segment (if it holds anything) so it ships; used at shutdown. */
  seal(): void {
    if (this.activeCount > 0) this.roll();
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

/** Rebuilds a local ledger folder from the segments shipped to S3 (after the local disk was lost). */
export async function restoreFromS3(dir: string, ship: LedgerShipping): Promise<number> {
  fs.mkdirSync(dir, { recursive: true });
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
