// Where a sampler's statistics persist: a JSON object in S3 (or a local file, for runs without a store).
// Load at the start of a stage (continuing the pipeline's table), save after every step's observations and
// at checkpoints; `seed` merges another table in (RFT's pass rates into RL's sampler) exactly once.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors';
import { joinUri, ObjectStore, type StorageEndpoint } from '../storage/s3';
import { StatsTable } from './stats';

/** The default stats location of a pipeline: one table per pipeline name, shared by its stages and runs. */
export function defaultStatsUri(storageUri: string, pipelineName: string): string {
  return joinUri(storageUri, 'sampling', pipelineName, 'stats.json');
}

export class StatsStore {
  private readonly objects: ObjectStore;
  constructor(endpoint: StorageEndpoint = {}) {
    this.objects = new ObjectStore(endpoint);
  }

  /** The table at `uri`, or undefined when none was saved there yet. */
  async load(uri: string): Promise<StatsTable | undefined> {
    let raw: string | undefined;
    if (uri.startsWith('s3://')) {
      raw = (await this.objects.getBytes(uri))?.toString('utf8');
    } else {
      try {
        raw = readFileSync(localPath(uri), 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    if (raw === undefined) return undefined;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      throw new UserError(`${uri}: sampling statistics are not valid JSON (${(err as Error).message})`);
    }
    return StatsTable.fromJSON(parsed, uri);
  }

  /** The table at `uri`, or a fresh one seeded with `seed` (the PRNG seed) when none exists. */
  async loadOrCreate(uri: string, seed = 0): Promise<StatsTable> {
    return (await this.load(uri)) ?? new StatsTable(seed);
  }

  /** Writes the table (an S3 put is atomic; a local file is written aside and renamed). */
  async save(uri: string, table: StatsTable): Promise<void> {
    const body = JSON.stringify(table.toJSON(), null, 1);
    if (uri.startsWith('s3://')) {
      await this.objects.putBytes(uri, body, 'application/json');
      return;
    }
    const file = localPath(uri);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, body);
    renameSync(`${file}.tmp`, file);
  }

  /** Merges the table saved at `fromUri` into `table` (once per source table); false when there is none. */
  async seed(table: StatsTable, fromUri: string): Promise<boolean> {
    const other = await this.load(fromUri);
    return other !== undefined && table.merge(other);
  }
}

function localPath(uri: string): string {
  return uri.startsWith('file://') ? uri.slice('file://'.length) : uri;
}
