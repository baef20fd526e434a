// The `local` launcher: the job runs as its own process group (a session, `setsid`) on the worker host, so it
// outlives a worker that dies and can be stopped as a whole. Its record lives in `<data dir>/jobs/<job name>/`:
//   spec.json   the job spec        job.json   {pid, pgid, start time, attempt, command}
//   job.log     stdout+stderr       exit_code  written by the wrapper when the job ends (kept across worker death)
// A tiny `sh` wrapper leads the group: it runs the job, then records its exit code. It traps TERM/INT/HUP with a
// no-op so it outlives the job on a cancel and still writes the code (the job itself gets default handlers:
// traps with a command are reset in children, only ignored signals would be inherited).
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  watch as watchDir,
  writeFileSync,
} from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { dataDir } from '../pipeline/paths';
import { followFile } from './logs';
import type { JobInfo, JobLaunch, Launcher, LogOptions } from './types';
import { jobShape, localCommand, type JobShape } from './cluster';
import { UserError } from '../errors';

interface JobRecord {
  pid: number;
  pgid: number;
  /** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot): tells our leader from a reused pid. */
  procStart: string | null;
  attempt: number;
  startedAt: string;
  command: string[];
}

const WRAPPER = `trap : TERM INT HUP
"$@"
code=$?
printf '=== trainflow: job exited with code %s at %s\\n' "$code" "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)"
printf '%s\\n' "$code" > "$TRAINFLOW_EXIT_FILE.tmp" && mv "$TRAINFLOW_EXIT_FILE.tmp" "$TRAINFLOW_EXIT_FILE"
exit "$code"`;

function procStat(pid: number): { state: string; pgrp: number; start: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0], pgrp: Number(rest[2]), start: rest[19] };
  } catch {
    return undefined;
  }
}

/** Live (non-zombie) processes of a process group, found through /proc (zombies do not count as alive). */
export function groupMembers(pgid: number): number[] {
  if (!existsSync('/proc/self/stat')) {
    try {
      process.kill(-pgid, 0);
      return [pgid];
    } catch {
      return [];
    }
  }
  const members: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X') members.push(Number(entry));
  }
  return members;
}

/**
 * The GPUs a job on this host would see: `nvidia-smi -L`'s GPU lines (0 without nvidia-smi or a driver), cut to
 * CUDA_VISIBLE_DEVICES' entries where the job's or the worker's environment sets it (nvidia-smi ignores it).
 * nvidia-smi rather than torch: it answers in milliseconds, torch's import takes seconds.
 */
export function visibleGpus(env: NodeJS.ProcessEnv = process.env): number {
  const r = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 10_000, env });
  const found = r.status === 0 ? r.stdout.split('\n').filter((l) => /^GPU \d+:/.test(l)).length : 0;
  return cutToVisible(found, env.CUDA_VISIBLE_DEVICES);
}

/** `found` GPUs as CUDA_VISIBLE_DEVICES leaves them (unset: all; empty: none; else its entries, at most found). */
export function cutToVisible(found: number, cudaVisibleDevices: string | undefined): number {
  if (cudaVisibleDevices === undefined) return found;
  const entries = cudaVisibleDevices.split(',').filter((e) => e.trim() !== '');
  return Math.min(found, entries.length);
}

/**
 * A job asking for more GPUs than this host shows cannot start here. The config cannot know (validate runs
 * anywhere; a local pool's gpus_per_node, when set, is checked there): the launch probes and refuses, naming the
 * field and the fix. The message is a UserError: the job activity fails the stage without retrying.
 */
export function checkLocalGpus(shape: JobShape, stage: string, visible: () => number): void {
  if (shape.gpusPerNode === 0) return;
  const n = visible();
  if (n >= shape.gpusPerNode) return;
  throw new UserError(
    `stage ${stage} resources.gpus_per_node: ${shape.gpusPerNode} GPU(s) asked but this host shows ${n} ` +
      `(nvidia-smi -L, cut to CUDA_VISIBLE_DEVICES); lower gpus_per_node to ${n}, ` +
      'or run the stage on a pool whose hosts have the GPUs (slurm, kubernetes)',
  );
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

export class LocalLauncher implements Launcher {
  readonly kind = 'local';
  readonly root: string;

  /** GPUs a job on this host sees (visibleGpus); a test stands in for a GPU host with its own count. */
  private readonly gpus: (env: NodeJS.ProcessEnv) => number;

  constructor(
    root = path.join(dataDir(), 'jobs'),
    options: { gpus?: (env: NodeJS.ProcessEnv) => number } = {},
  ) {
    this.root = root;
    this.gpus = options.gpus ?? visibleGpus;
  }

  jobDir(name: string): string {
    return path.join(this.root, name);
  }

  private readRecord(name: string): JobRecord | undefined {
    try {
      return JSON.parse(readFileSync(path.join(this.jobDir(name), 'job.json'), 'utf8')) as JobRecord;
    } catch {
      return undefined;
    }
  }

  private exitCode(name: string): number | undefined {
    try {
      const text = readFileSync(path.join(this.jobDir(name), 'exit_code'), 'utf8').trim();
      return text === '' ? undefined : Number(text);
    } catch {
      return undefined;
    }
  }

  private alive(record: JobRecord): boolean {
    const leader = procStat(record.pid);
    // The leader is ours only if its start time matches; a reused pid would lead a different group anyway.
    if (
      leader &&
      leader.pgrp === record.pgid &&
      record.procStart !== null &&
      leader.start !== record.procStart
    ) {
      return false;
    }
    return groupMembers(record.pgid).length > 0;
  }

  private info(name: string, record: JobRecord): JobInfo {
    const base = {
      name,
      id: String(record.pgid),
      attempt: record.attempt,
      startedAt: record.startedAt,
      logPath: path.join(this.jobDir(name), 'job.log'),
    };
    const code = this.exitCode(name);
    if (code !== undefined) return { ...base, state: 'exited', exitCode: code };
    if (this.alive(record)) return { ...base, state: 'running' };
    // The wrapper may have just written its code between the two reads above.
    const late = this.exitCode(name);
    if (late !== undefined) return { ...base, state: 'exited', exitCode: late };
    return { ...base, state: 'lost' };
  }

  async launch(job: JobLaunch): Promise<JobInfo> {
    const existing = await this.attach(job.name);
    if (existing?.state === 'running') {
      throw new Error(
        `job ${job.name} is already running (pgid ${existing.id}); attach to it or cancel it first`,
      );
    }
    const shape = jobShape(job.spec);
    const env = { ...process.env, ...job.env };
    const stage = (job.spec as { stage?: { name?: string } } | null)?.stage?.name ?? job.name;
    checkLocalGpus(shape, stage, () => this.gpus(env));
    const dir = this.jobDir(job.name);
    await mkdir(dir, { recursive: true });
    for (const stale of ['exit_code', 'exit_code.tmp', 'job.json'])
      rmSync(path.join(dir, stale), { force: true });
    const specPath = path.join(dir, 'spec.json');
    writeFileSync(specPath, `${JSON.stringify(job.spec, null, 2)}\n`);
    // procs_per_node > 1 (FSDP2 over gloo) or gpus_per_node > 1 (one rank per GPU, NCCL): torchrun starts the ranks
    const argv = localCommand(
      job.command.map((a) => a.replaceAll('{spec}', specPath)),
      shape,
    );
    const logPath = path.join(dir, 'job.log');
    const logFd = openSync(logPath, 'a');
    try {
      writeFileSync(
        logFd,
        `\n=== trainflow: attempt ${job.attempt} launching ${JSON.stringify(argv)} at ${new Date().toISOString()}\n`,
      );
      const child = spawn('/bin/sh', ['-c', WRAPPER, 'trainflow-job', ...argv], {
        cwd: job.cwd,
        env: { ...env, TRAINFLOW_EXIT_FILE: path.join(dir, 'exit_code') },
        stdio: ['ignore', logFd, logFd],
        detached: true, // setsid: its own session and process group, not killed with the worker
      });
      const pid = child.pid;
      if (pid === undefined) throw new Error(`could not start job ${job.name}: ${JSON.stringify(argv)}`);
      // Reaped by libuv when it exits; unref so a worker can shut down while a job runs on.
      child.on('error', () => undefined);
      child.unref();
      const record: JobRecord = {
        pid,
        pgid: pid,
        procStart: procStat(pid)?.start ?? null,
        attempt: job.attempt,
        startedAt: new Date().toISOString(),
        command: argv,
      };
      writeFileSync(path.join(dir, 'job.json.tmp'), JSON.stringify(record));
      renameSync(path.join(dir, 'job.json.tmp'), path.join(dir, 'job.json'));
      return this.info(job.name, record);
    } finally {
      closeSync(logFd);
    }
  }

  attach(name: string): Promise<JobInfo | undefined> {
    const record = this.readRecord(name);
    return Promise.resolve(record ? this.info(name, record) : undefined);
  }

  status(name: string): Promise<JobInfo | undefined> {
    return this.attach(name);
  }

  async cancel(name: string, graceMs: number): Promise<void> {
    const record = this.readRecord(name);
    if (!record) return;
    signalGroup(record.pgid, 'SIGTERM');
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && groupMembers(record.pgid).length > 0) await sleep(100);
    for (let i = 0; groupMembers(record.pgid).length > 0; i++) {
      signalGroup(record.pgid, 'SIGKILL');
      if (i > 100) throw new Error(`job ${name} (pgid ${record.pgid}) survived SIGKILL for 10 s`);
      await sleep(100);
    }
  }

  /** Wakes the watcher when the wrapper writes the exit code (a rename in the job's folder). */
  watch(name: string, onChange: () => void): () => void {
    try {
      const watcher = watchDir(this.jobDir(name), (_event, file) => {
        if (file === null || String(file).startsWith('exit_code')) onChange();
      });
      watcher.on('error', () => undefined);
      return () => watcher.close();
    } catch {
      return () => undefined; // no folder yet, or no inotify: polling alone will do
    }
  }

  async release(name: string): Promise<void> {
    const dir = this.jobDir(name);
    for (const f of ['job.json', 'exit_code']) rmSync(path.join(dir, f), { force: true });
    return Promise.resolve();
  }

  logs(name: string, options: LogOptions = {}): AsyncIterable<string> {
    return followFile(
      path.join(this.jobDir(name), 'job.log'),
      options,
      async () => (await this.status(name))?.state === 'running',
    );
  }
}
