// The inference servers behind the proxy: keep-alive connections, session affinity, failover.
//
// A session sticks to one upstream (its KV-cache prefix stays warm there); new sessions go to the upstream
// with the fewest sessions. An upstream that refuses a connection is marked down for a short while and the
// request is retried on another one; only when none answers does the agent get a 503.
//
// Each upstream has one undici Pool (keep-alive, no pipelining: a generation can run for minutes and must
// not hold up the requests queued behind it on the same connection). undici costs less CPU per request
// than node:http's client (bench/dataplane), and the proxy's CPU is what agents wait on.
import { Pool, type Dispatcher } from 'undici';

export interface Upstream {
  url: URL;
  sessions: number;
  downUntil: number;
  /** the policy version the proxy last loaded there (a fallback tag for servers that do not report one) */
  version: number | null;
}

export class NoUpstreamError extends Error {}

export type UpstreamHeaders = Record<string, string | string[] | undefined>;

export interface UpstreamResponse {
  status: number;
  headers: UpstreamHeaders;
  body: Dispatcher.ResponseData['body'];
  upstream: Upstream;
  index: number;
}

// Connection-level failures: the request never reached a server that could have run it (a keep-alive
// socket the server had already closed shows up as UND_ERR_SOCKET), so retrying elsewhere is safe.
const RETRYABLE = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EPIPE',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
]);

const JSON_HEADERS = { 'content-type': 'application/json' };

export class UpstreamPool {
  readonly upstreams: Upstream[];
  private readonly pools: Pool[];
  /** the path prefix of each upstream URL (`http://host:port/prefix`), without a trailing slash */
  private readonly prefixes: string[];

  constructor(
    urls: string[],
    private readonly downForMs = 2000,
  ) {
    if (urls.length === 0) throw new Error('the proxy needs at least one upstream inference server URL');
    this.upstreams = urls.map((u) => ({ url: new URL(u), sessions: 0, downUntil: 0, version: null }));
    this.prefixes = this.upstreams.map((u) => u.url.pathname.replace(/\/$/, ''));
    // No header or body timeouts: a long generation (or a pause for a weight reload) may take minutes.
    this.pools = this.upstreams.map(
      (u) =>
        new Pool(u.url.origin, {
          connections: 1024,
          pipelining: 1,
          keepAliveTimeout: 60_000,
          headersTimeout: 0,
          bodyTimeout: 0,
        }),
    );
  }

  /** The upstream for a session: its sticky one if alive, else the least loaded live one. */
  assign(current: number | null, exclude?: Set<number>): number {
    const now = Date.now();
    if (current !== null && !exclude?.has(current) && this.upstreams[current].downUntil <= now)
      return current;
    let best = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      if (exclude?.has(i)) continue;
      const u = this.upstreams[i];
      if (u.downUntil > now) continue;
      if (best < 0 || u.sessions < this.upstreams[best].sessions) best = i;
    }
    if (best < 0) {
      // Everything is marked down: try the ones not yet tried in this request anyway (the mark may be stale).
      for (let i = 0; i < this.upstreams.length; i++) if (!exclude?.has(i)) return i;
      throw new NoUpstreamError('no inference server is reachable');
    }
    if (current !== null && current !== best) this.upstreams[current].sessions--;
    if (current !== best) this.upstreams[best].sessions++;
    return best;
  }

  /**
   * Sends a request, failing over to other upstreams on connection errors. `onAssign` learns the index
   * used (for affinity). Errors after the response started are not retried (the request may have run).
   */
  async send(
    method: 'GET' | 'POST',
    path: string,
    body: Buffer | string | null,
    current: number | null,
    onAssign: (index: number) => void,
    headers: Record<string, string> = JSON_HEADERS,
  ): Promise<UpstreamResponse> {
    let tried: Set<number> | undefined; // allocated only when a first attempt fails
    let last: unknown = null;
    for (;;) {
      const index = this.assign(current, tried);
      onAssign(index);
      current = index;
      try {
        const res = await this.pools[index].request({
          method,
          path: this.prefixes[index] + path,
          headers,
          body: body ?? undefined,
        });
        return {
          status: res.statusCode,
          headers: res.headers,
          body: res.body,
          upstream: this.upstreams[index],
          index,
        };
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        if (!RETRYABLE.has(code)) throw err;
        this.upstreams[index].downUntil = Date.now() + this.downForMs;
        last = err;
        tried ??= new Set();
        tried.add(index);
        if (tried.size >= this.upstreams.length) break;
      }
    }
    throw new NoUpstreamError(
      `no inference server is reachable (last error: ${(last as Error)?.message ?? 'none'})`,
    );
  }

  /** A JSON request to one upstream (admin fan-out, tokenize); throws on transport errors. */
  async json(
    index: number,
    path: string,
    payload: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; body: unknown }> {
    const res = await this.pools[index].request({
      method: 'POST',
      path: this.prefixes[index] + path,
      headers: { ...JSON_HEADERS, ...headers },
      body: JSON.stringify(payload),
    });
    const text = await res.body.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: res.statusCode, body };
  }

  close(): void {
    for (const p of this.pools) void p.destroy();
  }
}

/** Reads a whole upstream body (up to `limit` bytes) as one Buffer. */
export function readAll(stream: NodeJS.ReadableStream, limit = 64 * 1024 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) reject(new Error(`body larger than ${limit} bytes`));
      else chunks.push(c);
    });
    stream.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)));
    stream.on('error', reject);
  });
}
