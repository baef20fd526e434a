// Checkpoints in S3 and their commit protocol (see the architecture guide):
//   <prefix>/step-000200/{config.json, model.safetensors (or shards + index), train_state/ (DCP shards), trainer_state.json, rng.pt, ...}
//   <prefix>/step-000200/COMMIT.json   written last: {format, step, final, created_at, files: [{path, size, sha256}]}
// A folder without COMMIT.json does not exist for readers; a reader checks every listed size and sha256 before
// trusting a checkpoint and falls back to the previous committed step, saying why, when one does not match.
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { logger } from '../log';
import { joinUri, ObjectStore } from './s3';

export const COMMIT_FILE = 'COMMIT.json';

export interface CommitFile {
  path: string;
  size: number;
  sha256: string;
}

export interface CommitRecord {
  format: 1;
  step: number;
  final: boolean;
  created_at: string;
  files: CommitFile[];
}

export interface CommittedCheckpoint {
  uri: string;
  step: number;
  final: boolean;
  commit: CommitRecord;
}

export function stepFolder(step: number): string {
  return `step-${String(step).padStart(6, '0')}`;
}

export function checkpointUri(prefix: string, step: number): string {
  return joinUri(prefix, stepFolder(step));
}

function parseStepFolder(name: string): number | undefined {
  const m = /^step-(\d{6,})$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** A file to put in a checkpoint: its bytes, or a local path (streamed; multipart when large). */
export type CheckpointFile = { path: string; bytes: Buffer } | { path: string; localPath: string };

async function sha256OfFile(localPath: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(localPath)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** How much a reader checks: `full` hashes every byte (before loading), `size` only compares sizes (cheap polls). */
export type Verification = 'full' | 'size';

export class CheckpointStore {
  constructor(readonly store: ObjectStore) {}

  /**
   * Writes a checkpoint with the commit protocol: every file first, then COMMIT.json listing them. A crash at
   * any point before the last put leaves a folder readers ignore.
   */
  async write(
    prefix: string,
    step: number,
    files: CheckpointFile[],
    final = false,
  ): Promise<CommittedCheckpoint> {
    const uri = checkpointUri(prefix, step);
    const listed: CommitFile[] = [];
    for (const file of files) {
      if (file.path === COMMIT_FILE)
        throw new Error(`${COMMIT_FILE} is written by the commit protocol itself`);
      const target = joinUri(uri, file.path);
      if ('bytes' in file) {
        await this.store.upload(target, file.bytes);
        listed.push({
          path: file.path,
          size: file.bytes.length,
          sha256: createHash('sha256').update(file.bytes).digest('hex'),
        });
      } else {
        const size = statSync(file.localPath).size;
        const sha256 = await sha256OfFile(file.localPath);
        await this.store.upload(target, createReadStream(file.localPath));
        listed.push({ path: file.path, size, sha256 });
      }
    }
    const commit: CommitRecord = {
      format: 1,
      step,
      final,
      created_at: new Date().toISOString(),
      files: listed,
    };
    await this.store.putJson(joinUri(uri, COMMIT_FILE), commit);
    return { uri, step, final, commit };
  }

  /** Step folders under a prefix, split into committed (have COMMIT.json) and not, in ascending step order. */
  async scan(
    prefix: string,
  ): Promise<{ committed: number[]; uncommitted: number[]; sizes: Map<string, number> }> {
    const objects = await this.store.list(prefix);
    const base = prefix.replace(/\/+$/, '') + '/';
    const steps = new Set<number>();
    const committed = new Set<number>();
    const sizes = new Map<string, number>();
    for (const { uri, size } of objects) {
      const rel = uri.slice(base.length);
      const slash = rel.indexOf('/');
      if (slash < 0) continue;
      const step = parseStepFolder(rel.slice(0, slash));
      if (step === undefined) continue;
      steps.add(step);
      sizes.set(uri, size);
      if (rel.slice(slash + 1) === COMMIT_FILE) committed.add(step);
    }
    const ordered = [...steps].sort((a, b) => a - b);
    return {
      committed: ordered.filter((s) => committed.has(s)),
      uncommitted: ordered.filter((s) => !committed.has(s)),
      sizes,
    };
  }

  /**
   * Checks one committed checkpoint against its COMMIT.json: every listed file present with its size and, when
   * `full`, its sha256. Returns the problem as a sentence, or undefined when it can be trusted.
   */
  async verify(
    uri: string,
    how: Verification = 'full',
    sizes?: Map<string, number>,
  ): Promise<string | undefined> {
    const commit = await this.store.getJson<CommitRecord>(joinUri(uri, COMMIT_FILE));
    if (!commit) return `${uri} has no ${COMMIT_FILE} (not committed)`;
    if (commit.format !== 1 || !Array.isArray(commit.files))
      return `${uri}/${COMMIT_FILE} has an unknown format`;
    const actual = sizes ?? new Map((await this.store.list(uri)).map((o) => [o.uri, o.size]));
    for (const file of commit.files) {
      const fileUri = joinUri(uri, file.path);
      const size = actual.get(fileUri);
      if (size === undefined) return `${fileUri} is listed in ${COMMIT_FILE} but missing`;
      if (size !== file.size) return `${fileUri} has ${size} bytes, ${COMMIT_FILE} says ${file.size}`;
    }
    if (how === 'full') {
      for (const file of commit.files) {
        const fileUri = joinUri(uri, file.path);
        const stream = await this.store.getStream(fileUri);
        if (!stream) return `${fileUri} disappeared while being verified`;
        const hash = createHash('sha256');
        for await (const chunk of stream) hash.update(chunk as Buffer);
        const sha = hash.digest('hex');
        if (sha !== file.sha256)
          return `${fileUri} has sha256 ${sha.slice(0, 12)}…, ${COMMIT_FILE} says ${file.sha256.slice(0, 12)}…`;
      }
    }
    return undefined;
  }

  /**
   * The newest committed checkpoint that verifies, falling back step by step (with a warning naming the
   * problem) past any that do not. Undefined when there is none.
   */
  async latest(prefix: string, how: Verification = 'full'): Promise<CommittedCheckpoint | undefined> {
    const { committed, sizes } = await this.scan(prefix);
    for (const step of [...committed].reverse()) {
      const uri = checkpointUri(prefix, step);
      const problem = await this.verify(uri, how, sizes);
      if (problem === undefined) {
        const commit = (await this.store.getJson<CommitRecord>(joinUri(uri, COMMIT_FILE)))!;
        return { uri, step, final: commit.final, commit };
      }
      logger.warn(
        { checkpoint: uri },
        `skipping checkpoint: ${problem}; falling back to the previous committed step`,
      );
    }
    return undefined;
  }

  /**
   * Retention: keeps the newest `keepLast` committed checkpoints and every final one; deletes older committed
   * ones and uncommitted leftovers below the newest committed step (a folder above it may be a save in
   * progress). Returns the deleted checkpoint URIs.
   */
  async applyRetention(prefix: string, keepLast: number): Promise<string[]> {
    if (keepLast < 1) throw new Error(`retention keep_last must be at least 1, got ${keepLast}`);
    const { committed, uncommitted } = await this.scan(prefix);
    const newest = committed.at(-1);
    const doomed: number[] = [];
    for (const step of committed.slice(0, Math.max(0, committed.length - keepLast))) {
      const commit = await this.store.getJson<CommitRecord>(
        joinUri(checkpointUri(prefix, step), COMMIT_FILE),
      );
      if (!commit?.final) doomed.push(step);
    }
    if (newest !== undefined) doomed.push(...uncommitted.filter((s) => s < newest));
    const deleted: string[] = [];
    for (const step of doomed) {
      const uri = checkpointUri(prefix, step);
      // COMMIT.json goes first so that a half-finished delete leaves an uncommitted folder, never a "committed"
      // one with files missing.
      await this.store.deleteObject(joinUri(uri, COMMIT_FILE));
      await this.store.deletePrefix(uri);
      deleted.push(uri);
    }
    return deleted;
  }
}
