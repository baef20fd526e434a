// What the cluster launchers (Slurm, Kubernetes) share: the shape of one multi-node job (nodes × GPUs, taken from
// the stage's `resources` in the job spec and the pool's settings), the torchrun command line every node runs,
// and the environment torchrun needs (MASTER_ADDR/MASTER_PORT, NODE_RANK, WORLD_SIZE, NPROC_PER_NODE).
//
// Why wrap the command in torchrun here and not in the activity: the activity knows one command
// (`python -m trainflow_trainer.job --spec SPEC`); only the launcher knows how many nodes and GPUs it got.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { loadConfigFile } from '../config/load';
import type { PoolConfig, ResourcesConfig } from '../config/schema';
import { UserError } from '../errors';
import type { JobInfo, JobLaunch } from './types';

/** The rendezvous port of torchrun's c10d store on node 0. */
export const MASTER_PORT = 29500;

export interface JobShape {
  nodes: number;
  gpusPerNode: number;
  gpuType?: string;
  cpusPerNode?: number;
  /** Processes per node of a CPU-only job (resources.procs_per_node); GPU jobs run one per GPU. */
  procsPerNode?: number;
  /** Bytes. */
  memoryPerNode?: number;
}

/**
 * The pool a launcher worker serves, from its environment: TRAINFLOW_CONFIG (a pipeline config file holding the
 * pool, e.g. mounted from a ConfigMap) and TRAINFLOW_POOL (its name). Unset: the launcher's defaults (no
 * partition/account, the default namespace).
 */
export function poolFromEnvironment(env: NodeJS.ProcessEnv = process.env): PoolConfig | undefined {
  const file = env.TRAINFLOW_CONFIG;
  const name = env.TRAINFLOW_POOL;
  if (!file || !name) return undefined;
  const pools = loadConfigFile(file).pools;
  const pool = pools[name];
  if (!pool) {
    throw new UserError(
      `TRAINFLOW_POOL=${name}: ${file} has no pool of that name (pools: ${Object.keys(pools).join(', ')})`,
    );
  }
  return pool;
}

/** The stage's resources from a job spec (`spec.stage.resources`), checked against the pool's limits. */
export function jobShape(spec: unknown, pool?: PoolConfig): JobShape {
  const stage = (spec as { stage?: { name?: string; resources?: Partial<ResourcesConfig> } } | null)?.stage;
  const r = stage?.resources ?? {};
  const shape: JobShape = {
    nodes: r.nodes ?? 1,
    gpusPerNode: r.gpus_per_node ?? pool?.gpus_per_node ?? 0,
    gpuType: r.gpu_type ?? pool?.gpu_type,
    cpusPerNode: r.cpus_per_node,
    procsPerNode: r.procs_per_node,
    memoryPerNode: r.memory_per_node,
  };
  const where = `stage ${stage?.name ?? '?'} resources`;
  if (pool && shape.nodes > pool.max_nodes) {
    throw new UserError(
      `${where}: nodes ${shape.nodes} > the pool's max_nodes ${pool.max_nodes}; lower nodes or raise pools.<name>.max_nodes`,
    );
  }
  if (pool && pool.gpus_per_node > 0 && shape.gpusPerNode > pool.gpus_per_node) {
    throw new UserError(
      `${where}: gpus_per_node ${shape.gpusPerNode} > the pool's gpus_per_node ${pool.gpus_per_node}; lower it or pick another pool`,
    );
  }
  return shape;
}

/** Processes per node: one per GPU, or procs_per_node (default 1) on a CPU-only job (FSDP2 over gloo). */
export function procsPerNode(shape: JobShape): number {
  return shape.gpusPerNode > 0 ? shape.gpusPerNode : (shape.procsPerNode ?? 1);
}

function isPythonJob(argv: string[]): boolean {
  const exe = argv[0];
  return exe !== undefined && /^python[0-9.]*$/.test(path.basename(exe));
}

/**
 * The torchrun module a multi-rank Python job runs under. A trainer job (`-m trainflow_trainer.…`) gets
 * trainflow's wrapper (trainer/trainflow_trainer/torchrun.py): torchrun itself exits 1 whatever its ranks' codes,
 * the wrapper exits with the protocol code a rank recorded (2 bad input, 75 preempted), so a bad input in one rank
 * stops the stage instead of being retried as a crash. It is importable wherever the job's own module is (same
 * interpreter, same working directory or image). Any other Python job (a script) runs under plain torchrun.
 */
export function torchrunModule(argv: string[]): string {
  return argv[1] === '-m' && argv[2]?.startsWith('trainflow_trainer.')
    ? TRAINFLOW_TORCHRUN
    : 'torch.distributed.run';
}

export const TRAINFLOW_TORCHRUN = 'trainflow_trainer.torchrun';

/**
 * The argv of a one-node job on the local launcher: a Python job with more than one process per node
 * (procs_per_node on a CPU host: gloo; gpus_per_node > 1: one process per GPU, NCCL) runs under a standalone
 * torchrun (its own rendezvous on a free port); anything else as it is. The GPU path is rendered and tested as
 * a command line only: no GPU host runs the tests here.
 */
export function localCommand(argv: string[], shape: JobShape): string[] {
  const procs = procsPerNode(shape);
  if (!isPythonJob(argv) || procs <= 1) return argv;
  const [exe, ...rest] = argv;
  return [
    exe,
    '-m',
    torchrunModule(argv),
    '--standalone',
    '--nnodes=1',
    `--nproc-per-node=${procs}`,
    ...rest,
  ];
}

/**
 * The argv each node runs. A Python job (`python -m MODULE ...` or `python SCRIPT ...`) on GPUs or on several nodes
 * runs under torchrun (the same interpreter; trainflow's wrapper for a trainer job, see torchrunModule) with the
 * rendezvous taken from the environment the launcher sets; anything else (one CPU process, a non-Python test job)
 * runs as it is, once per node, with the same environment.
 */
export function nodeCommand(argv: string[], shape: JobShape): string[] {
  const [exe, ...rest] = argv;
  if (!isPythonJob(argv) || (shape.nodes === 1 && procsPerNode(shape) === 1 && shape.gpusPerNode === 0))
    return argv;
  // `-m MODULE args` and `SCRIPT args` both go after torchrun's own flags, as they are.
  return [
    exe,
    '-m',
    torchrunModule(argv),
    '--nnodes=$NNODES',
    '--nproc-per-node=$NPROC_PER_NODE',
    '--node-rank=$NODE_RANK',
    '--master-addr=$MASTER_ADDR',
    '--master-port=$MASTER_PORT',
    ...rest,
  ];
}

/** The spec file's path in argv (`{spec}`), as the job sees it. */
export function withSpecPath(job: JobLaunch, specPath: string): string[] {
  return job.command.map((a) => a.replaceAll('{spec}', specPath));
}

/** Quotes one word for a POSIX shell; `$NAME` references (torchrun flags above) stay expandable. */
export function shellWord(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  const m = /^(--[a-z-]+=)\$([A-Z_]+)$/.exec(word);
  if (m) return `${m[1]}"$${m[2]}"`;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A scheduler-safe name: Slurm and Kubernetes allow lowercase letters, digits and `-` everywhere (DNS-1123). */
export function dnsName(name: string, max = 63): string {
  const clean = name
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (clean.length <= max) return clean;
  // Keep it unique when cut: the tail is a short hash of the whole name.
  let h = 0;
  for (const c of name) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
  const tag = h.toString(36).slice(0, 6);
  return `${clean.slice(0, max - tag.length - 1).replace(/-+$/, '')}-${tag}`;
}

/** Seconds → Slurm's `D-HH:MM:SS` (rounded up to whole minutes, Slurm's resolution). */
export function slurmTime(ms: number): string {
  const minutes = Math.max(1, Math.ceil(ms / 60_000));
  const d = Math.floor(minutes / 1440);
  const h = Math.floor((minutes % 1440) / 60);
  const m = minutes % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d}-${pad(h)}:${pad(m)}:00`;
}

/** Runs a cluster command line tool; resolves with stdout, rejects with its stderr in the message. */
export function run(
  file: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { env: options.env ?? process.env, timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const detail = (stderr || err.message).trim();
          reject(
            Object.assign(new Error(`${file} ${args.join(' ')}: ${detail}`), { stderr, code: err.code }),
          );
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/** How long a running job outlives a scheduler that does not answer before its watch fails. */
export const UNREACHABLE_MS = 10 * 60_000;

export type StatusCache = Map<string, { at: number; info: JobInfo | undefined }>;

/**
 * A cluster job's status, asking the scheduler at most every `queryIntervalMs` while it runs. A scheduler that
 * does not answer for a while (slurmctld or the API server restarting) does not end a running job: it stays
 * running (the activity keeps heartbeating) until the scheduler answers, for up to UNREACHABLE_MS.
 */
export async function cachedStatus(
  cache: StatusCache,
  name: string,
  queryIntervalMs: number,
  attach: (name: string) => Promise<JobInfo | undefined>,
): Promise<JobInfo | undefined> {
  const cached = cache.get(name);
  if (cached?.info?.state === 'running' && Date.now() - cached.at < queryIntervalMs) return cached.info;
  try {
    return await attach(name);
  } catch (err) {
    if (cached?.info?.state === 'running' && Date.now() - cached.at < UNREACHABLE_MS) return cached.info;
    throw err;
  }
}
