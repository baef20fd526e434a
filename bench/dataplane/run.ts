// bench/dataplane: what the trajectory proxy adds over talking to the inference server directly.
// A fast stub upstream (bench/dataplane/stub.ts) and the proxy (`trainflow dataplane serve`) run as their own
// processes on loopback; this process drives 1, 64 and 512 concurrent agent sessions (each a loop of chat
// requests, non-streaming and streaming) straight at the stub and through the proxy. The two are measured in
// interleaved slices (direct, proxy, proxy, direct, ...) so that a change in the machine's load during the
// run hits both alike. Reported per row: added latency p50/p99 (proxy minus direct), the throughput ratio
// (proxy / direct) and the CPU each process spent per request.
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
// Run: npx tsx bench/dataplane/run.ts   → bench/results/dataplane.json   (BENCH_REQUESTS=N to change size,
// BENCH_SESSIONS=1,64 for a subset;
// BENCH_PROXY_PROF=DIR writes the proxy's V8 CPU profiles there, `node --cpu-prof`)
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { Pool } from 'undici';

const ROOT = path.resolve(__dirname, '../..');
const ADMIN = 'bench-admin';
const SESSIONS = (process.env.BENCH_SESSIONS ?? '1,64,512').split(',').map(Number); // a subset: quick checks
const REQUESTS_PER_CONFIG = Number(process.env.BENCH_REQUESTS ?? 6000);
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
  args: string[],
  marker: RegExp,
  cpus: string | null,
): Promise<{ proc: ChildProcess; port: number }> {
  // taskset execs node in place: the pid is node's (its /proc CPU counters are read below)
  const [cmd, argv] = cpus ? ['taskset', ['-c', cpus, process.execPath, ...args]] : [process.execPath, args];
  const proc = spawn(cmd, argv, {
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

interface Tally {
  lat: number[];
  seconds: number;
  cpu: { load: number; stub: number; proxy: number };
}

const newTally = (): Tally => ({ lat: [], seconds: 0, cpu: { load: 0, stub: 0, proxy: 0 } });

/** Drives `keys.length` sessions, `perSession` requests each, through `pool`; adds to the tally. */
async function drive(
  pool: Pool,
  keys: string[],
  streaming: boolean,
  perSession: number,
  pids: { stub: number; proxy: number },
  tally: Tally | null,
): Promise<void> {
  const cpu0 = { load: selfCpuSeconds(), stub: cpuSeconds(pids.stub), proxy: cpuSeconds(pids.proxy) };
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
        if (r.statusCode !== 200) throw new Error(`request failed ${r.statusCode}: ${text}`);
      }
    }),
  );
  if (!tally) return;
  tally.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
  tally.cpu.load += selfCpuSeconds() - cpu0.load;
  tally.cpu.stub += cpuSeconds(pids.stub) - cpu0.stub;
  tally.cpu.proxy += cpuSeconds(pids.proxy) - cpu0.proxy;
}

interface Row {
  sessions: number;
  streaming: boolean;
  pinned: boolean;
  added_p50_ms: number;
  throughput_ratio: number;
  [more: string]: unknown;
}

const perRequestUs = (seconds: number, n: number): number => (seconds / n) * 1e6;

async function main(): Promise<void> {
  os.setPriority(NICE); // others share the CPU; the children inherit it
  const loadAtStart = os.loadavg()[0];
  const cpus = os.availableParallelism();
  const plan = placements(cpus);
  const rows: Row[] = [];
  for (const place of plan) await measure(place, cpus, rows);
  const judge = (pinned: boolean) => {
    const at = (sessions: number) => rows.filter((r) => r.pinned === pinned && r.sessions === sessions);
    return {
      added_p50_ms_at_1_session: { target: '<= 0.5', met: at(1).every((r) => r.added_p50_ms <= 0.5) },
      throughput_ratio_at_64_sessions: {
        target: '>= 0.8',
        met: at(64).every((r) => r.throughput_ratio >= 0.8),
      },
    };
  };
  const pinned = plan.find((p) => p.pinned);
  const targets = { unpinned: judge(false), ...(pinned ? { pinned: judge(true) } : {}) };
  const file = path.join(ROOT, 'bench/results/dataplane.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        bench: 'dataplane',
        requests_per_config: REQUESTS_PER_CONFIG,
        slices: SLICES,
        nproc: cpus,
        pinning: pinned
          ? { proxy_cpus: pinned.proxy, load_generator_and_stub_cpus: pinned.loadAndStub, tool: 'taskset -c' }
          : 'none: fewer than 2 cores',
        shared_cpus:
          'unpinned rows: the load generator, the stub upstream and the proxy are three processes sharing ' +
          'all cores (and other users of the machine); pinned rows: the proxy on its own core(s), the load ' +
          'generator and the stub on the others, in both arms; the run is niced',
        nice: NICE,
        load_average_at_start: loadAtStart,
        node: process.version,
        targets,
        rows,
      },
      null,
      2,
    ) + '\n',
  );
  for (const [set, t] of Object.entries(targets))
    console.log(
      `targets (${set}): added p50 at 1 session ${t.added_p50_ms_at_1_session.met ? 'met' : 'MISSED'}, ` +
        `throughput at 64 sessions ${t.throughput_ratio_at_64_sessions.met ? 'met' : 'MISSED'}`,
    );
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

/** Every row (sessions × streaming) with one placement of the processes; appends to `rows`. */
async function measure(place: Placement, cpus: number, rows: Row[]): Promise<void> {
  pinSelf(place.loadAndStub ?? `0-${cpus - 1}`);
  console.log(
    place.pinned
      ? `pinned: proxy on cpus ${place.proxy}, load generator and stub on ${place.loadAndStub}`
      : `unpinned: all processes on cpus 0-${cpus - 1}`,
  );
  const prof = process.env.BENCH_PROXY_PROF;
  const stub = await start(['-r', 'tsx/cjs', 'bench/dataplane/stub.ts'], /^STUB (\d+)/, place.loadAndStub);
  const proxy = await start(
    [
      ...(prof ? ['--cpu-prof', '--cpu-prof-dir', prof] : []),
      'bin/trainflow.js',
      'dataplane',
      'serve',
      '--upstream',
      `http://127.0.0.1:${stub.port}`,
      '--port',
      '0',
      '--admin-token',
      ADMIN,
    ],
    /^TRAINFLOW_DATAPLANE .*"port":(\d+)/,
    place.proxy,
  );
  const pids = { stub: stub.proc.pid!, proxy: proxy.proc.pid! };
  const admin = new Pool(`http://127.0.0.1:${proxy.port}`, { connections: 4 });
  try {
    for (const sessions of SESSIONS) {
      const keys: string[] = [];
      for (let i = 0; i < sessions; i++) {
        const r = await admin.request({
          method: 'POST',
          path: '/admin/sessions',
          headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
          body: JSON.stringify({ task_id: `bench-${i}` }),
        });
        keys.push(((await r.body.json()) as { key: string }).key);
      }
      // One keep-alive connection per session on each path, as agents would hold.
      const direct = new Pool(`http://127.0.0.1:${stub.port}`, { connections: sessions, pipelining: 1 });
      const viaProxy = new Pool(`http://127.0.0.1:${proxy.port}`, { connections: sessions, pipelining: 1 });
      const perSlice = Math.max(3, Math.ceil(REQUESTS_PER_CONFIG / sessions / SLICES));
      for (const streaming of [false, true]) {
        // Warm-up: every connection opened, both processes' code optimised, before measuring.
        await drive(direct, keys, streaming, 3, pids, null);
        await drive(viaProxy, keys, streaming, 3, pids, null);
        const d = newTally();
        const p = newTally();
        for (let slice = 0; slice < SLICES; slice++) {
          const order: [Pool, Tally][] =
            slice % 2 === 0
              ? [
                  [direct, d],
                  [viaProxy, p],
                ]
              : [
                  [viaProxy, p],
                  [direct, d],
                ];
          for (const [pool, tally] of order) await drive(pool, keys, streaming, perSlice, pids, tally);
        }
        d.lat.sort((x, y) => x - y);
        p.lat.sort((x, y) => x - y);
        const n = p.lat.length;
        const cpu = {
          direct: {
            load: perRequestUs(d.cpu.load, n),
            stub: perRequestUs(d.cpu.stub, n),
          },
          proxied: {
            load: perRequestUs(p.cpu.load, n),
            stub: perRequestUs(p.cpu.stub, n),
            proxy: perRequestUs(p.cpu.proxy, n),
          },
        };
        const directRps = d.lat.length / d.seconds;
        const proxyRps = n / p.seconds;
        const row = {
          sessions,
          streaming,
          pinned: place.pinned,
          requests: n,
          direct_p50_ms: quantile(d.lat, 0.5),
          proxy_p50_ms: quantile(p.lat, 0.5),
          added_p50_ms: quantile(p.lat, 0.5) - quantile(d.lat, 0.5),
          added_p99_ms: quantile(p.lat, 0.99) - quantile(d.lat, 0.99),
          direct_rps: directRps,
          proxy_rps: proxyRps,
          throughput_ratio: proxyRps / directRps,
          proxy_cpu_us_per_request: cpu.proxied.proxy,
          cpu_us_per_request: cpu,
          cpu_bound_ratio:
            (cpu.proxied.load + cpu.proxied.stub) / (cpu.proxied.load + cpu.proxied.stub + cpu.proxied.proxy),
          // Pinned: the ratio if the proxy had its core(s) and the clients theirs to themselves; and the
          // share of one core the proxy got while proxying (below 1 at full load: other work held its core).
          ...(place.pinned
            ? {
                core_bound_ratio: Math.min(1, (cpu.proxied.load + cpu.proxied.stub) / cpu.proxied.proxy),
                proxy_core_busy: p.cpu.proxy / p.seconds,
              }
            : {}),
        };
        rows.push(row);
        console.log(
          `${place.pinned ? 'pinned  ' : 'unpinned'} ${String(sessions).padStart(4)} sessions ${streaming ? 'stream' : 'whole '}  ` +
            `added p50 ${row.added_p50_ms.toFixed(3)} ms  p99 ${row.added_p99_ms.toFixed(3)} ms  ` +
            `throughput ${row.throughput_ratio.toFixed(2)}x (${proxyRps.toFixed(0)} vs ${directRps.toFixed(0)} req/s)  ` +
            `CPU us/request: proxy ${cpu.proxied.proxy.toFixed(0)}, stub ${cpu.proxied.stub.toFixed(0)}, ` +
            `load ${cpu.proxied.load.toFixed(0)} (CPU-bound ratio ${row.cpu_bound_ratio.toFixed(2)}` +
            (row.proxy_core_busy === undefined
              ? ')'
              : `, core-bound ${row.core_bound_ratio!.toFixed(2)}, proxy core busy ${row.proxy_core_busy.toFixed(2)})`),
        );
      }
      await direct.close();
      await viaProxy.close();
    }
  } finally {
    proxy.proc.kill('SIGTERM');
    stub.proc.kill('SIGTERM');
    await admin.close();
    // the proxy writes its CPU profile as it exits
    await new Promise((r) => (proxy.proc.exitCode !== null ? r(null) : proxy.proc.once('exit', r)));
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
