// A fleet of inference engines behind the proxy: N engines per stage, each on its share of the host (cores
// on CPU, devices on GPU), health-checked, restarted with backoff when one dies, and switched off and on by
// the tag scheduler (an engine on train-tagged resources serves rollout while the trainer waits and is taken
// back while it trains).
//
// The fleet talks to engines through one narrow interface, EngineLauncher: start(index, share, weights)
// resolves once the engine answers its health check, with its URL and a handle to stop it. The CPU engine
// (`python -m trainflow_trainer.serve`) and vLLM differ only in the launch template the stage's job writes
// into the driver spec (src/contract/driver.ts `engines`): argv, env, health path, how it sleeps. Pause,
// resume and reload go through the engine kind's control (src/dataplane/engines.ts: the CPU server's routes
// or vLLM's), in the proxy's admin fan-out for all engines and here for one: an engine that was off during a
// weight update reloads to the current weights itself before it takes requests again.
//
// Failover: an engine that is off (dead, restarting, taken back) is `enabled: false` in the proxy's
// UpstreamPool, so its sessions move to the others; a request in flight on an engine that dies fails at the
// connection level before any answer (our engine answers non-streaming requests in one piece) and the pool
// retries it on another engine; with every engine off, requests wait for one to come back (bounded).
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { engineControl, type EngineControl, type FanOut } from './engines';
import type { UpstreamPool } from './upstreams';

/** The part of the host one engine runs on. */
export interface EngineShare {
  /** CPU ids it is pinned to (null: not pinned) */
  cpus: number[] | null;
  /** accelerator ids it sees (CUDA_VISIBLE_DEVICES; null: not restricted) */
  gpus: string[] | null;
  /** intra-op threads (OMP_NUM_THREADS, the engine's --threads) */
  threads: number;
}

export interface Weights {
  checkpoint: string;
  version: number;
}

export interface RunningEngine {
  url: string;
  pid: number | undefined;
  /** resolves when the engine process is gone (with a line saying how it ended) */
  exited: Promise<string>;
  stop(): Promise<void>;
  /** frees the engine's resources without losing its state (absent: taking it back stops it) */
  sleep?(): Promise<void>;
  wake?(): Promise<void>;
}

/** How the fleet starts one engine: resolves once it is ready to serve, rejects if it dies or never is. */
export interface EngineLauncher {
  start(index: number, share: EngineShare, weights: Weights): Promise<RunningEngine>;
}

/** An engine command: the argv and env the stage's job gave, with {port} {checkpoint} {version} {threads}. */
export interface EngineTemplate {
  argv: string[];
  env?: Record<string, string>;
  cwd: string;
  /** GET path answering 200 once the engine serves */
  health_path: string;
  ready_timeout_s: number;
  /**
   * How a taken-back engine frees its resources: `signal` stops its whole process group (SIGSTOP: no CPU
   * time, memory kept; vLLM's engine core is a child process of its API server), `vllm` asks vLLM to sleep
   * (POST /sleep: weights offloaded, GPU memory freed; /wake_up) — GPU engines started with sleep mode.
   */
  sleep?: 'signal' | 'vllm';
  /**
   * The Python interpreter used as the engine's exec wrapper: it sets the parent-death signal (an engine
   * never outlives the driver, even after kill -9) and the CPU affinity, then execs the argv.
   */
  python: string;
}

// prctl(PR_SET_PDEATHSIG) and sched_setaffinity survive exec: the engine itself needs to know nothing.
const WRAPPER = [
  'import ctypes, os, signal, sys',
  'ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)',
  'cpus = os.environ.pop("TRAINFLOW_ENGINE_CPUS", "")',
  'cpus and os.sched_setaffinity(0, [int(c) for c in cpus.split(",")])',
  'os.execvp(sys.argv[1], sys.argv[1:])',
].join('\n');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function fill(arg: string, values: Record<string, string>): string {
  return arg.replace(/\{(\w+)\}/g, (m, k: string) => values[k] ?? m);
}

/** Starts engines as local processes from a template (the CPU server, vLLM: only the template differs). */
export class ProcessLauncher implements EngineLauncher {
  constructor(
    private readonly t: EngineTemplate,
    private readonly log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
  ) {}

  async start(index: number, share: EngineShare, weights: Weights): Promise<RunningEngine> {
    const port = await freePort();
    const values = {
      port: String(port),
      checkpoint: weights.checkpoint,
      version: String(weights.version),
      threads: String(share.threads),
      index: String(index),
    };
    const env: Record<string, string | undefined> = {
      ...process.env,
      ...this.t.env,
      OMP_NUM_THREADS: String(share.threads),
      TRAINFLOW_ENGINE_CPUS: share.cpus ? share.cpus.join(',') : '',
      TRAINFLOW_ENGINE_INDEX: String(index), // which engine a process is (logs, tests)
    };
    if (share.gpus) env.CUDA_VISIBLE_DEVICES = share.gpus.join(',');
    // Its own process group (detached: setsid), so signals reach the engine's children too.
    const proc = spawn(this.t.python, ['-c', WRAPPER, ...this.t.argv.map((a) => fill(a, values))], {
      cwd: this.t.cwd,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    // The engine's output goes to the driver's stderr (its stdout carries the driver protocol).
    for (const s of [proc.stdout, proc.stderr])
      readline.createInterface({ input: s }).on('line', (l) => this.log(`[engine ${index}] ${l}`));
    const exited = new Promise<string>((resolve) =>
      proc.once('exit', (code, sig) => {
        // what it leaves behind (vLLM's engine core after a kill -9 of its server) goes with it
        groupKill(proc, 'SIGKILL');
        resolve(sig ? `killed by ${sig}` : `exit code ${code}`);
      }),
    );
    const url = `http://127.0.0.1:${port}`;
    const handle: RunningEngine = {
      url,
      pid: proc.pid,
      exited,
      stop: () => stopProcess(proc, exited),
      ...(this.t.sleep === 'vllm'
        ? { sleep: () => post(url, '/sleep?level=1'), wake: () => post(url, '/wake_up') }
        : // Sleep on CPU: SIGSTOP (no CPU time at all, memory kept); SIGCONT wakes it where it was.
          { sleep: () => signal(proc, 'SIGSTOP'), wake: () => signal(proc, 'SIGCONT') }),
    };
    try {
      await waitHealthy(url + this.t.health_path, exited, this.t.ready_timeout_s * 1000);
    } catch (err) {
      await handle.stop();
      throw err;
    }
    return handle;
  }
}

/** Signals the engine's process group (the engine and every process it started). */
function groupKill(proc: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (proc.pid !== undefined) process.kill(-proc.pid, sig);
  } catch {
    // the group is gone already
  }
}

function signal(proc: ChildProcess, sig: NodeJS.Signals): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error('it exited'));
  groupKill(proc, sig);
  return Promise.resolve();
}

async function post(url: string, path: string): Promise<void> {
  const res = await fetch(url + path, { method: 'POST', signal: AbortSignal.timeout(120_000) });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${body.slice(0, 200)}`);
}

async function stopProcess(proc: ChildProcess, exited: Promise<string>): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  groupKill(proc, 'SIGCONT'); // a sleeping engine must run to handle SIGTERM
  proc.kill('SIGTERM'); // the engine stops its own children (vLLM: its engine core)
  const timer = setTimeout(() => groupKill(proc, 'SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function waitHealthy(url: string, exited: Promise<string>, timeoutMs: number): Promise<void> {
  const gone: { how: string | null } = { how: null };
  void exited.then((how) => (gone.how = how));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gone.how !== null) throw new Error(`the engine exited before it was ready (${gone.how})`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the engine did not answer ${url} within ${Math.round(timeoutMs / 1000)}s`);
}

/**
 * Shares of the host for N engines: CPUs dealt out in contiguous blocks (each engine at least one; with
 * fewer CPUs than engines they share round-robin). GPUs, when there are any, in contiguous slices of one width
 * (engine i of N on G GPUs: the i-th G/N, its CUDA_VISIBLE_DEVICES; the width is its vLLM tensor-parallel size,
 * set by the stage's launch template, trainer/trainflow_trainer/engines/vllm.py gpu_slices): validate rejects an
 * N that does not divide G, or N > G, so an uneven split here is a bug, refused.
 */
export function shareOut(n: number, cpus: number[], gpus: string[] = []): EngineShare[] {
  if (n < 1) throw new Error('a fleet needs at least one engine');
  if (gpus.length > 0 && (n > gpus.length || gpus.length % n !== 0)) {
    throw new Error(`${n} engines cannot split ${gpus.length} GPU(s) evenly (rollout.inference.servers)`);
  }
  const block = <T>(xs: T[], i: number): T[] => {
    if (xs.length === 0) return [];
    if (xs.length < n) return [xs[i % xs.length]];
    const per = Math.floor(xs.length / n);
    const extra = xs.length % n; // the first `extra` engines get one more
    const start = i * per + Math.min(i, extra);
    return xs.slice(start, start + per + (i < extra ? 1 : 0));
  };
  return Array.from({ length: n }, (_, i) => {
    const c = block(cpus, i);
    const g = block(gpus, i);
    return { cpus: c.length ? c : null, gpus: g.length ? g : null, threads: Math.max(1, c.length) };
  });
}

type SlotState = 'starting' | 'serving' | 'sleeping' | 'stopping' | 'off' | 'waiting-to-restart';

interface Slot {
  index: number;
  share: EngineShare;
  state: SlotState;
  /** should it serve (false: taken back for training, or the fleet is closing) */
  wanted: boolean;
  engine: RunningEngine | null;
  /** the weights the running engine holds */
  version: number | null;
  startedAt: number;
  failuresInARow: number;
  restarts: number;
  /** bumps on every start so a stale start or exit cannot act on a newer engine */
  generation: number;
}

export interface FleetEvent {
  t_ms: number;
  engine: number;
  event: 'serving' | 'died' | 'restart' | 'taken' | 'given' | 'start-failed';
  detail?: string;
  serving: number;
}

export interface FleetOptions {
  launcher: EngineLauncher;
  shares: EngineShare[];
  weights: Weights;
  /** the engines' admin token (for the self-reload of an engine that missed a weight update) */
  adminToken?: string;
  /** how to pause, resume and reload one (src/dataplane/engines.ts; default: the CPU server's) */
  control?: EngineControl;
  /** first restart delay; doubles with every failure in a row, up to maxBackoffMs */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** an engine that served this long before dying restarts after backoffMs again */
  stableMs?: number;
  log?: (line: string) => void;
}

export class Fleet {
  private readonly slots: Slot[];
  private pool: UpstreamPool | null = null;
  private weights: Weights;
  private closing = false;
  private readonly t0 = Date.now();
  readonly events: FleetEvent[] = [];
  private readonly log: (line: string) => void;
  private readonly listeners = new Set<() => void>();

  constructor(private readonly o: FleetOptions) {
    this.weights = o.weights;
    this.log = o.log ?? ((l) => process.stderr.write(`trainflow fleet: ${l}\n`));
    this.slots = o.shares.map((share, index) => ({
      index,
      share,
      state: 'off',
      wanted: true,
      engine: null,
      version: null,
      startedAt: 0,
      failuresInARow: 0,
      restarts: 0,
      generation: 0,
    }));
  }

  get size(): number {
    return this.slots.length;
  }

  /** Engines serving now. */
  serving(): number {
    return this.slots.filter((s) => s.state === 'serving').length;
  }

  restarts(): number {
    return this.slots.reduce((n, s) => n + s.restarts, 0);
  }

  pid(index: number): number | undefined {
    return this.slots[index].engine?.pid;
  }

  /** Calls fn on every change of the serving set (tests and metrics). */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private record(engine: number, event: FleetEvent['event'], detail?: string): void {
    const e: FleetEvent = { t_ms: Date.now() - this.t0, engine, event, serving: this.serving() };
    if (detail) e.detail = detail;
    this.events.push(e);
    // One line per change (a few per training step): the engine count over time, in the job's log.
    this.log(`engine ${engine} ${event}${detail ? ` (${detail})` : ''}; ${e.serving}/${this.size} serving`);
    for (const fn of this.listeners) fn();
  }

  /**
   * Starts every engine and resolves with their URLs once all serve (the proxy is built on them); one that
   * fails to start fails the stage here: a bad template or checkpoint is not something to retry forever.
   */
  async start(): Promise<string[]> {
    const started = await Promise.allSettled(this.slots.map((s) => this.launch(s, false)));
    const bad = started.findIndex((r) => r.status === 'rejected');
    if (bad >= 0) {
      await this.close();
      throw new Error(
        `inference engine ${bad} did not start: ${((started[bad] as PromiseRejectedResult).reason as Error).message}`,
      );
    }
    return this.slots.map((s) => s.engine!.url);
  }

  /** The proxy's pool: the fleet switches its upstreams off and on from now on. */
  attach(pool: UpstreamPool): void {
    if (pool.upstreams.length !== this.slots.length)
      throw new Error('the fleet and the proxy disagree on the number of engines');
    this.pool = pool;
    pool.managed = true;
    for (const s of this.slots) {
      if (s.engine) pool.setUrl(s.index, s.engine.url);
      pool.upstreams[s.index].version = s.version;
      pool.setEnabled(s.index, s.state === 'serving');
    }
  }

  /** The weights to serve from now on (a weight update); engines started later load these. */
  setWeights(w: Weights): void {
    this.weights = w;
  }

  /** The engine kind's control calls on one engine (a fan-out of one; throws on an error answer). */
  private one(index: number): FanOut {
    return async (path, payload) => {
      const r = await this.admin(index, path, payload);
      if (r.status !== 200) throw new Error(`${path} failed: ${JSON.stringify(r.body)}`);
      return [r.body];
    };
  }

  private get control(): EngineControl {
    return this.o.control ?? engineControl('local');
  }

  private admin(index: number, path: string, payload: unknown): Promise<{ status: number; body: unknown }> {
    if (!this.pool) throw new Error('the fleet is not attached to a proxy');
    return this.pool.json(
      index,
      path,
      payload,
      this.o.adminToken ? { authorization: `Bearer ${this.o.adminToken}` } : {},
    );
  }

  /**
   * Takes engines back (tag scheduling): switched off in the proxy at once (new requests and sessions go to
   * the others), generation paused between two tokens, then the engine sleeps (RunningEngine.sleep: SIGSTOP
   * for a CPU engine, its cores free for training; vLLM's sleep mode frees GPU memory) or, when it cannot,
   * stops. Its paused generations continue after the step under the new weights (partial rollout).
   */
  async take(indices: number[]): Promise<void> {
    await Promise.all(indices.map((i) => this.takeOne(this.slots[i])));
  }

  private async takeOne(s: Slot): Promise<void> {
    s.wanted = false;
    this.pool?.setEnabled(s.index, false);
    const engine = s.engine;
    if (s.state === 'serving' && engine?.sleep) {
      s.state = 'sleeping';
      this.record(s.index, 'taken');
      try {
        await this.control.pause(this.one(s.index));
        await engine.sleep();
      } catch (err) {
        this.log(`engine ${s.index}: could not put it to sleep (${(err as Error).message}); stopping it`);
        await this.stopSlot(s);
      }
      return;
    }
    this.record(s.index, 'taken');
    await this.stopSlot(s);
  }

  private async stopSlot(s: Slot): Promise<void> {
    const engine = s.engine;
    s.engine = null;
    s.state = 'stopping';
    s.generation++;
    if (engine) await engine.stop();
    s.state = 'off';
  }

  /**
   * Gives engines back: a sleeping one wakes, catches up with the current weights and resumes its paused
   * generations; a stopped one starts (serving once ready). Not awaited by the caller.
   */
  give(indices: number[]): void {
    for (const i of indices) {
      const s = this.slots[i];
      s.wanted = true;
      this.record(i, 'given');
      if (s.state === 'sleeping') void this.wake(s);
      else if (s.state === 'off') void this.launch(s, true).catch(() => undefined);
    }
  }

  private async wake(s: Slot): Promise<void> {
    const engine = s.engine!;
    const gen = s.generation;
    try {
      await engine.wake!();
      await this.catchUp(s, gen);
      await this.control.resume(this.one(s.index));
    } catch (err) {
      if (gen !== s.generation) return; // it died meanwhile: the exit handler restarts it
      this.log(`engine ${s.index}: could not wake it (${(err as Error).message}); restarting it`);
      await engine.stop(); // the exit handler restarts it
      return;
    }
    if (gen !== s.generation || !s.wanted) return;
    this.serve(s);
  }

  /** Reloads an engine to the current weights until it holds them (a weight update may land meanwhile). */
  private async catchUp(s: Slot, gen: number): Promise<void> {
    while (this.pool && s.version !== this.weights.version && gen === s.generation) {
      const w = this.weights;
      try {
        await this.control.reload(this.one(s.index), w.checkpoint, w.version);
        s.version = w.version;
      } catch (err) {
        // A folder the stage rotated away while this engine was asleep or starting: newer weights exist.
        if (w === this.weights) throw new Error(`reload failed: ${(err as Error).message}`);
      }
    }
  }

  private serve(s: Slot): void {
    s.state = 'serving';
    if (this.pool) {
      this.pool.upstreams[s.index].version = s.version;
      this.pool.setEnabled(s.index, true);
    }
    this.record(s.index, 'serving');
  }

  /**
   * Starts a slot's engine on the weights the fleet started with (a complete checkpoint folder, tokenizer
   * included), then reloads it to the current ones; on failure (when `retry`) schedules a restart.
   */
  private async launch(s: Slot, retry: boolean): Promise<void> {
    const gen = ++s.generation;
    s.state = 'starting';
    this.pool?.setEnabled(s.index, false);
    const weights = this.o.weights;
    let engine: RunningEngine;
    try {
      engine = await this.o.launcher.start(s.index, s.share, weights);
    } catch (err) {
      if (gen !== s.generation) return;
      s.state = 'off';
      s.failuresInARow++;
      this.record(s.index, 'start-failed', (err as Error).message);
      if (retry) this.scheduleRestart(s);
      else throw err;
      return;
    }
    if (gen !== s.generation || !s.wanted || this.closing) {
      await engine.stop();
      if (gen === s.generation) s.state = 'off';
      return;
    }
    s.engine = engine;
    s.version = weights.version;
    s.startedAt = Date.now();
    void engine.exited.then((how) => this.onExit(s, gen, how));
    if (this.pool) this.pool.setUrl(s.index, engine.url);
    try {
      await this.catchUp(s, gen);
    } catch (err) {
      // Treated as a death: stopping it runs the exit handler, which restarts it.
      this.log(`engine ${s.index}: ${(err as Error).message}; restarting it`);
      await engine.stop();
      return;
    }
    if (gen !== s.generation) return;
    if (!s.wanted) {
      await this.stopSlot(s); // taken back while it started
      return;
    }
    this.serve(s);
  }

  private onExit(s: Slot, gen: number, how: string): void {
    if (gen !== s.generation || this.closing) return; // stopped on purpose
    this.pool?.setEnabled(s.index, false);
    s.engine = null;
    s.state = 'off';
    s.failuresInARow = Date.now() - s.startedAt > (this.o.stableMs ?? 10_000) ? 1 : s.failuresInARow + 1;
    s.generation++;
    this.record(s.index, 'died', how);
    // Taken back (asleep) when it died: it starts when given back. Else it restarts after a backoff.
    if (s.wanted) this.scheduleRestart(s);
  }

  private scheduleRestart(s: Slot): void {
    if (this.closing || !s.wanted) return;
    const base = this.o.backoffMs ?? 1000;
    const delay = Math.min(this.o.maxBackoffMs ?? 30_000, base * 2 ** Math.max(0, s.failuresInARow - 1));
    s.failuresInARow = Math.max(1, s.failuresInARow);
    s.state = 'waiting-to-restart';
    const gen = s.generation;
    setTimeout(() => {
      if (this.closing || !s.wanted || gen !== s.generation) return;
      s.restarts++;
      this.record(s.index, 'restart', `after ${delay} ms`);
      void this.launch(s, true).catch((err: unknown) => {
        this.log(`engine ${s.index}: ${(err as Error).message}`);
        s.state = 'off';
        this.scheduleRestart(s);
      });
    }, delay).unref();
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.slots.map(async (s) => {
        s.generation++;
        const e = s.engine;
        s.engine = null;
        s.state = 'off';
        if (e) await e.stop();
      }),
    );
  }
}
