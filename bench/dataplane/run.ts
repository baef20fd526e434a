// bench/dataplane: what the trajectory proxy adds over talking to the inference server directly, beside two
// peers in front of the same upstream. A fast stub upstream (bench/dataplane/stub.ts) and three proxy arms run
// as their own processes on loopback:
//   trainflow    `trainflow dataplane serve`: session routing, token recording, the trajectory ledger;
//   litellm      the LiteLLM proxy (PyPI litellm[proxy], its own venv: bench/dataplane/litellm-requirements.txt),
//                one uvicorn worker, the stub as an OpenAI-compatible model;
//   passthrough  a bare Node pass-through built like trainflow's proxy (bench/dataplane/passthrough.ts: node:http
//                server, undici dispatch, the same batched writes) that records nothing: the floor for it.
// This process drives 1, 64 and 512 concurrent agent sessions (each a loop of chat requests, non-streaming and
// streaming) straight at the stub and through each arm, in interleaved slices (the order rotates every slice)
// so that a change in the machine's load during the run hits every arm alike. Reported per row (one arm at
// one session count): added latency p50/p99 (arm minus direct), `throughput_ratio` (arm / direct) and
// `cpu_us_per_request` (the arm's own process; the client's and the stub's are in `cpu_breakdown_us`).
//
// The machine is shared (the dev machine: 2 cores, other people's work): every row records the 1-minute load
// average when it was measured, and the JSON the load at the start and at the end of the run.
//
// The load generator (undici, keep-alive), the stub and the proxy share the machine's cores (2 on the dev
// machine, with other people's processes). At 64+ sessions all three are CPU-bound, so the throughput ratio
// is bounded by CPU: direct costs load+stub per request, proxied costs load+stub+proxy.
// `cpu_bound_ratio` = (load+stub)/(load+stub+proxy) from the measured CPU is printed next to the ratio.
// Pinned rows add `core_bound_ratio` = min(1, (load+stub)/proxy), the ratio with each side on cores of its
// own, and `proxy_core_busy`, the share of a core the proxy used while it was measured.
//
// So every row is measured twice: unpinned (all three processes on all cores, as above) and pinned, like a
// deployment where the proxy is its own service: with >= 2 cores the proxy runs on its own core(s) and the
// load generator and the stub share the others (`taskset`), the same for both arms, so direct and proxied
// get the same client/stub CPU and the ratio shows whether the proxy keeps up with its clients. Each row
// says `pinned: true/false`; the targets are judged on each set separately.
//
// Run: make bench-dataplane   → bench/results/dataplane.json   (BENCH_REQUESTS=N to change size,
// BENCH_SESSIONS=1,64 for a subset, BENCH_ARMS=trainflow,passthrough to leave LiteLLM out,
// BENCH_LITELLM_REQUESTS=N for LiteLLM's smaller budget;
// BENCH_PROXY_PROF=DIR writes the V8 CPU profiles of the trainflow and passthrough arms (`node --cpu-prof`)
// to DIR/trainflow and DIR/passthrough, one per placement)
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Pool } from 'undici';

const ROOT = path.resolve(__dirname, '../..');
const ADMIN = 'bench-admin';
const SESSIONS = (process.env.BENCH_SESSIONS ?? '1,64,512').split(',').map(Number); // a subset: quick checks
const REQUESTS_PER_CONFIG = Number(process.env.BENCH_REQUESTS ?? 6000);
const LITELLM_REQUESTS = Number(process.env.BENCH_LITELLM_REQUESTS ?? 600);
const SLICES = 4; // interleaved direct/proxy slices per row
const NICE = 5;

/** Where each process runs: `cpus` as taskset lists them (null: anywhere). */
interface Placement {
  pinned: boolean;
  proxy: string | null;
  loadAndStub: string | null;
}

function placements(cpus: number): Placement[] {
  const all: Placement = { pinned: false, proxy: null, loadAndStub: null };
  if (cpus < 2) return [all];
  const proxyCores = Math.max(1, Math.floor(cpus / 2)); // the proxy's share: half, the upper cores
  const range = (a: number, b: number) => (a === b ? `${a}` : `${a}-${b}`);
  return [
    all,
    { pinned: true, proxy: range(cpus - proxyCores, cpus - 1), loadAndStub: range(0, cpus - proxyCores - 1) },
  ];
}

/** Moves this process (every thread: the load generator) onto `cpus`. */
function pinSelf(cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
}

function start(
  cmd: string,
  args: string[],
  marker: RegExp,
  cpus: string | null,
): Promise<{ proc: ChildProcess; port: number }> {
  // taskset execs the command in place: the pid is the command's (its /proc CPU counters are read below)
  const [bin, argv] = cpus ? ['taskset', ['-c', cpus, cmd, ...args]] : [cmd, args];
  const proc = spawn(bin, argv, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, TRAINFLOW_LOG_LEVEL: 'warn' },
  });
  return new Promise((resolve, reject) => {
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = marker.exec(line);
      if (m) resolve({ proc, port: Number(m[1]) });
    });
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
  });
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

type ArmName = 'trainflow' | 'litellm' | 'passthrough';
const ALL_ARMS: ArmName[] = ['trainflow', 'litellm', 'passthrough'];
const ARMS = (process.env.BENCH_ARMS?.split(',') ?? ALL_ARMS) as ArmName[];

/** A proxy in front of the stub: its process (for CPU), its port and the bearer keys sessions use. */
interface Arm {
  name: ArmName;
  proc: ChildProcess;
  port: number;
  keys(sessions: number): Promise<string[]>;
}

interface Tally {
  lat: number[];
  seconds: number;
  cpu: { load: number; stub: number; proxy: number };
}

const newTally = (): Tally => ({ lat: [], seconds: 0, cpu: { load: 0, stub: 0, proxy: 0 } });

/** Drives `keys.length` sessions, `perSession` requests each, through `pool`; adds to the tally. `pids.proxy`
 * is the process between client and stub (the arm's; for the direct path, none: 0). */
async function drive(
  pool: Pool,
  keys: string[],
  streaming: boolean,
  perSession: number,
  pids: { stub: number; proxy: number },
  tally: Tally | null,
): Promise<void> {
  const proxyCpu = () => (pids.proxy ? cpuSeconds(pids.proxy) : 0);
  const cpu0 = { load: selfCpuSeconds(), stub: cpuSeconds(pids.stub), proxy: proxyCpu() };
  const t0 = process.hrtime.bigint();
  await Promise.all(
    keys.map(async (key, s) => {
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${key}` };
      const body = JSON.stringify({
        model: 'stub',
        messages: [{ role: 'user', content: `session ${s}: fix the failing test` }],
        max_tokens: 16,
        stream: streaming,
      });
      for (let i = 0; i < perSession; i++) {
        const a = process.hrtime.bigint();
        const r = await pool.request({ method: 'POST', path: '/v1/chat/completions', headers, body });
        const text = await r.body.text();
        tally?.lat.push(Number(process.hrtime.bigint() - a) / 1e6);
        if (r.statusCode !== 200) throw new Error(`request failed ${r.statusCode}: ${text.slice(0, 500)}`);
      }
    }),
  );
  if (!tally) return;
  tally.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
  tally.cpu.load += selfCpuSeconds() - cpu0.load;
  tally.cpu.stub += cpuSeconds(pids.stub) - cpu0.stub;
  tally.cpu.proxy += proxyCpu() - cpu0.proxy;
}

interface Row {
  arm: ArmName;
  sessions: number;
  streaming: boolean;
  pinned: boolean;
  added_p50_ms: number;
  throughput_ratio: number;
  cpu_us_per_request: number;
  [more: string]: unknown;
}

const perRequestUs = (seconds: number, n: number): number => (seconds / n) * 1e6;

/** What the issue asks of the arms at 64 sessions, judged per placement over both streaming modes. */
function judge(
  rows: Row[],
  pinned: boolean,
): Record<string, { target: string; met: boolean; values: number[] }> {
  const at = (arm: ArmName, sessions: number) =>
    rows.filter((r) => r.pinned === pinned && r.arm === arm && r.sessions === sessions);
  const ratio = (other: ArmName, f: (tf: Row, o: Row) => number): number[] =>
    at('trainflow', 64).flatMap((tf) => {
      const o = at(other, 64).find((r) => r.streaming === tf.streaming);
      return o ? [f(tf, o)] : [];
    });
  const out: Record<string, { target: string; met: boolean; values: number[] }> = {};
  const add = (name: string, target: string, values: number[], ok: (v: number) => boolean) => {
    if (values.length) out[name] = { target, met: values.every(ok), values };
  };
  add(
    'added_p50_ms_at_1_session',
    '<= 0.5',
    at('trainflow', 1).map((r) => r.added_p50_ms),
    (v) => v <= 0.5,
  );
  add(
    'throughput_ratio_at_64_sessions',
    '>= 0.8',
    at('trainflow', 64).map((r) => r.throughput_ratio),
    (v) => v >= 0.8,
  );
  add(
    'throughput_vs_litellm_at_64_sessions',
    '>= 2',
    ratio('litellm', (tf, o) => tf.throughput_ratio / o.throughput_ratio),
    (v) => v >= 2,
  );
  add(
    'cpu_per_request_vs_passthrough_at_64_sessions',
    '<= 1.3',
    ratio('passthrough', (tf, o) => tf.cpu_us_per_request / o.cpu_us_per_request),
    (v) => v <= 1.3,
  );
  return out;
}

async function main(): Promise<void> {
  os.setPriority(NICE); // others share the CPU; the children inherit it
  const loadAtStart = os.loadavg()[0];
  const t0 = Date.now();
  const cpus = os.availableParallelism();
  const plan = placements(cpus);
  const rows: Row[] = [];
  const file = path.join(ROOT, 'bench/results/dataplane.json');
  // rewritten after every row, so a run stopped part-way keeps what it measured (`complete: false`)
  const write = (complete: boolean) =>
    writeResult(file, plan, cpus, loadAtStart, (Date.now() - t0) / 1000, rows, complete);
  for (const place of plan) await measure(place, cpus, rows, () => write(false));
  const targets = write(true);
  for (const [set, t] of Object.entries(targets))
    for (const [name, v] of Object.entries(t))
      console.log(
        `target (${set}) ${name} ${v.target}: ${v.met ? 'met' : 'MISSED'} (${v.values.map((x) => x.toFixed(2)).join(', ')})`,
      );
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

function writeResult(
  file: string,
  plan: Placement[],
  cpus: number,
  loadAtStart: number,
  elapsedS: number,
  rows: Row[],
  complete: boolean,
): Record<string, ReturnType<typeof judge>> {
  const pinned = plan.find((p) => p.pinned);
  const targets = { unpinned: judge(rows, false), ...(pinned ? { pinned: judge(rows, true) } : {}) };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const result = {
    bench: 'dataplane',
    complete,
    arms: ARMS,
    requests_per_config: REQUESTS_PER_CONFIG,
    litellm_requests_per_config: LITELLM_REQUESTS,
    slices: SLICES,
    nproc: cpus,
    pinning: pinned
      ? { proxy_cpus: pinned.proxy, load_generator_and_stub_cpus: pinned.loadAndStub, tool: 'taskset -c' }
      : 'none: fewer than 2 cores',
    shared_cpus:
      'unpinned rows: the load generator, the stub upstream and the arm are three processes sharing all cores ' +
      '(and other users of the machine); pinned rows: the arm on its own core(s), the load generator and the ' +
      'stub on the others, for every arm and the direct path; the run is niced',
    nice: NICE,
    load_average_at_start: loadAtStart,
    // at the last write: the end of the run when complete
    load_average_at_end: os.loadavg()[0],
    elapsed_s: elapsedS,
    node: process.version,
    targets,
    rows,
  };
  fs.writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  return targets;
}

/** A free loopback port (for the one arm that cannot report the port it bound). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function startTrainflow(stubPort: number, cpus: string | null): Promise<Arm> {
  const prof = process.env.BENCH_PROXY_PROF;
  const { proc, port } = await start(
    process.execPath,
    [
      ...(prof ? ['--cpu-prof', '--cpu-prof-dir', path.join(prof, 'trainflow')] : []),
      'bin/trainflow.js',
      'dataplane',
      'serve',
      '--upstream',
      `http://127.0.0.1:${stubPort}`,
      '--port',
      '0',
      '--admin-token',
      ADMIN,
    ],
    /^TRAINFLOW_DATAPLANE .*"port":(\d+)/,
    cpus,
  );
  const admin = new Pool(`http://127.0.0.1:${port}`, { connections: 4 });
  const keys = async (sessions: number) => {
    const out: string[] = [];
    for (let i = 0; i < sessions; i++) {
      const r = await admin.request({
        method: 'POST',
        path: '/admin/sessions',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ task_id: `bench-${i}` }),
      });
      out.push(((await r.body.json()) as { key: string }).key);
    }
    return out;
  };
  proc.once('exit', () => void admin.close());
  return { name: 'trainflow', proc, port, keys };
}

async function startPassthrough(stubPort: number, cpus: string | null): Promise<Arm> {
  const prof = process.env.BENCH_PROXY_PROF;
  const { proc, port } = await start(
    process.execPath,
    [
      ...(prof ? ['--cpu-prof', '--cpu-prof-dir', path.join(prof, 'passthrough')] : []),
      '-r',
      'tsx/cjs',
      'bench/dataplane/passthrough.ts',
      `http://127.0.0.1:${stubPort}`,
    ],
    /^PASSTHROUGH (\d+)/,
    cpus,
  );
  return { name: 'passthrough', proc, port, keys: (n) => Promise.resolve(anyKeys(n)) };
}

async function startLitellm(stubPort: number, cpus: string | null): Promise<Arm> {
  const req = path.join(ROOT, 'bench/dataplane/litellm-requirements.txt');
  const venv = execFileSync('bash', [path.join(ROOT, 'infra/dev/setup-venv.sh'), '--path', 'litellm', req], {
    encoding: 'utf8',
  }).trim();
  const config = path.join(os.tmpdir(), `bench-litellm-${process.pid}.yaml`);
  fs.writeFileSync(
    config,
    [
      'model_list:',
      '  - model_name: stub',
      '    litellm_params:',
      '      model: openai/stub',
      `      api_base: http://127.0.0.1:${stubPort}/v1`,
      '      api_key: stub',
      'litellm_settings:',
      '  telemetry: false',
      // the key every session sends; without a database LiteLLM checks it against this, per request
      'general_settings:',
      '  master_key: sk-bench',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  const argv = ['--config', config, '--host', '127.0.0.1', '--port', String(port), '--num_workers', '1'];
  const cmd = path.join(venv, 'bin/litellm');
  const proc = spawn(cpus ? 'taskset' : cmd, cpus ? ['-c', cpus, cmd, ...argv] : argv, {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
    // no network but PyPI here: LiteLLM must not try to fetch its model price list
    env: { ...process.env, LITELLM_LOCAL_MODEL_COST_MAP: 'True', LITELLM_LOG: 'ERROR' },
  });
  let stderr = '';
  proc.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const pool = new Pool(`http://127.0.0.1:${port}`, { connections: 1 });
  try {
    for (let waited = 0; ; waited += 250) {
      if (proc.exitCode !== null) throw new Error(`litellm exited with ${proc.exitCode}:\n${stderr}`);
      if (waited > 120_000) throw new Error(`litellm not ready after 120 s:\n${stderr}`);
      try {
        const r = await pool.request({ method: 'GET', path: '/health/liveliness' });
        await r.body.text();
        if (r.statusCode === 200) break;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    await pool.close();
  }
  return { name: 'litellm', proc, port, keys: (n) => Promise.resolve(anyKeys(n)) };
}

/** The arms that route by path, not by key: every session sends the same bearer token. */
function anyKeys(n: number): string[] {
  return Array.from({ length: n }, () => 'sk-bench');
}

const STARTERS: Record<ArmName, (stubPort: number, cpus: string | null) => Promise<Arm>> = {
  trainflow: startTrainflow,
  litellm: startLitellm,
  passthrough: startPassthrough,
};

/** Every row (arm × sessions × streaming) with one placement of the processes; appends to `rows`. */
async function measure(place: Placement, cpus: number, rows: Row[], onRow: () => void): Promise<void> {
  pinSelf(place.loadAndStub ?? `0-${cpus - 1}`);
  console.log(
    place.pinned
      ? `pinned: arms on cpus ${place.proxy}, load generator and stub on ${place.loadAndStub}`
      : `unpinned: all processes on cpus 0-${cpus - 1}`,
  );
  const stub = await start(
    process.execPath,
    ['-r', 'tsx/cjs', 'bench/dataplane/stub.ts'],
    /^STUB (\d+)/,
    place.loadAndStub,
  );
  const arms: Arm[] = [];
  try {
    for (const name of ARMS) arms.push(await STARTERS[name](stub.port, place.proxy));
    for (const sessions of SESSIONS) await measureSessions(place, stub, arms, sessions, rows, onRow);
  } finally {
    for (const arm of [...arms, stub]) arm.proc.kill('SIGTERM');
    // the node arms write their CPU profiles as they exit
    await Promise.all(
      arms.map((a) => new Promise((r) => (a.proc.exitCode !== null ? r(null) : a.proc.once('exit', r)))),
    );
  }
}

/** The rows of one session count: the direct path and every arm, interleaved slice by slice. */
async function measureSessions(
  place: Placement,
  stub: { proc: ChildProcess; port: number },
  arms: Arm[],
  sessions: number,
  rows: Row[],
  onRow: () => void,
): Promise<void> {
  const paths = [
    {
      name: 'direct',
      port: stub.port,
      proxyPid: 0,
      keys: anyKeys(sessions),
    },
    ...(await Promise.all(
      arms.map(async (a) => ({
        name: a.name,
        port: a.port,
        proxyPid: a.proc.pid!,
        keys: await a.keys(sessions),
      })),
    )),
  ].map((p) => ({
    ...p,
    // one keep-alive connection per session on each path, as agents would hold
    pool: new Pool(`http://127.0.0.1:${p.port}`, { connections: sessions, pipelining: 1 }),
  }));
  // LiteLLM spends ~20 ms of CPU per request here, a hundred times the others: it gets fewer requests per row
  // (its rate and CPU per request are averages, so the ratios stay comparable), or the run takes an hour
  const budget = (name: string) =>
    name === 'litellm'
      ? { warm: 1, perSlice: Math.max(1, Math.ceil(LITELLM_REQUESTS / sessions / SLICES)) }
      : { warm: 3, perSlice: Math.max(3, Math.ceil(REQUESTS_PER_CONFIG / sessions / SLICES)) };
  try {
    for (const streaming of [false, true]) {
      // warm-up: every connection opened and every process's code optimised before measuring
      for (const p of paths)
        await drive(
          p.pool,
          p.keys,
          streaming,
          budget(p.name).warm,
          { stub: stub.proc.pid!, proxy: p.proxyPid },
          null,
        );
      const tallies = paths.map(newTally);
      for (let slice = 0; slice < SLICES; slice++) {
        for (let k = 0; k < paths.length; k++) {
          const i = (k + slice) % paths.length; // each path takes every position in turn
          const p = paths[i];
          await drive(
            p.pool,
            p.keys,
            streaming,
            budget(p.name).perSlice,
            { stub: stub.proc.pid!, proxy: p.proxyPid },
            tallies[i],
          );
        }
      }
      for (const t of tallies) t.lat.sort((x, y) => x - y);
      for (let i = 1; i < paths.length; i++) {
        const row = rowOf(
          paths[i].name as ArmName,
          sessions,
          streaming,
          place.pinned,
          tallies[0],
          tallies[i],
        );
        rows.push(row);
        printRow(row);
        onRow();
      }
    }
  } finally {
    await Promise.all(paths.map((p) => p.pool.close()));
  }
}

function rowOf(arm: ArmName, sessions: number, streaming: boolean, pinned: boolean, d: Tally, p: Tally): Row {
  const n = p.lat.length;
  const cpu = {
    direct: { load: perRequestUs(d.cpu.load, d.lat.length), stub: perRequestUs(d.cpu.stub, d.lat.length) },
    arm: {
      load: perRequestUs(p.cpu.load, n),
      stub: perRequestUs(p.cpu.stub, n),
      proxy: perRequestUs(p.cpu.proxy, n),
    },
  };
  const directRps = d.lat.length / d.seconds;
  const armRps = n / p.seconds;
  return {
    arm,
    sessions,
    streaming,
    pinned,
    requests: n,
    direct_p50_ms: quantile(d.lat, 0.5),
    arm_p50_ms: quantile(p.lat, 0.5),
    added_p50_ms: quantile(p.lat, 0.5) - quantile(d.lat, 0.5),
    added_p99_ms: quantile(p.lat, 0.99) - quantile(d.lat, 0.99),
    direct_rps: directRps,
    arm_rps: armRps,
    throughput_ratio: armRps / directRps,
    cpu_us_per_request: cpu.arm.proxy,
    cpu_breakdown_us: cpu,
    load_average: os.loadavg()[0],
    cpu_bound_ratio: (cpu.arm.load + cpu.arm.stub) / (cpu.arm.load + cpu.arm.stub + cpu.arm.proxy),
    // Pinned: the ratio if the arm had its core(s) and the clients theirs to themselves; and the share of
    // one core the arm got while measured (below 1 at full load: other work held its core).
    ...(pinned
      ? {
          core_bound_ratio: Math.min(1, (cpu.arm.load + cpu.arm.stub) / cpu.arm.proxy),
          proxy_core_busy: p.cpu.proxy / p.seconds,
        }
      : {}),
  };
}

function printRow(row: Row): void {
  const f = (x: unknown, digits = 2) => (x as number).toFixed(digits);
  console.log(
    `${row.pinned ? 'pinned  ' : 'unpinned'} ${row.arm.padEnd(11)} ${String(row.sessions).padStart(4)} sessions ` +
      `${row.streaming ? 'stream' : 'whole '}  added p50 ${f(row.added_p50_ms, 3)} ms  p99 ${f(row.added_p99_ms, 3)} ms  ` +
      `throughput ${f(row.throughput_ratio)}x (${f(row.arm_rps, 0)} vs ${f(row.direct_rps, 0)} req/s)  ` +
      `arm CPU ${f(row.cpu_us_per_request, 0)} us/request  load ${f(row.load_average, 1)}`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
