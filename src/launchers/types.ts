// The launcher interface: how the job activity starts, finds, watches and stops a job, whatever runs it (a local
// process group, a Slurm job, a Kubernetes Job). A job has a stable name derived from the activity, so a retry of
// the activity finds the job an earlier attempt started instead of launching a second copy.

export interface JobLaunch {
  /** Stable job name: `<pipeline id>.<stage name>` made filesystem- and scheduler-safe. */
  name: string;
  /** argv; the token `{spec}` is replaced by the path of the spec file the launcher writes. */
  command: string[];
  cwd: string;
  /** Added to the launcher's own environment (credentials come from there). */
  env: Record<string, string>;
  /** The job spec of the protocol, written as JSON where the job can read it. */
  spec: unknown;
  /** The activity attempt that launched it (for the record and the logs). */
  attempt: number;
}

export type JobState = 'running' | 'exited' | 'lost';

export interface JobInfo {
  name: string;
  /** running: alive; exited: ended and its exit code is known; lost: gone without an exit code (killed, host lost). */
  state: JobState;
  exitCode?: number;
  /** The process id (group leader) or scheduler job id. */
  id: string;
  attempt: number;
  startedAt: string;
  logPath?: string;
}

export interface LogOptions {
  /** Keep reading as the job writes, until it ends or `signal` aborts. */
  follow?: boolean;
  /** Start this many bytes before the end (to show a tail). */
  tailBytes?: number;
  signal?: AbortSignal;
}

export interface Launcher {
  readonly kind: string;
  /** Starts a job. Fails if a live job of that name exists (attach or cancel it first). */
  launch(job: JobLaunch): Promise<JobInfo>;
  /** The job of that name this launcher knows about, live or ended and not yet released; undefined if none. */
  attach(name: string): Promise<JobInfo | undefined>;
  /** Current state of a known job (same as attach, named for polling). */
  status(name: string): Promise<JobInfo | undefined>;
  /** Stops the whole job (SIGTERM, then SIGKILL after `graceMs`); resolves once nothing of it is left. */
  cancel(name: string, graceMs: number): Promise<void>;
  /** The job's combined stdout/stderr, as chunks of text. */
  logs(name: string, options?: LogOptions): AsyncIterable<string>;
  /** Forgets an ended job whose outcome has been reported, so the next attach finds nothing. Keeps its log. */
  release(name: string): Promise<void>;
  /** Optional: calls `onChange` soon after the job's state may have changed (so a watcher need not wait for its
   * next poll); returns the unsubscribe function. Launchers without it are simply polled. */
  watch?(name: string, onChange: () => void): () => void;
}

/** Job names: lowercase letters, digits, `.`, `-`, `_`, at most 120 characters (Slurm and k8s are stricter still). */
export function jobName(pipelineId: string, stage: string): string {
  const clean = (s: string) => s.toLowerCase().replace(/[^a-z0-9._-]+/g, '-');
  return `${clean(pipelineId)}.${clean(stage)}`.slice(0, 120);
}
