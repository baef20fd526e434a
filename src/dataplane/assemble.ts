// The data plane assembled in one place: the trajectory proxy in front of the inference servers and the ledger
// it appends finished trajectories to, with the one rule for where an empty ledger folder comes from. Used by
// `trainflow dataplane serve` and by the RL driver (`trainflow rl-driver`), which differ only in the options.
//
// Where the ledger comes from (prepareLedger):
//   1. the folder holds segments: it is the ledger, used as it is (its consumer's cursor applies);
//   2. it is empty and its S3 copy is known: the copy is restored, and the consumer continues after its cursor
//      (a record is offered, so acknowledged, only once it is in S3: nothing acknowledged is lost);
//   3. otherwise a fresh ledger. Under `generations` (the RL driver) a fresh ledger gets a new generation, so
//      it never overwrites an earlier copy, and the consumer's cursor is void (-1). With a fixed S3 location
//      (`dataplane serve --ledger-s3`), a fresh ledger would overwrite the copy, so a copy that cannot be
//      read is an error instead, and an absent copy is simply an empty ledger.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors';
import { parseS3Uri, s3Client, type StorageEndpoint } from '../storage/s3';
import {
  Ledger,
  listSegments,
  readLedger,
  restoreFromS3,
  shippedThrough,
  type LedgerShipping,
} from './ledger';
import { TrajectoryProxy, type DriftMode } from './proxy';
import type { EngineKind } from './engines';

export interface LedgerPlacement {
  /** the local ledger folder */
  dir: string;
  /** s3://bucket/prefix the ledger ships to (and an empty folder restores from); absent: not shipped */
  s3Uri?: string | null;
  /** the S3 client's settings (the endpoint defaults to $TRAINFLOW_S3_ENDPOINT) */
  storage?: StorageEndpoint;
  /**
   * true: the ledger ships under PREFIX/<generation>/ (DIR/generation, made when the folder is new), and an
   * empty folder is restored only from `generation`; false: PREFIX is the ledger's one location.
   */
  generations: boolean;
  /** the generation the consumer's cursor refers to (from its checkpoint) */
  generation?: string | null;
  /**
   * The consumer's cursor: -1 when it consumed nothing (an empty folder is then a new ledger), null when the
   * consumer is not known here (`dataplane serve`: whatever the S3 copy holds is the ledger). A restored copy
   * must reach it.
   */
  cursor: number | null;
  segmentRecords?: number;
  shipIntervalMs?: number;
}

export interface LedgerOrigin {
  /** local: the folder's own ledger; s3: restored from its S3 copy; new: a fresh ledger */
  from: 'local' | 's3' | 'new';
  /** the cursor to read after (-1 for a new ledger: what the consumer trained stays trained); null: unknown */
  cursor: number | null;
  note: string;
}

/** The ledger folder's generation: made when the folder is new, kept with it (DIR/generation). */
function ledgerGeneration(dir: string): string {
  const file = path.join(dir, 'generation');
  if (fs.existsSync(file)) return fs.readFileSync(file, 'utf8').trim();
  fs.mkdirSync(dir, { recursive: true });
  const gen = `g-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomBytes(4).toString('hex')}`;
  fs.writeFileSync(file, `${gen}\n`);
  return gen;
}

/** Where the ledger ships; undefined when it has no S3 location. Makes the folder's generation if needed. */
export function ledgerShipping(p: LedgerPlacement): LedgerShipping | undefined {
  if (!p.s3Uri) return undefined;
  const loc = parseS3Uri(p.s3Uri);
  const endpoint = p.storage?.endpoint ?? process.env.TRAINFLOW_S3_ENDPOINT;
  return {
    client: s3Client({
      endpoint,
      region: p.storage?.region,
      force_path_style: p.storage?.force_path_style ?? Boolean(endpoint),
    }),
    bucket: loc.bucket,
    prefix: p.generations ? `${loc.key}/${ledgerGeneration(p.dir)}` : loc.key,
  };
}

/** Makes the ledger folder the one the consumer's cursor refers to (the rule at the top of this file). */
export async function prepareLedger(p: LedgerPlacement): Promise<LedgerOrigin> {
  const { dir, cursor } = p;
  if (listSegments(dir).length > 0)
    return { from: 'local', cursor, note: cursor === null ? dir : `${dir} (cursor ${cursor})` };
  if (cursor !== null && cursor < 0)
    return { from: 'new', cursor: -1, note: `${dir} is empty and nothing was consumed` };
  const fresh = (why: string): LedgerOrigin => {
    fs.rmSync(dir, { recursive: true, force: true }); // a new generation, never overwriting the old copy
    const voided = cursor === null ? '' : ` (the checkpoint's cursor ${cursor} is void)`;
    return { from: 'new', cursor: cursor === null ? null : -1, note: `${why}: a new ledger${voided}` };
  };
  if (!p.s3Uri && cursor === null)
    return { from: 'new', cursor: null, note: `${dir} is empty and the ledger is not shipped to S3` };
  if (!p.s3Uri || (p.generations && !p.generation))
    return fresh(`${dir} is empty and the checkpoint names no ledger shipped to S3`);
  fs.mkdirSync(dir, { recursive: true });
  if (p.generations) fs.writeFileSync(path.join(dir, 'generation'), `${p.generation}\n`);
  const ship = ledgerShipping(p)!;
  const where = `s3://${ship.bucket}/${ship.prefix}`;
  let segments: number;
  try {
    segments = await restoreFromS3(dir, ship);
  } catch (err) {
    if (!p.generations)
      throw new UserError(
        `${where} could not be restored into ${dir} (${(err as Error).message}); a new ledger there would ` +
          'overwrite that copy: check the S3 endpoint and credentials, or give another S3 location',
      );
    return fresh(`${where} could not be restored (${(err as Error).message})`);
  }
  const through = segments > 0 ? shippedThrough(dir) : -1;
  if (cursor !== null && through < cursor)
    return fresh(`${where} holds records up to seq ${through}, short of the checkpoint's cursor`);
  if (segments === 0 && cursor === null)
    return { from: 'new', cursor: null, note: `${dir} is empty and ${where} holds no segments` };
  const reading = cursor === null ? '' : `; reading after cursor ${cursor}`;
  return { from: 's3', cursor, note: `${segments} segment(s) from ${where}, seqs 0..${through}${reading}` };
}

/** Prepares the folder (prepareLedger) and opens its writer, shipping where the placement says. */
export async function openLedger(p: LedgerPlacement): Promise<{ ledger: Ledger; origin: LedgerOrigin }> {
  const origin = await prepareLedger(p);
  const ledger = new Ledger(p.dir, {
    ship: ledgerShipping(p),
    segmentRecords: p.segmentRecords,
    shipIntervalMs: p.shipIntervalMs,
  });
  return { ledger, origin };
}

export interface DataPlaneOptions {
  upstreams: string[];
  adminToken: string;
  upstreamAdminToken?: string;
  /** what the upstreams are (default local) */
  engine?: EngineKind;
  drift: DriftMode;
  /** drop sessions idle this long (ms; 0: never) */
  sessionIdleMs: number;
  /**
   * Offer the ledger over GET /admin/trajectories (`dataplane serve`: its consumers read there; the RL driver
   * hands batches to its parent instead). Only what is in S3 is offered (see ledger.ts).
   */
  offerTrajectories: boolean;
}

export interface DataPlane<L extends Ledger | null> {
  proxy: TrajectoryProxy;
  ledger: L;
  origin: L extends Ledger ? LedgerOrigin : LedgerOrigin | null;
  /** Stops taking requests, ships the open segment's tail and closes the ledger. */
  close(): Promise<void>;
}

/** The proxy (and, given a placement, its ledger): finished trajectories are appended before finish answers. */
export async function assembleDataPlane(o: DataPlaneOptions, p: LedgerPlacement): Promise<DataPlane<Ledger>>;
export async function assembleDataPlane(
  o: DataPlaneOptions,
  p: LedgerPlacement | null,
): Promise<DataPlane<Ledger | null>>;
export async function assembleDataPlane(
  o: DataPlaneOptions,
  p: LedgerPlacement | null,
): Promise<DataPlane<Ledger | null>> {
  const opened = p ? await openLedger(p) : null;
  const ledger = opened?.ledger ?? null;
  const proxy = new TrajectoryProxy({
    upstreams: o.upstreams,
    adminToken: o.adminToken,
    upstreamAdminToken: o.upstreamAdminToken,
    engine: o.engine,
    drift: o.drift,
    sessionIdleMs: o.sessionIdleMs,
    onTrajectory: ledger
      ? (t) => {
          ledger.append(t.trajectory_id, { kind: 'trajectory', ...t });
          return Promise.resolve();
        }
      : undefined,
    readTrajectories:
      ledger && o.offerTrajectories
        ? async (after, limit) => {
            await ledger.syncShipped();
            const upTo = Math.min(limit, ledger.shippedThrough - after);
            return { entries: upTo > 0 ? readLedger(ledger.dir, after, upTo) : [], acked: ledger.acked() };
          }
        : undefined,
  });
  return {
    proxy,
    ledger,
    origin: opened?.origin ?? null,
    close: async () => {
      await Promise.allSettled([proxy.close(), ledger?.shutdown()]);
    },
  };
}
