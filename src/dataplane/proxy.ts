// The trajectory manager: an OpenAI-compatible proxy that records every token of every agent session.
//
// Agents call /v1/chat/completions and /v1/completions with their session key as the API key; the proxy
// forwards to an inference server (sticky per session, failover on refused connections), passes the answer
// through unchanged (streamed or not) and records prompt ids, output ids, log-probs and policy versions per
// choice. Each chat request is matched to the recorded turn it continues; a prompt that does not start with
// that turn's prompt + output ids is tokenisation drift: counted, and in `fix` mode repaired before sending
// by prompting with the recorded ids followed by the ids of the new messages (token in, token out).
//
// Admin endpoints (admin token only): issue session keys, read sessions and trajectories, finish a session
// with its reward (the trajectory is appended to the ledger before the call returns), pause/resume/reload
// the inference servers.
//
// Sessions that are never finished (an agent that crashed or hangs) expire after `sessionIdleMs` without a
// request: their key stops working and their partial record is dropped, not turned into a trajectory. A
// trajectory without a reward cannot be trained on without inventing one (a made-up 0 would teach the
// policy that the infrastructure failing is its fault), and a GRPO group missing a member has a biased
// baseline, so the rollout manager drops the whole group (src/dataplane/rollout.ts). Expiries are counted in
// /admin/stats and reported to `onExpire` listeners.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { absorb, newRecord, SseReader, type ResponseRecord } from './record';
import {
  addTurn,
  extendsHistory,
  findParent,
  messageParts,
  messagesKey,
  recordedHistory,
  sessionTree,
  SessionError,
  SessionStore,
  startsWith,
  type Session,
  type Trajectory,
  type TurnRecord,
} from './sessions';
import { engineControl, VllmRelay, vllmRequest, type EngineControl, type EngineKind } from './engines';
import { isConnectionError, NoUpstreamError, UpstreamPool, type ResponseSink } from './upstreams';

export type DriftMode = 'detect' | 'fix';

export interface ProxyOptions {
  upstreams: string[];
  adminToken: string;
  /** the inference servers' own admin token (for pause/resume/reload) */
  upstreamAdminToken?: string;
  /** what the upstreams are (src/dataplane/engines.ts): `local` (default) or `vllm` */
  engine?: EngineKind;
  drift?: DriftMode;
  /** durably records a finished trajectory; the finish call answers only after it resolves */
  onTrajectory?: (t: Trajectory) => Promise<unknown>;
  /** reads recorded trajectories for GET /admin/trajectories */
  readTrajectories?: (after: number, limit: number) => Promise<unknown>;
  maxBodyBytes?: number;
  /** expire sessions idle (no request, no finish) for this long; 0 or absent: never */
  sessionIdleMs?: number;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = 'invalid_request_error',
  ) {
    super(message);
  }
}

export interface ProxyStats {
  requests: number;
  upstreamErrors: number;
  driftDetected: number;
  driftFixed: number;
  expiredSessions: number;
}

export class TrajectoryProxy {
  readonly sessions = new SessionStore();
  readonly pool: UpstreamPool;
  readonly server: http.Server;
  readonly stats: ProxyStats = {
    requests: 0,
    upstreamErrors: 0,
    driftDetected: 0,
    driftFixed: 0,
    expiredSessions: 0,
  };
  private readonly drift: DriftMode;
  readonly engine: EngineKind;
  private readonly control: EngineControl;
  private readonly expireListeners = new Set<(s: Session) => void>();
  private sweeper: NodeJS.Timeout | null = null;

  constructor(private readonly opts: ProxyOptions) {
    if (!opts.adminToken)
      throw new Error('the proxy needs an admin token (--admin-token or TRAINFLOW_DATAPLANE_ADMIN_TOKEN)');
    this.pool = new UpstreamPool(opts.upstreams);
    this.engine = opts.engine ?? 'local';
    this.control = engineControl(this.engine);
    // vLLM's chat route takes no prompt token ids: drift is detected and counted, not repaired
    this.drift = this.engine === 'vllm' ? 'detect' : (opts.drift ?? 'detect');
    this.server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => this.fail(res, err));
    });
    const idle = opts.sessionIdleMs ?? 0;
    if (!Number.isFinite(idle) || idle < 0)
      throw new Error(`sessionIdleMs must be a number of milliseconds >= 0, got ${idle}`);
    if (idle > 0) {
      // Checked a few times per timeout: a session lives at most ~1.25x its idle timeout.
      this.sweeper = setInterval(() => this.expireIdle(idle), Math.max(20, Math.min(idle / 4, 10_000)));
      this.sweeper.unref();
    }
  }

  /** Calls `fn` with each session that expires; returns a function that stops listening. */
  onExpire(fn: (s: Session) => void): () => void {
    this.expireListeners.add(fn);
    return () => {
      this.expireListeners.delete(fn);
    };
  }

  /** Expires the sessions idle for more than `idleMs` (the sweeper's job; public for tests and drivers). */
  expireIdle(idleMs: number, now = Date.now()): Session[] {
    const gone = this.sessions.expire(idleMs, now);
    for (const s of gone) {
      if (s.upstream !== null) this.pool.upstreams[s.upstream].sessions--;
      this.stats.expiredSessions++;
      for (const fn of this.expireListeners) fn(s);
    }
    return gone;
  }

  listen(port = 0, host = '127.0.0.1'): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      // A deep accept backlog: hundreds of agents connect at once when a rollout wave starts.
      this.server.listen({ port, host, backlog: 4096 }, () =>
        resolve((this.server.address() as AddressInfo).port),
      );
    });
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    this.pool.close();
  }

  // ---------------------------------------------------------------------------------------------- plumbing

  private fail(res: http.ServerResponse, err: unknown): void {
    const e =
      err instanceof HttpError
        ? err
        : err instanceof SessionError
          ? new HttpError(err.status, err.message)
          : err instanceof NoUpstreamError
            ? new HttpError(503, err.message, 'service_unavailable')
            : new HttpError(500, `proxy error: ${(err as Error)?.message ?? String(err)}`, 'server_error');
    if (err instanceof NoUpstreamError) this.stats.upstreamErrors++;
    if (res.headersSent) {
      // the agent has (part of) its answer: say why its turn is not recorded rather than lose it silently
      process.stderr.write(`trajectory proxy: ${e.message}\n`);
      res.destroy();
      return;
    }
    // OpenAI's error shape: clients (the SDKs, litellm) branch on `code`, a string or null, never the status.
    sendJson(res, e.status, { error: { message: e.message, type: e.type, param: null, code: errorCode(e) } });
  }

  private async body(req: http.IncomingMessage): Promise<{ raw: Buffer; json: Record<string, unknown> }> {
    const limit = this.opts.maxBodyBytes ?? 32 * 1024 * 1024;
    const raw = await new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > limit) reject(new HttpError(413, `request body over ${limit} bytes`));
        else chunks.push(c);
      });
      req.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
      req.on('error', reject);
    });
    let json: unknown;
    try {
      json = raw.length ? JSON.parse(raw.toString('utf8')) : {};
    } catch (err) {
      throw new HttpError(400, `the request body is not valid JSON (${(err as Error).message})`);
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json))
      throw new HttpError(400, 'the request body must be a JSON object');
    return { raw, json: json as Record<string, unknown> };
  }

  private bearer(req: http.IncomingMessage): string | null {
    const h = req.headers.authorization;
    return h?.startsWith('Bearer ') ? h.slice(7) : null;
  }

  private requireAdmin(req: http.IncomingMessage): void {
    const token = this.bearer(req);
    if (token === this.opts.adminToken) return;
    if (token && this.sessions.byApiKey(token))
      throw new HttpError(403, 'a session key cannot call admin endpoints', 'permission_error');
    throw new HttpError(
      401,
      "admin endpoints need 'Authorization: Bearer <admin token>'",
      'authentication_error',
    );
  }

  private requireSession(req: http.IncomingMessage): Session {
    const token = this.bearer(req);
    if (!token)
      throw new HttpError(
        401,
        "missing API key: send 'Authorization: Bearer <session key>'",
        'authentication_error',
      );
    const s = this.sessions.byApiKey(token);
    if (!s) {
      if (token === this.opts.adminToken)
        throw new HttpError(
          403,
          'the admin token cannot run inference: issue a session key',
          'permission_error',
        );
      throw new HttpError(401, 'unknown, finished or expired session key', 'authentication_error');
    }
    s.lastActiveAt = Date.now();
    return s;
  }

  // ---------------------------------------------------------------------------------------------- routing

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const rawUrl = req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const method = req.method ?? 'GET';
    if (path === '/health') return sendJson(res, 200, { ok: true });
    if (path.startsWith('/v1/')) {
      const session = this.requireSession(req);
      if (method === 'POST' && path === '/v1/chat/completions')
        return this.inference(req, res, session, 'chat');
      if (method === 'POST' && path === '/v1/completions')
        return this.inference(req, res, session, 'completion');
      if (method === 'GET' && path === '/v1/session') return sendJson(res, 200, this.sessionView(session));
      if (method === 'GET' && path === '/v1/models') {
        const up = await this.pool.send(
          'GET',
          '/v1/models',
          null,
          session.upstream,
          (i) => (session.upstream = i),
        );
        res.writeHead(up.status, { 'content-type': 'application/json' });
        up.body.pipe(res);
        return;
      }
      throw new HttpError(404, `no route ${method} ${path}`);
    }
    if (path.startsWith('/admin/')) {
      this.requireAdmin(req);
      return this.admin(req, res, method, path, new URL(rawUrl, 'http://proxy'));
    }
    throw new HttpError(404, `no route ${method} ${path}`);
  }

  private async admin(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    method: string,
    path: string,
    url: URL,
  ): Promise<void> {
    const sessionMatch = /^\/admin\/sessions\/([^/]+)(\/finish)?$/.exec(path);
    if (method === 'POST' && path === '/admin/sessions') {
      const { json } = await this.body(req);
      const taskId = json.task_id;
      if (typeof taskId !== 'string' || !taskId)
        throw new HttpError(400, "field 'task_id' must be a non-empty string");
      const groupId = typeof json.group_id === 'string' ? json.group_id : null;
      const meta = (typeof json.meta === 'object' && json.meta !== null ? json.meta : {}) as Record<
        string,
        unknown
      >;
      const { session, key } = this.sessions.issue(taskId, groupId, meta);
      return sendJson(res, 201, { session_id: session.id, key });
    }
    if (sessionMatch && method === 'GET' && !sessionMatch[2]) {
      const s = this.sessions.get(sessionMatch[1]);
      if (!s) throw new HttpError(404, `no live session ${sessionMatch[1]}`);
      return sendJson(res, 200, this.sessionView(s));
    }
    if (sessionMatch && method === 'POST' && sessionMatch[2]) {
      const { json } = await this.body(req);
      if (typeof json.reward !== 'number' || !Number.isFinite(json.reward))
        throw new HttpError(400, "field 'reward' must be a finite number");
      const t = await this.finish(sessionMatch[1], json.reward);
      return sendJson(res, 200, t);
    }
    if (method === 'GET' && path === '/admin/trajectories') {
      if (!this.opts.readTrajectories) throw new HttpError(404, 'this proxy has no ledger attached');
      const after = Number(url.searchParams.get('after') ?? '-1');
      const limit = Number(url.searchParams.get('limit') ?? '100');
      if (!Number.isInteger(after) || !Number.isInteger(limit) || limit < 1)
        throw new HttpError(400, "query 'after' and 'limit' must be integers (limit >= 1)");
      return sendJson(res, 200, await this.opts.readTrajectories(after, limit));
    }
    if (method === 'GET' && path === '/admin/stats') {
      return sendJson(res, 200, {
        ...this.stats,
        live_sessions: this.sessions.size,
        failovers: this.pool.failovers,
        upstreams: this.pool.upstreams.map((u) => ({
          url: u.url.toString(),
          sessions: u.sessions,
          version: u.version,
          down: u.downUntil > Date.now(),
          enabled: u.enabled,
        })),
      });
    }
    if (method === 'POST' && (path === '/admin/pause' || path === '/admin/resume')) {
      const out = path === '/admin/pause' ? await this.pauseAll() : await this.resumeAll();
      return sendJson(res, 200, { upstreams: out });
    }
    if (method === 'POST' && path === '/admin/reload') {
      const { json } = await this.body(req);
      if (typeof json.path !== 'string' || !json.path)
        throw new HttpError(400, "field 'path' must name a committed checkpoint");
      if (json.version !== undefined && !Number.isInteger(json.version))
        throw new HttpError(400, "field 'version' must be an integer");
      return sendJson(res, 200, {
        upstreams: await this.reloadAll(json.path, json.version as number | undefined),
      });
    }
    throw new HttpError(404, `no route ${method} ${path}`);
  }

  // ------------------------------------------------------------------------------------ weight updates

  /**
   * Calls an admin endpoint on every enabled upstream (one the fleet has stopped, or is restarting, gets the
   * current weights when it starts); throws if any fails (a half-updated fleet must be noticed). The answers
   * come back in upstream order, null for the ones skipped.
   */
  async fanOut(path: string, payload: unknown): Promise<unknown[]> {
    const headers: Record<string, string> = this.opts.upstreamAdminToken
      ? { authorization: `Bearer ${this.opts.upstreamAdminToken}` }
      : {};
    const results = await Promise.all(
      this.pool.upstreams.map((u, i) =>
        u.enabled
          ? this.pool.json(i, path, payload, headers).catch((err: unknown) => this.lost(i, err))
          : Promise.resolve(null),
      ),
    );
    const bad = results.findIndex((r) => r !== null && r.status !== 200);
    if (bad >= 0)
      throw new HttpError(
        502,
        `upstream ${this.pool.upstreams[bad].url.toString()} ${path} failed: ${JSON.stringify(results[bad]!.body)}`,
        'upstream_error',
      );
    return results.map((r) => (r === null ? null : r.body));
  }

  /**
   * An admin call that failed at the connection level: with a fleet managing the engines (it restarts a dead
   * one on the current weights, unpaused) that engine is simply skipped; without one the error stands.
   */
  private lost(index: number, err: unknown): null {
    if (!this.pool.managed || !isConnectionError(err)) throw err;
    this.pool.setEnabled(index, false);
    return null;
  }

  private readonly fan = (path: string, payload: unknown): Promise<unknown[]> => this.fanOut(path, payload);

  pauseAll(): Promise<unknown[]> {
    return this.control.pause(this.fan);
  }

  resumeAll(): Promise<unknown[]> {
    return this.control.resume(this.fan);
  }

  /** Reloads every upstream; the versions it reports (or `version`) tag the tokens sampled from now on. */
  async reloadAll(path: string, version?: number): Promise<unknown[]> {
    const { answers, versions } = await this.control.reload(this.fan, path, version);
    // a skipped engine (null: off, or lost during the call) catches up itself when it serves again
    versions.forEach((v, i) => {
      if (answers[i] !== null) this.pool.upstreams[i].version = v;
    });
    return answers;
  }

  /** Finishes a session: appends its trajectory durably (when a ledger is attached), then returns it. */
  async finish(
    sessionId: string,
    reward: number,
    tests?: Record<string, string> | null,
  ): Promise<Trajectory> {
    const s = this.sessions.get(sessionId);
    if (s?.upstream !== null && s?.upstream !== undefined) this.pool.upstreams[s.upstream].sessions--;
    const t = this.sessions.finish(sessionId, reward);
    if (tests) t.tests = tests; // before the ledger append: the outcomes are stored with the trajectory
    if (this.opts.onTrajectory) await this.opts.onTrajectory(t);
    return t;
  }

  sessionView(s: Session): unknown {
    return {
      session_id: s.id,
      task_id: s.taskId,
      group_id: s.groupId,
      drift: s.drift,
      turns: s.turns,
      tree: sessionTree(s),
    };
  }

  // ------------------------------------------------------------------------------------------ inference

  private async inference(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    s: Session,
    kind: 'chat' | 'completion',
  ): Promise<void> {
    this.stats.requests++;
    s.inFlight++;
    s.lastActiveAt = Date.now();
    try {
      await this.forward(req, res, s, kind);
    } finally {
      s.inFlight--;
      s.lastActiveAt = Date.now();
    }
  }

  private async forward(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    s: Session,
    kind: 'chat' | 'completion',
  ): Promise<void> {
    const { raw, json } = await this.body(req);
    let payload: Buffer | string = raw;
    let parent: TurnRecord | null = null;
    let fixed = false;
    let messages: unknown[] | undefined;
    let key: string | null = null;
    if (kind === 'chat') {
      if (!Array.isArray(json.messages) || json.messages.length === 0) {
        throw new HttpError(400, "field 'messages' must be a non-empty list of {role, content} objects");
      }
      messages = json.messages as unknown[];
      const parts = messageParts(messages);
      key = messagesKey(parts);
      parent = findParent(s, messages, parts);
      if (parent && this.drift === 'fix') {
        const ids = await this.fixedPrompt(s, json, parent);
        if (ids) {
          payload = JSON.stringify({ ...json, prompt_token_ids: ids });
          fixed = true;
        }
      }
    } else if (json.prompt === undefined) {
      throw new HttpError(400, "field 'prompt' is required (text or token ids)");
    }
    const requestNo = s.nextRequest++;
    let relay: Relay | VllmRelay;
    if (this.engine === 'vllm') {
      payload = vllmRequest(json, kind);
      relay = new VllmRelay(res, json.stream === true, kind, () =>
        s.upstream === null ? null : this.pool.upstreams[s.upstream].version,
      );
    } else relay = new Relay(res, json.stream === true);
    const upstream = await this.pool.forward(
      kind === 'chat' ? '/v1/chat/completions' : '/v1/completions',
      payload,
      s,
      relay,
    );
    const rec = relay.finish();
    if (rec === null) return; // the upstream's error answer went to the agent as it was
    this.recordTurns(
      s,
      rec,
      kind,
      requestNo,
      messages,
      key,
      parent,
      fixed,
      upstream.url.toString(),
      upstream.version,
    );
  }

  private recordTurns(
    s: Session,
    rec: ResponseRecord,
    kind: 'chat' | 'completion',
    requestNo: number,
    messages: unknown[] | undefined,
    key: string | null,
    parent: TurnRecord | null,
    fixed: boolean,
    upstream: string,
    upstreamVersion: number | null,
  ): void {
    if (!rec.promptIds)
      throw new Error(
        `upstream ${upstream} returned no prompt_token_ids: it cannot be recorded (see ADAPTERS.md)`,
      );
    const drift = fixed || (parent !== null && !extendsHistory(rec.promptIds, parent));
    if (drift) {
      s.drift.detected++;
      this.stats.driftDetected++;
    }
    if (fixed) {
      s.drift.fixed++;
      this.stats.driftFixed++;
    }
    for (const ch of [...rec.choices.values()].sort((a, b) => a.index - b.index)) {
      const output =
        kind === 'chat'
          ? (ch.message ?? {
              role: 'assistant',
              content: ch.text,
              ...(ch.toolCalls.length ? { tool_calls: ch.toolCalls } : {}),
            })
          : { text: ch.text };
      addTurn(
        s,
        {
          id: `${requestNo}.${ch.index}`,
          kind,
          messages,
          promptIds: rec.promptIds,
          outputIds: ch.tokenIds,
          logprobs: ch.logprobs,
          versions: ch.versions.map((v) => v ?? upstreamVersion ?? 0),
          finishReason: ch.finishReason,
          output,
          parent: parent?.id ?? null,
          drift,
          fixed,
          upstream,
          at: Date.now(),
        },
        key,
      );
    }
  }

  /**
   * Token in, token out: if the rendered prompt does not start with the parent's recorded ids, the prompt
   * becomes those ids, then the template's end of the assistant turn, then the ids of the new messages.
   * Returns null when there is no drift. Needs the upstream's /tokenize (ours and vLLM's have it).
   */
  private async fixedPrompt(
    s: Session,
    json: Record<string, unknown>,
    parent: TurnRecord,
  ): Promise<number[] | null> {
    const messages = json.messages as unknown[];
    const tools = json.tools;
    const k = parent.messages!.length;
    const idx = this.pool.assign(s.upstream);
    s.upstream = idx;
    const tok = async (msgs: unknown[], gen: boolean): Promise<number[]> => {
      const r = await this.pool.json(idx, '/tokenize', { messages: msgs, tools, add_generation_prompt: gen });
      if (r.status !== 200)
        throw new HttpError(r.status === 400 ? 400 : 502, `tokenize failed: ${JSON.stringify(r.body)}`);
      return (r.body as { tokens: number[] }).tokens;
    };
    const history = recordedHistory(parent);
    const full = await tok(messages, true);
    if (startsWith(full, history)) return null;
    // head: everything up to and including the parent's reply as the template renders it.
    const head = await tok(messages.slice(0, k + 1), false);
    if (!startsWith(full, head))
      throw new HttpError(409, 'cannot fix drift: the chat template does not render the history as a prefix');
    // The template's tail after an assistant turn's content (e.g. `<|im_end|>\n`): render an empty reply.
    const open = await tok(messages.slice(0, k), true);
    const closed = await tok([...messages.slice(0, k), { role: 'assistant', content: '' }], false);
    const tail = startsWith(closed, open) ? closed.slice(open.length) : [];
    // A reply that stopped on the end-of-turn token already holds the tail's first token.
    const rest = tail.length && history[history.length - 1] === tail[0] ? tail.slice(1) : tail;
    return history.concat(rest, full.slice(head.length));
  }
}

/**
 * Passes one upstream response on to the agent and records it. Streamed (an SSE answer with status 200):
 * the chunks that arrive in one tick leave in one write at the end of that tick (one socket read often holds
 * several events), and the chunks still waiting when the upstream's response completes leave with the end
 * of the agent's response, in the same write: fewer syscalls and fewer wake-ups of the agent, and nothing
 * is held back past the current tick. Otherwise the body is gathered and sent with its length when it
 * completes. The record is built in `finish`, after the agent has its whole answer: parsing is off the
 * agent's path. One object per request, no closures (it runs on every inference request).
 */
class Relay implements ResponseSink {
  private status = 0;
  private type: string | undefined;
  /** every body chunk, kept for the record */
  private readonly chunks: Buffer[] = [];
  /** chunks[sent..] have not been written to the agent yet (streaming) */
  private sent = 0;
  private streaming = false;
  private ended = false;
  flushQueued = false;

  constructor(
    readonly res: http.ServerResponse,
    private readonly wantsStream: boolean,
  ) {}

  head(status: number, contentType: string | undefined): void {
    this.status = status;
    this.type = contentType;
    if (!this.wantsStream || status !== 200) return;
    this.streaming = true;
    this.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  }

  data(chunk: Buffer): void {
    this.chunks.push(chunk);
    if (this.streaming && !this.flushQueued) {
      this.flushQueued = true;
      process.nextTick(flush, this);
    }
  }

  /** The chunks not yet written, as one buffer (null: none). */
  pending(): Buffer | null {
    const n = this.chunks.length - this.sent;
    if (n === 0) return null;
    const out = n === 1 ? this.chunks[this.sent] : Buffer.concat(this.chunks.slice(this.sent));
    this.sent = this.chunks.length;
    return out;
  }

  /** The upstream's response is complete: the agent's ends now (called by undici, before `finish`). */
  complete(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.streaming) {
      const rest = this.pending();
      if (rest) this.res.end(rest);
      else this.res.end();
      return;
    }
    const bytes = this.body();
    this.res.writeHead(this.status, {
      'content-type': this.type ?? 'application/json',
      'content-length': bytes.length,
    });
    this.res.end(bytes);
  }

  /** Writes what arrived this tick (the flush queued by `data`). */
  flush(): void {
    this.flushQueued = false;
    if (this.ended) return;
    const out = this.pending();
    if (out) this.res.write(out);
  }

  private body(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
  }

  /** Ends the agent's response if not yet ended; returns the record, or null when the upstream did not
   * answer 200. */
  finish(): ResponseRecord | null {
    this.complete();
    if (this.status !== 200) return null;
    const rec = newRecord();
    if (this.streaming) {
      const reader = new SseReader((ev) => absorb(rec, ev as Parameters<typeof absorb>[1]));
      for (const c of this.chunks) reader.push(c);
    } else absorb(rec, JSON.parse(this.body().toString('utf8')) as Parameters<typeof absorb>[1]);
    return rec;
  }
}

function flush(relay: Relay): void {
  relay.flush();
}

/** OpenAI's error code for one of the proxy's own refusals (the upstream's errors pass through unchanged). */
function errorCode(e: HttpError): string | null {
  if (e.status === 401) return 'invalid_api_key';
  if (e.status === 413) return 'request_too_large';
  if (e.status === 404) return 'not_found';
  return null;
}

function sendJson(res: http.ServerResponse, status: number, obj: unknown): void {
  const data = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}
