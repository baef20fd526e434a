// bench/dataplane: what the trajectory proxy adds over talking to the inference server directly.
// A fast stub upstream (bench/dataplane/stub.ts) and the proxy (`trainflow dataplane serve`) run as their own
// processes on loopback; this process drives 1, 64 and 512 concurrent agent sessions (each a loop of chat
// requests, non-streaming and streaming), first straight at the stub, then through the proxy, in one run.
// Reported per row: added latency p50/p99 (proxy minus direct) and the throughput ratio (proxy / direct).
// Run: npx tsx bench/dataplane/run.ts   → bench/results/dataplane.json
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';

const ROOT = path.resolve(__dirname, '../..');
const ADMIN = 'bench-admin';
const SESSIONS = [1, 64, 512];
const REQUESTS_PER_CONFIG = Number(process.env.BENCH_REQUESTS ?? 6000);

function start(args: string[], marker: RegExp): Promise<{ proc: ChildProcess; port: number }> {
  const proc = spawn(process.execPath, args, {
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

const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });

function post(
  port: number,
  pathname: string,
  body: string,
  key: string,
): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: pathname,
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${key}`,
          'content-length': Buffer.byteLength(body),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function drive(
  port: number,
  keys: string[],
  streaming: boolean,
  perSession = Math.max(5, Math.ceil(REQUESTS_PER_CONFIG / keys.length)),
): Promise<{ p50: number; p99: number; rps: number; count: number }> {
  const lat: number[] = [];
  const t0 = process.hrtime.bigint();
  await Promise.all(
    keys.map(async (key, s) => {
      const messages = [{ role: 'user', content: `session ${s}: fix the failing test` }];
      for (let i = 0; i < perSession; i++) {
        const body = JSON.stringify({ model: 'stub', messages, max_tokens: 16, stream: streaming });
        const a = process.hrtime.bigint();
        const r = await post(port, '/v1/chat/completions', body, key);
        lat.push(Number(process.hrtime.bigint() - a) / 1e6);
        if (r.status !== 200) throw new Error(`request failed ${r.status}: ${r.text}`);
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((x, y) => x - y);
  return { p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), rps: lat.length / seconds, count: lat.length };
}

async function main(): Promise<void> {
  const loadAtStart = os.loadavg()[0];
  const stub = await start(['-r', 'tsx/cjs', 'bench/dataplane/stub.ts'], /^STUB (\d+)/);
  const proxy = await start(
    [
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
  );
  const rows = [];
  try {
    for (const sessions of SESSIONS) {
      const keys: string[] = [];
      for (let i = 0; i < sessions; i++) {
        const r = await post(proxy.port, '/admin/sessions', JSON.stringify({ task_id: `bench-${i}` }), ADMIN);
        keys.push((JSON.parse(r.text) as { key: string }).key);
      }
      for (const streaming of [false, true]) {
        // Warm-up: every session's connection opened on both paths before measuring.
        await drive(stub.port, keys, streaming, 2);
        await drive(proxy.port, keys, streaming, 2);
        const direct = await drive(stub.port, keys, streaming);
        const cpu0 = cpuSeconds(proxy.proc.pid!);
        const viaProxy = await drive(proxy.port, keys, streaming);
        const proxyCpuUs = ((cpuSeconds(proxy.proc.pid!) - cpu0) / viaProxy.count) * 1e6;
        const row = {
          sessions,
          streaming,
          direct_p50_ms: direct.p50,
          proxy_p50_ms: viaProxy.p50,
          added_p50_ms: viaProxy.p50 - direct.p50,
          added_p99_ms: viaProxy.p99 - direct.p99,
          direct_rps: direct.rps,
          proxy_rps: viaProxy.rps,
          throughput_ratio: viaProxy.rps / direct.rps,
          proxy_cpu_us_per_request: proxyCpuUs,
        };
        rows.push(row);
        console.log(
          `${String(sessions).padStart(4)} sessions ${streaming ? 'stream' : 'whole '}  added p50 ${row.added_p50_ms.toFixed(3)} ms  p99 ${row.added_p99_ms.toFixed(3)} ms  throughput ${row.throughput_ratio.toFixed(2)}x (${viaProxy.rps.toFixed(0)} vs ${direct.rps.toFixed(0)} req/s), proxy CPU ${proxyCpuUs.toFixed(0)} us/request`,
        );
      }
    }
  } finally {
    proxy.proc.kill('SIGTERM');
    stub.proc.kill('SIGTERM');
    agent.destroy();
  }
  const file = path.join(ROOT, 'bench/results/dataplane.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(
    file,
    JSON.stringify(
      {
        bench: 'dataplane',
        requests_per_config: REQUESTS_PER_CONFIG,
        cpus: os.cpus().length,
        load_average_at_start: loadAtStart,
        rows,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
