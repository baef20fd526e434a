// The bare pass-through arm of bench/dataplane: the least a Node HTTP proxy built like trainflow's can do.
// The same parts (node:http server, undici Pool to the upstream through its dispatch API, the request body
// gathered and sent as one buffer) and the same writes to the agent (the chunks of one tick in one write,
// the last ones with the end of the response), but it reads nothing and records nothing: no JSON parsing,
// no sessions, no ledger. The difference in CPU per request between the two is what recording costs.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool, type Dispatcher } from 'undici';

const upstream = new URL(process.argv[2] ?? 'http://127.0.0.1:8000');
const pool = new Pool(upstream.origin, {
  connections: 1024,
  pipelining: 1,
  keepAliveTimeout: 60_000,
  headersTimeout: 0,
  bodyTimeout: 0,
});

/** One forwarded request: undici's handler for the upstream side, the writer of the agent's side. */
class Exchange implements Dispatcher.DispatchHandler {
  private readonly chunks: Buffer[] = [];
  private queued = false;
  private ended = false;

  constructor(readonly res: http.ServerResponse) {}

  onConnect(): void {}

  onHeaders(status: number, raw: Buffer[] | string[] | null): boolean {
    const headers: Record<string, string> = {};
    for (let i = 0; raw && i + 1 < raw.length; i += 2) {
      const name = raw[i].toString().toLowerCase();
      if (name === 'content-type' || name === 'content-length') headers[name] = raw[i + 1].toString();
    }
    this.res.writeHead(status, headers);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.chunks.push(chunk);
    if (!this.queued) {
      this.queued = true;
      process.nextTick(flush, this);
    }
    return true;
  }

  take(): Buffer | null {
    const n = this.chunks.length;
    if (n === 0) return null;
    const out = n === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    this.chunks.length = 0;
    return out;
  }

  flush(): void {
    this.queued = false;
    if (this.ended) return;
    const out = this.take();
    if (out) this.res.write(out);
  }

  onComplete(): void {
    this.ended = true;
    const rest = this.take();
    if (rest) this.res.end(rest);
    else this.res.end();
  }

  onError(err: Error): void {
    this.ended = true;
    if (this.res.headersSent) {
      this.res.destroy();
      return;
    }
    this.res.writeHead(502, { 'content-type': 'text/plain' });
    this.res.end(String(err));
  }
}

function flush(x: Exchange): void {
  x.flush();
}

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const headers: Record<string, string> = {
      'content-type': req.headers['content-type'] ?? 'application/json',
    };
    if (req.headers.authorization) headers.authorization = req.headers.authorization;
    pool.dispatch(
      {
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers,
        body: chunks.length === 1 ? chunks[0] : Buffer.concat(chunks),
      },
      new Exchange(res),
    );
  });
});
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () =>
  process.stdout.write(`PASSTHROUGH ${(server.address() as AddressInfo).port}\n`),
);
// An exit on SIGTERM (not the default kill) so that `node --cpu-prof` (BENCH_PROXY_PROF) writes its profile.
process.once('SIGTERM', () => process.exit(0));
