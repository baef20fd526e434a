// The inference servers behind the proxy: keep-alive connections, session affinity, failover.
//
// A session sticks to one upstream (its KV-cache prefix stays warm there); new sessions go to the upstream
// with the fewest sessions. An upstream that refuses a connection is marked down for a short while and the
// request is retried on another one; only when none answers does the agent get a 503.
import http from 'node:http';

export interface Upstream {
  url: URL;
  sessions: number;
  downUntil: number;
  /** the policy version the proxy last loaded there (a fallback tag for servers that do not report one) */
  version: number | null;
}

export class NoUpstreamError extends Error {}

export interface UpstreamResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
  upstream: Upstream;
  index: number;
}

const RETRYABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENOTFOUND', 'EPIPE', 'ETIMEDOUT']);

export class UpstreamPool {
  readonly upstreams: Upstream[];
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 1024 });

  constructor(
    urls: string[],
    private readonly downForMs = 2000,
  ) {
    if (urls.length === 0) throw new Error('the proxy needs at least one upstream inference server URL');
    this.upstreams = urls.map((u) => ({ url: new URL(u), sessions: 0, downUntil: 0, version: null }));
  }

  /** The upstream for a session: its sticky one if alive, else the least loaded live one. */
  assign(current: number | null, exclude: Set<number> = new Set()): number {
    const now = Date.now();
    if (current !== null && !exclude.has(current) && this.upstreams[current].downUntil <= now) return current;
    let best = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      if (exclude.has(i)) continue;
      const u = this.upstreams[i];
      if (u.downUntil > now) continue;
      if (best < 0 || u.sessions < this.upstreams[best].sessions) best = i;
    }
    if (best < 0) {
      // Everything is marked down: try the ones not yet tried in this request anyway (the mark may be stale).
      for (let i = 0; i < this.upstreams.length; i++) if (!exclude.has(i)) return i;
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
    method: string,
    path: string,
    body: Buffer | null,
    current: number | null,
    onAssign: (index: number) => void,
    headers: http.OutgoingHttpHeaders = {},
  ): Promise<UpstreamResponse> {
    const tried = new Set<number>();
    let last: unknown = null;
    while (tried.size < this.upstreams.length) {
      const index = this.assign(current, tried);
      tried.add(index);
      onAssign(index);
      current = index;
      const u = this.upstreams[index];
      try {
        const res = await this.once(u, method, path, body, headers);
        return { status: res.statusCode ?? 502, headers: res.headers, body: res, upstream: u, index };
      } catch (err) {
        const code = (err as { code?: string }).code ?? '';
        if (!RETRYABLE.has(code)) throw err;
        u.downUntil = Date.now() + this.downForMs;
        last = err;
      }
    }
    throw new NoUpstreamError(
      `no inference server is reachable (last error: ${(last as Error)?.message ?? 'none'})`,
    );
  }

  private once(
    u: Upstream,
    method: string,
    path: string,
    body: Buffer | null,
    headers: http.OutgoingHttpHeaders,
  ): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          agent: this.agent,
          host: u.url.hostname,
          port: u.url.port,
          method,
          path: u.url.pathname.replace(/\/$/, '') + path,
          headers: {
            ...headers,
            ...(body ? { 'content-type': 'application/json', 'content-length': body.length } : {}),
          },
        },
        resolve,
      );
      req.on('error', reject);
      req.end(body ?? undefined);
    });
  }

  /** A JSON request to one upstream (admin fan-out, tokenize); throws on transport errors. */
  async json(
    index: number,
    path: string,
    payload: unknown,
    headers: http.OutgoingHttpHeaders = {},
  ): Promise<{ status: number; body: unknown }> {
    const res = await this.once(
      this.upstreams[index],
      'POST',
      path,
      Buffer.from(JSON.stringify(payload)),
      headers,
    );
    const text = await readAll(res);
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: res.statusCode ?? 502, body };
  }

  close(): void {
    this.agent.destroy();
  }
}

export function readAll(stream: NodeJS.ReadableStream, limit = 64 * 1024 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) reject(new Error(`body larger than ${limit} bytes`));
      else chunks.push(c);
    });
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('error', reject);
  });
}
