// The inference servers behind the proxy: keep-alive connections, session affinity, failover.
//
// A session sticks to one upstream (its KV-cache prefix stays warm there); new sessions go to the upstream
// with the fewest sessions. An upstream that refuses a connection is marked down for a short while and the
// request is retried on another one; only when none answers does the agent get a 503.
//
// A fleet of engines (src/dataplane/fleet.ts) also switches upstreams off and on: an engine that died, is
// restarting, or was taken back for training is `enabled: false`, so no request goes there and its sessions
// fail over to the others. A request that finds no enabled upstream waits (up to `waitForUpstreamMs`) for one
// to come back instead of failing at once: the fleet restarts a dead engine within seconds.
//
// Each upstream has one undici Pool (keep-alive, no pipelining: a generation can run for minutes and must
// not hold up the requests queued behind it on the same connection). undici costs less CPU per request
// than node:http's client (bench/dataplane), and the proxy's CPU is what agents wait on. Inference responses
// go through `forward`: undici's dispatch API hands each body chunk straight to the proxy (a ResponseSink),
// without the Readable stream its request API builds around every response.
import { Pool, type Dispatcher } from 'undici';

export interface Upstream {
  url: URL;
  sessions: number;
  downUntil: number;
  /** the policy version the proxy last loaded there (a fallback tag for servers that do not report one) */
  version: number | null;
  /** false while the fleet has it stopped, dead or starting: nothing is sent there (admin fan-out included) */
  enabled: boolean;
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

/** A failure to reach a server, or a connection it dropped (a dead engine), as opposed to an answer. */
export function isConnectionError(err: unknown): boolean {
  return RETRYABLE.has((err as { code?: string } | null)?.code ?? '');
}

/** Receives a forwarded response as undici reads it: the head once, then every body chunk in order. */
export interface ResponseSink {
  head(status: number, contentType: string | undefined): void;
  data(chunk: Buffer): void;
  /** the response is complete (called in the same tick as its last chunk, before the forward resolves) */
  complete?(): void;
}

/**
 * One attempt's undici dispatch handler (its callback API, the one undici runs on internally): a class, so
 * a request allocates one object rather than a closure per callback.
 */
class Exchange {
  started = false;
  constructor(
    private readonly sink: ResponseSink,
    private readonly done: (err: Error | null) => void,
  ) {}

  onConnect(): void {}

  onHeaders(status: number, raw: Buffer[] | string[] | null): boolean {
    this.started = true;
    this.sink.head(status, contentType(raw));
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.sink.data(chunk);
    return true;
  }

  onComplete(): void {
    this.sink.complete?.();
    this.done(null);
  }

  onError(err: Error): void {
    this.done(err);
  }
}

/** The content-type among undici's raw header pairs (name, value, name, value, ...). */
function contentType(raw: Buffer[] | string[] | null): string | undefined {
  if (!raw) return undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i].toString();
    if (name.length === 12 && name.toLowerCase() === 'content-type') return raw[i + 1].toString();
  }
  return undefined;
}

export class UpstreamPool {
  readonly upstreams: Upstream[];
  /** the path prefix of each upstream URL (`http://host:port/prefix`), without a trailing slash */
  private readonly prefixes: string[];

  private readonly pools: Pool[];
  private readonly waiters = new Set<() => void>();
  /** how long a request waits for an enabled upstream when there is none (0: fail at once) */
  waitForUpstreamMs = 0;
  /** requests moved to another upstream after a connection-level failure (a dead or restarting engine) */
  failovers = 0;
  /** true when a fleet manages the upstreams (src/dataplane/fleet.ts): it restarts the ones that die */
  managed = false;

  constructor(
    urls: string[],
    private readonly downForMs = 2000,
  ) {
    if (urls.length === 0) throw new Error('the proxy needs at least one upstream inference server URL');
    this.upstreams = urls.map((u) => ({
      url: new URL(u),
      sessions: 0,
      downUntil: 0,
      version: null,
      enabled: true,
    }));
    this.prefixes = this.upstreams.map((u) => u.url.pathname.replace(/\/$/, ''));
    this.pools = this.upstreams.map((u) => newPool(u.url));
  }

  /** Switches an upstream off (no request goes there; sessions fail over) or on again (wakes waiters). */
  setEnabled(index: number, enabled: boolean): void {
    const u = this.upstreams[index];
    u.enabled = enabled;
    if (enabled) {
      u.downUntil = 0;
      for (const w of [...this.waiters]) w();
    }
  }

  /** Points an upstream at a new address (an engine restarted elsewhere); in-flight requests there fail. */
  setUrl(index: number, url: string): void {
    const u = this.upstreams[index];
    const next = new URL(url);
    if (next.href === u.url.href) return;
    void this.pools[index].destroy();
    u.url = next;
    this.prefixes[index] = next.pathname.replace(/\/$/, '');
    this.pools[index] = newPool(next);
  }

  /** Resolves when an upstream is switched on, or after `ms`, whichever is first. */
  private waitForEnabled(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /**
   * assign(); when it finds nothing and waiting is on, waits (for an upstream switched on, or half a second)
   * and tries every upstream again, until waitForUpstreamMs has passed: a restarting fleet, not an error.
   */
  private async assignWaiting(
    current: number | null,
    tried: Set<number> | undefined,
    deadline: number,
  ): Promise<number> {
    for (;;) {
      try {
        return this.assign(current, tried);
      } catch (err) {
        const left = deadline - Date.now();
        if (!(err instanceof NoUpstreamError) || left <= 0) throw err;
        await this.waitForEnabled(Math.min(500, left));
        tried?.clear();
      }
    }
  }

  /** The upstream for a session: its sticky one if alive, else the least loaded live one. */
  assign(current: number | null, exclude?: Set<number>): number {
    const now = Date.now();
    if (
      current !== null &&
      !exclude?.has(current) &&
      this.upstreams[current].enabled &&
      this.upstreams[current].downUntil <= now
    )
      return current;
    let best = -1;
    for (let i = 0; i < this.upstreams.length; i++) {
      if (exclude?.has(i)) continue;
      const u = this.upstreams[i];
      if (u.downUntil > now || !u.enabled) continue;
      if (best < 0 || u.sessions < this.upstreams[best].sessions) best = i;
    }
    if (best < 0) {
      // Everything is marked down: try the enabled ones not yet tried in this request anyway (the mark may
      // be stale). Switched-off upstreams are never tried: the fleet knows they are not serving.
      for (let i = 0; i < this.upstreams.length; i++)
        if (!exclude?.has(i) && this.upstreams[i].enabled) {
          if (current !== null && current !== i) this.upstreams[current].sessions--;
          if (current !== i) this.upstreams[i].sessions++;
          return i;
        }
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
    const deadline = Date.now() + this.waitForUpstreamMs;
    for (;;) {
      const index = await this.assignWaiting(current, tried, deadline);
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
        if (!RETRYABLE.has((err as { code?: string }).code ?? '')) throw err;
        tried = this.markDown(index, tried, err, deadline);
      }
    }
  }

  /**
   * After a connection-level failure on upstream `index`: marks it down for a while and returns the set of
   * upstreams this request has tried, or throws NoUpstreamError when it has tried them all.
   */
  private markDown(index: number, tried: Set<number> | undefined, err: unknown, deadline = 0): Set<number> {
    this.upstreams[index].downUntil = Date.now() + this.downForMs;
    this.failovers++;
    tried ??= new Set();
    tried.add(index);
    if (tried.size >= this.upstreams.length && (this.waitForUpstreamMs === 0 || Date.now() >= deadline))
      throw new NoUpstreamError(
        `no inference server is reachable (last error: ${(err as Error)?.message ?? String(err)})`,
      );
    return tried;
  }

  /**
   * Sends a request and streams its response into `sink`, with the failover of `send`: a connection-level
   * error before the response started is retried on another upstream; anything later rejects (the request
   * may have run). `affinity.upstream` is the session's upstream, updated to the one used. Resolves with the
   * upstream that answered once the response is complete.
   */
  async forward(
    path: string,
    body: Buffer | string,
    affinity: { upstream: number | null },
    sink: ResponseSink,
  ): Promise<Upstream> {
    let tried: Set<number> | undefined;
    const deadline = Date.now() + this.waitForUpstreamMs;
    for (;;) {
      const index = await this.assignWaiting(affinity.upstream, tried, deadline);
      affinity.upstream = index;
      const failed = await this.dispatchOnce(index, path, body, sink);
      if (failed === null) return this.upstreams[index];
      if (failed.started || !RETRYABLE.has(failed.code ?? '')) throw failed.error;
      tried = this.markDown(index, tried, failed.error, deadline);
    }
  }

  /** One attempt; resolves with null when the response is complete, else the error and whether it started. */
  private dispatchOnce(
    index: number,
    path: string,
    body: Buffer | string,
    sink: ResponseSink,
  ): Promise<{ error: Error; started: boolean; code?: string } | null> {
    return new Promise((resolve) => {
      const x: Exchange = new Exchange(sink, (error) =>
        resolve(
          error === null ? null : { error, started: x.started, code: (error as { code?: string }).code },
        ),
      );
      this.pools[index].dispatch(
        { method: 'POST', path: this.prefixes[index] + path, headers: JSON_HEADERS, body },
        x,
      );
    });
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
    for (const w of [...this.waiters]) w();
  }
}

// No header or body timeouts: a long generation (or a pause for a weight reload) may take minutes.
function newPool(url: URL): Pool {
  return new Pool(url.origin, {
    connections: 1024,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: 0,
    bodyTimeout: 0,
  });
}
