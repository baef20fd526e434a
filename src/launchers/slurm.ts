// The `slurm` launcher: one sbatch job per stage job, driven through the Slurm command line tools (sbatch, squeue,
// scontrol, sacct, scancel) so it works from any login node or worker host that can submit.
//
// Its record lives in `<job root>/<job name>/`, a folder the compute nodes must see too (a shared filesystem;
// TRAINFLOW_SLURM_JOB_DIR, default `<data dir>/slurm-jobs`):
//   spec.json  the job spec          job.sh     the batch script (`trainflow render-job` prints the same)
//   job.log    stdout+stderr of every node (sbatch --output, appended across attempts; `trainflow logs` reads it)
//   job.json   {slurm job id, attempt, start time}
//   exit_code  written by the batch script when its command ends (kept when Slurm has forgotten the job)
//
// The Slurm job's name is the launcher's job name, so a retry finds a job an earlier attempt submitted
// (`squeue --name`) even without the record. The end state comes from `scontrol show job` (finished jobs stay
// there for MinJobAge), then from `sacct` where accounting runs, then from the exit_code file; Slurm's end states
// map to the job protocol's exit codes, and a line saying why is appended to the log, so the activity's failure
// message (which quotes the log's last lines) names the cause:
//   COMPLETED/FAILED → the command's exit code        PREEMPTED, NODE_FAIL, BOOT_FAIL → 75 (preempted: retried)
//   TIMEOUT, DEADLINE → 124 (timeout: retried, resumes from its checkpoint)
//   OUT_OF_MEMORY → 137 (failure naming the memory limit)   CANCELLED → 143 (failure: retried)
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
  appendFileSync,
} from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolConfig } from '../config/schema';
import { dataDir } from '../pipeline/paths';
import {
  jobShape,
  MASTER_PORT,
  nodeCommand,
  procsPerNode,
  run,
  shellWord,
  slurmTime,
  withSpecPath,
  type JobShape,
  cachedStatus,
  type StatusCache,
} from './cluster';
import { followFile } from './logs';
import type { JobInfo, JobLaunch, Launcher, LogOptions } from './types';

export const EXIT_TIMEOUT = 124;
export const EXIT_OOM = 137;
export const EXIT_CANCELLED = 143;
const EXIT_PREEMPTED = 75;

export interface SlurmLauncherOptions {
  /** The pool's settings (partition, account, qos, time limit, container image, max nodes). */
  pool?: PoolConfig;
  /** Folder of the job records; must be visible from the compute nodes. */
  jobRoot?: string;
  /** Least time between two queries of Slurm for one job (the activity polls far more often). */
  queryIntervalMs?: number;
  /** Where the Slurm tools are, when not on PATH. */
  binDir?: string;
}

interface SlurmRecord {
  jobId: string;
  attempt: number;
  startedAt: string;
}

/** How a Slurm job stands, in the launcher's terms, plus a sentence on why it ended. */
export interface SlurmOutcome {
  state: JobInfo['state'];
  exitCode?: number;
  note?: string;
}

const LIVE_STATES = new Set([
  'PENDING',
  'CONFIGURING',
  'RUNNING',
  'COMPLETING',
  'SUSPENDED',
  'REQUEUED',
  'REQUEUE_FED',
  'REQUEUE_HOLD',
  'RESIZING',
  'SIGNALING',
  'STAGE_OUT',
  'STOPPED',
  'RESV_DEL_HOLD',
]);

/** `ExitCode=CODE:SIGNAL` of scontrol/sacct → a shell-style exit status (128 + signal when killed). */
export function parseExitCode(field: string | undefined): number | undefined {
  const m = /^(\d+):(\d+)$/.exec(field ?? '');
  if (!m) return undefined;
  const [code, signal] = [Number(m[1]), Number(m[2])];
  return signal > 0 ? 128 + signal : code;
}

/**
 * Maps a Slurm job state to the job protocol. `recorded` is the exit code the batch script wrote (the command's
 * own, most exact); `exitField` is Slurm's ExitCode; `cancelledByUs` tells our own cancel from someone else's.
 */
export function classifySlurmState(
  rawState: string,
  exitField: string | undefined,
  recorded: number | undefined,
  cancelledByUs = false,
): SlurmOutcome {
  const state = rawState.split(/[\s+]/)[0].toUpperCase(); // sacct says "CANCELLED by 0"; scontrol may add "+"
  if (LIVE_STATES.has(state)) return { state: 'running' };
  const slurmCode = parseExitCode(exitField);
  switch (state) {
    case 'COMPLETED':
      return { state: 'exited', exitCode: recorded ?? slurmCode ?? 0 };
    case 'FAILED':
    case 'SPECIAL_EXIT': {
      const code = recorded ?? slurmCode;
      // A batch script that failed before writing its code and with ExitCode 0:0 still failed.
      return { state: 'exited', exitCode: code === undefined || code === 0 ? 1 : code };
    }
    case 'PREEMPTED':
      return {
        state: 'exited',
        exitCode: EXIT_PREEMPTED,
        note: 'PREEMPTED: Slurm preempted the job for a higher-priority one (retried as a preemption)',
      };
    case 'NODE_FAIL':
      return {
        state: 'exited',
        exitCode: EXIT_PREEMPTED,
        note: 'NODE_FAIL: a node of the job failed (retried as a preemption)',
      };
    case 'BOOT_FAIL':
      return {
        state: 'exited',
        exitCode: EXIT_PREEMPTED,
        note: 'BOOT_FAIL: a node of the job failed to boot (retried as a preemption)',
      };
    case 'TIMEOUT':
      return {
        state: 'exited',
        exitCode: EXIT_TIMEOUT,
        note: 'TIMEOUT: Slurm killed the job at its time limit (timeout; retried, resuming from its last committed checkpoint)',
      };
    case 'DEADLINE':
      return {
        state: 'exited',
        exitCode: EXIT_TIMEOUT,
        note: 'DEADLINE: the job reached its --deadline (timeout; retried)',
      };
    case 'OUT_OF_MEMORY':
      return {
        state: 'exited',
        exitCode: EXIT_OOM,
        note: 'OUT_OF_MEMORY: a process of the job went over its memory limit; lower micro_batch_size or seq_len, or raise resources.memory_per_node',
      };
    case 'CANCELLED':
      return {
        state: 'exited',
        exitCode: recorded ?? EXIT_CANCELLED,
        note: cancelledByUs
          ? 'CANCELLED by trainflow (pipeline cancelled)'
          : 'CANCELLED from outside trainflow (scancel or an administrator); retried',
      };
    default:
      return {
        state: 'lost',
        note: `${state}: an end state trainflow does not know; treated as lost (retried)`,
      };
  }
}

/** `scontrol show job -o` output → its Key=Value fields (values without spaces, except the last few we skip). */
export function parseScontrolJob(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const token of text.trim().split(/\s+/)) {
    const eq = token.indexOf('=');
    if (eq > 0 && !(token.slice(0, eq) in fields)) fields[token.slice(0, eq)] = token.slice(eq + 1);
  }
  return fields;
}

export interface SlurmScriptInput {
  name: string;
  argv: string[];
  cwd: string;
  env: Record<string, string>;
  jobDir: string;
  shape: JobShape;
  pool?: PoolConfig;
}

/** The sbatch script of a job: resources as #SBATCH lines, the torchrun environment, one `srun` task per node. */
export function renderSlurmScript(input: SlurmScriptInput): string {
  const { shape, jobDir } = input;
  const slurm = input.pool?.slurm;
  const image = slurm?.container_image;
  const sbatch: string[] = [
    `--job-name=${input.name}`,
    `--nodes=${shape.nodes}`,
    '--ntasks-per-node=1',
    `--output=${path.join(jobDir, 'job.log')}`,
    '--open-mode=append',
    `--chdir=${input.cwd}`,
  ];
  if (shape.gpusPerNode > 0) sbatch.push(`--gres=gpu:${shape.gpusPerNode}`);
  if (shape.cpusPerNode) sbatch.push(`--cpus-per-task=${shape.cpusPerNode}`);
  if (shape.memoryPerNode) sbatch.push(`--mem=${Math.ceil(shape.memoryPerNode / 2 ** 20)}M`);
  if (slurm?.time_limit) {
    sbatch.push(`--time=${slurmTime(slurm.time_limit)}`);
    // Long jobs get SIGTERM 5 minutes before the limit: the trainer saves a checkpoint and exits 75.
    if (slurm.time_limit >= 30 * 60_000) sbatch.push('--signal=TERM@300');
  }
  if (slurm?.partition) sbatch.push(`--partition=${slurm.partition}`);
  if (slurm?.account) sbatch.push(`--account=${slurm.account}`);
  if (slurm?.qos) sbatch.push(`--qos=${slurm.qos}`);
  if (shape.nodes > 1) sbatch.push('--exclusive');
  for (const extra of slurm?.extra_sbatch_args ?? []) sbatch.push(extra);

  let argv = nodeCommand(input.argv, shape);
  // In a container the host's virtualenv is not there: the image's own python runs the same module.
  if (image && /^\/.*\/python[0-9.]*$/.test(argv[0] ?? '')) argv = ['python', ...argv.slice(1)];
  // Each node's torchrun wrapper (trainflow_trainer/torchrun.py) also writes the node's code where the batch script
  // reads it after srun: srun reports the highest code of all nodes (a node killed by --kill-on-bad-exit reads 137).
  const nodeExit = (node: string) => `${shellWord(path.join(jobDir, 'node-'))}${node}.exit`;
  const nodeLine = `export NODE_RANK=$SLURM_NODEID TRAINFLOW_NODE_EXIT_FILE=${nodeExit('$SLURM_NODEID')}; exec ${argv.map(shellWord).join(' ')}`;
  const srun = ['srun', '--ntasks-per-node=1', '--kill-on-bad-exit=1'];
  if (image) {
    srun.push(
      `--container-image=${image}`,
      `--container-mounts=${jobDir}:${jobDir}`,
      '--no-container-mount-home',
    );
  }

  const lines = [
    '#!/bin/bash',
    `# trainflow job ${input.name}: ${shape.nodes} node(s) x ${shape.gpusPerNode} GPU(s)${shape.gpuType ? ` (${shape.gpuType})` : ''}`,
    ...sbatch.map((a) => `#SBATCH ${a}`),
    '',
    '# torchrun rendezvous: node 0 of the allocation is the master; every node runs one torchrun (one process per GPU).',
    'nodes=( $(scontrol show hostnames "$SLURM_JOB_NODELIST") )',
    'export MASTER_ADDR="${nodes[0]}"',
    `export MASTER_PORT=${MASTER_PORT}`,
    'export NNODES="$SLURM_JOB_NUM_NODES"',
    `export NPROC_PER_NODE=${procsPerNode(shape)}`,
    'export WORLD_SIZE=$((NNODES * NPROC_PER_NODE))',
    `export TRAINFLOW_JOB_NAME=${shellWord(input.name)}`,
    ...Object.entries(input.env).map(([k, v]) => `export ${k}=${shellWord(v)}`),
    '',
    '# The batch shell outlives a SIGTERM (a no-op trap, reset in children) so it can record the exit code.',
    'trap : TERM INT HUP',
    `echo "=== trainflow: slurm job $SLURM_JOB_ID on $SLURM_JOB_NODELIST (master $MASTER_ADDR:$MASTER_PORT, $NNODES x $NPROC_PER_NODE) at $(date -u +%FT%TZ)"`,
    `rm -f ${nodeExit('*')}`,
    `${srun.join(' ')} bash -c ${shellWord(nodeLine)}`,
    'code=$?',
    "# a node's bad input (2), else its preemption (75), is the job's, whatever srun's highest code says",
    `if [ "$code" -ne 0 ]; then for want in 2 75; do if grep -qsx "$want" ${nodeExit('*')}; then code=$want; break; fi; done; fi`,
    `printf '%s\\n' "$code" > ${shellWord(path.join(jobDir, 'exit_code.tmp'))} && mv ${shellWord(path.join(jobDir, 'exit_code.tmp'))} ${shellWord(path.join(jobDir, 'exit_code'))}`,
    'exit "$code"',
    '',
  ];
  return lines.join('\n');
}

export class SlurmLauncher implements Launcher {
  readonly kind = 'slurm';
  readonly root: string;
  private readonly pool?: PoolConfig;
  private readonly queryIntervalMs: number;
  private readonly binDir?: string;
  private readonly cache: StatusCache = new Map();

  constructor(options: SlurmLauncherOptions = {}) {
    this.pool = options.pool;
    this.root = options.jobRoot ?? process.env.TRAINFLOW_SLURM_JOB_DIR ?? path.join(dataDir(), 'slurm-jobs');
    this.queryIntervalMs = options.queryIntervalMs ?? 5000;
    this.binDir = options.binDir;
  }

  jobDir(name: string): string {
    return path.join(this.root, name);
  }

  private tool(name: string): string {
    return this.binDir ? path.join(this.binDir, name) : name;
  }

  private readRecord(name: string): SlurmRecord | undefined {
    try {
      return JSON.parse(readFileSync(path.join(this.jobDir(name), 'job.json'), 'utf8')) as SlurmRecord;
    } catch {
      return undefined;
    }
  }

  private writeRecord(name: string, record: SlurmRecord): void {
    const file = path.join(this.jobDir(name), 'job.json');
    writeFileSync(`${file}.tmp`, JSON.stringify(record));
    renameSync(`${file}.tmp`, file);
  }

  private recordedExit(name: string): number | undefined {
    try {
      const text = readFileSync(path.join(this.jobDir(name), 'exit_code'), 'utf8').trim();
      return text === '' ? undefined : Number(text);
    } catch {
      return undefined;
    }
  }

  /** The batch script and spec of a launch, without submitting (what `trainflow render-job` prints). */
  render(job: JobLaunch): { script: string; specPath: string } {
    const dir = this.jobDir(job.name);
    const specPath = path.join(dir, 'spec.json');
    const script = renderSlurmScript({
      name: job.name,
      argv: withSpecPath(job, specPath),
      cwd: job.cwd,
      env: job.env,
      jobDir: dir,
      shape: jobShape(job.spec, this.pool),
      pool: this.pool,
    });
    return { script, specPath };
  }

  async launch(job: JobLaunch): Promise<JobInfo> {
    const existing = await this.attach(job.name);
    if (existing?.state === 'running') {
      throw new Error(
        `job ${job.name} is already running (slurm job ${existing.id}); attach to it or cancel it first`,
      );
    }
    const dir = this.jobDir(job.name);
    mkdirSync(dir, { recursive: true });
    for (const stale of ['exit_code', 'exit_code.tmp', 'job.json', 'cancelled', 'classified']) {
      rmSync(path.join(dir, stale), { force: true });
    }
    const { script, specPath } = this.render(job);
    writeFileSync(specPath, `${JSON.stringify(job.spec, null, 2)}\n`);
    const scriptPath = path.join(dir, 'job.sh');
    writeFileSync(scriptPath, script, { mode: 0o755 });
    appendFileSync(
      path.join(dir, 'job.log'),
      `\n=== trainflow: attempt ${job.attempt} submitting ${scriptPath} at ${new Date().toISOString()}\n`,
    );
    // --export=ALL (the default): the job gets the worker's environment, S3 credentials included.
    const out = await run(this.tool('sbatch'), ['--parsable', scriptPath], {
      env: { ...process.env, ...job.env },
    });
    const jobId = out.trim().split(';')[0];
    if (!/^\d+$/.test(jobId))
      throw new Error(`sbatch did not print a job id for ${job.name}: ${JSON.stringify(out)}`);
    const record: SlurmRecord = { jobId, attempt: job.attempt, startedAt: new Date().toISOString() };
    this.writeRecord(job.name, record);
    this.cache.delete(job.name);
    return {
      name: job.name,
      id: jobId,
      state: 'running',
      attempt: job.attempt,
      startedAt: record.startedAt,
      logPath: path.join(dir, 'job.log'),
    };
  }

  /** The live Slurm job of that name submitted by this user, if any (a record lost, or never written). */
  private async findByName(name: string): Promise<string | undefined> {
    const out = await run(this.tool('squeue'), ['--me', `--name=${name}`, '--noheader', '--format=%i %T']);
    for (const line of out.trim().split('\n')) {
      const [id, state] = line.trim().split(/\s+/);
      if (id && state && LIVE_STATES.has(state)) return id;
    }
    return undefined;
  }

  /** The job's state from Slurm: scontrol (recent jobs), then sacct (accounting), else undefined. */
  private async query(jobId: string): Promise<{ state: string; exitCode?: string } | undefined> {
    try {
      const f = parseScontrolJob(await run(this.tool('scontrol'), ['show', 'job', '-o', jobId]));
      if (f.JobState) return { state: f.JobState, exitCode: f.ExitCode };
    } catch (err) {
      if (!/Invalid job id/i.test(String(err))) throw err;
    }
    try {
      const out = await run(this.tool('sacct'), ['-n', '-X', '-P', '-j', jobId, '--format=State,ExitCode']);
      const [state, exitCode] = out.trim().split('\n')[0]?.split('|') ?? [];
      if (state) return { state, exitCode };
    } catch {
      // No accounting on this cluster: the exit_code file decides.
    }
    return undefined;
  }

  private async info(name: string, record: SlurmRecord): Promise<JobInfo> {
    const dir = this.jobDir(name);
    const base = {
      name,
      id: record.jobId,
      attempt: record.attempt,
      startedAt: record.startedAt,
      logPath: path.join(dir, 'job.log'),
    };
    const recorded = this.recordedExit(name);
    const slurm = await this.query(record.jobId);
    let outcome: SlurmOutcome;
    if (slurm) {
      outcome = classifySlurmState(
        slurm.state,
        slurm.exitCode,
        recorded,
        existsSync(path.join(dir, 'cancelled')),
      );
    } else if (recorded !== undefined) {
      outcome = { state: 'exited', exitCode: recorded };
    } else {
      outcome = {
        state: 'lost',
        note: `slurm job ${record.jobId} is unknown to Slurm and left no exit code`,
      };
    }
    if (outcome.state !== 'running' && outcome.note && !existsSync(path.join(dir, 'classified'))) {
      // Said once, in the log the activity quotes: why Slurm ended the job.
      appendFileSync(path.join(dir, 'job.log'), `trainflow: slurm job ${record.jobId} ${outcome.note}\n`);
      writeFileSync(path.join(dir, 'classified'), outcome.note);
    }
    return outcome.state === 'exited'
      ? { ...base, state: 'exited', exitCode: outcome.exitCode }
      : { ...base, state: outcome.state };
  }

  async attach(name: string): Promise<JobInfo | undefined> {
    let record = this.readRecord(name);
    if (!record) {
      const jobId = await this.findByName(name);
      if (!jobId) return undefined;
      record = { jobId, attempt: 0, startedAt: new Date().toISOString() };
      mkdirSync(this.jobDir(name), { recursive: true });
      this.writeRecord(name, record);
    }
    const info = await this.info(name, record);
    this.cache.set(name, { at: Date.now(), info });
    return info;
  }

  status(name: string): Promise<JobInfo | undefined> {
    return cachedStatus(this.cache, name, this.queryIntervalMs, (n) => this.attach(n));
  }

  async cancel(name: string, graceMs: number): Promise<void> {
    const record = this.readRecord(name);
    if (!record) return;
    writeFileSync(path.join(this.jobDir(name), 'cancelled'), new Date().toISOString());
    this.cache.delete(name);
    const live = async () => {
      const q = await this.query(record.jobId);
      return q !== undefined && LIVE_STATES.has(q.state.split(/[\s+]/)[0]);
    };
    const state = (await this.query(record.jobId))?.state;
    if (state === 'RUNNING') {
      // SIGTERM to every process of the job (batch shell included): the trainer checkpoints and exits.
      await run(this.tool('scancel'), ['--signal=TERM', '--full', record.jobId]).catch(() => undefined);
      const deadline = Date.now() + graceMs;
      while (Date.now() < deadline && (await live())) await sleep(250);
    }
    for (let i = 0; await live(); i++) {
      // Slurm's own end: SIGTERM, KillWait, SIGKILL; a pending job just leaves the queue.
      if (i % 20 === 0) await run(this.tool('scancel'), [record.jobId]).catch(() => undefined);
      if (i > 600)
        throw new Error(`slurm job ${record.jobId} (${name}) still not gone 2.5 minutes after scancel`);
      await sleep(250);
    }
  }

  release(name: string): Promise<void> {
    const dir = this.jobDir(name);
    for (const f of ['job.json', 'exit_code', 'cancelled', 'classified'])
      rmSync(path.join(dir, f), { force: true });
    this.cache.delete(name);
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
