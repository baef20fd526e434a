// The inference engines behind the proxy, as the proxy needs them: how to pause, resume and reload one
// (trainer/trainflow_trainer/engines/ starts and stops them), and what a request to it must ask for so that
// every token can be recorded (serve/ADAPTERS.md).
//
// `local`: the trainer's CPU server speaks our token extensions natively (prompt_token_ids, token_ids,
// policy_versions) and has /pause, /resume and /reload {path, version}.
//
// `vllm`: vLLM's OpenAI server in dev mode (VLLM_SERVER_DEV_MODE=1). Requests ask for `return_token_ids`
// (prompt_token_ids, per-choice token_ids), log-probs and `return_tokens_as_token_ids` (the log-probs'
// tokens read `token_id:N`: record.ts cross-reads them), and are always streamed from vLLM: vLLM reports no
// version per token, so the proxy tags each token with the version loaded on that upstream when the token
// arrives (VllmRelay). That is exact because a reload happens between `/pause?mode=keep` (the engine stops
// between two tokens) and `/resume`, and the version changes only after the reload: a token that arrives
// before it was sampled by the old weights, one that arrives after by the new. A non-streamed agent request
// gets one chat.completion / text_completion body rebuilt from the stream.
import type http from 'node:http';
import { absorb, newRecord, SseReader, type ChoiceRecord, type ResponseRecord } from './record';
import type { ResponseSink } from './upstreams';

export type EngineKind = 'local' | 'vllm';
export const ENGINE_KINDS: readonly EngineKind[] = ['local', 'vllm'];

/** The model name vLLM serves the policy under (trainer/trainflow_trainer/engines/vllm.py SERVED_MODEL). */
export const VLLM_MODEL = 'policy';

/**
 * Calls one admin route on every upstream and returns the answers in upstream order (throws if any fails);
 * null for an engine skipped (one the fleet has off, or lost during the call: it catches up itself).
 */
export type FanOut = (path: string, payload: unknown) => Promise<unknown[]>;

export interface Reloaded {
  answers: unknown[];
  versions: (number | null)[];
}

export interface EngineControl {
  pause(fan: FanOut): Promise<unknown[]>;
  resume(fan: FanOut): Promise<unknown[]>;
  /** Loads a servable folder on every upstream; returns their answers and each one's policy version now. */
  reload(fan: FanOut, path: string, version: number | undefined): Promise<Reloaded>;
}

const localControl: EngineControl = {
  pause: (fan) => fan('/pause', {}),
  resume: (fan) => fan('/resume', {}),
  async reload(fan, path, version) {
    const answers = await fan('/reload', version === undefined ? { path } : { path, version });
    const versions = answers.map((r) => {
      const v = (r as { policy_version?: number } | null)?.policy_version;
      return typeof v === 'number' ? v : (version ?? null);
    });
    return { answers, versions };
  },
};

const vllmControl: EngineControl = {
  // keep: in-flight requests stay scheduled and continue after /resume (partial rollout)
  pause: (fan) => fan('/pause?mode=keep', {}),
  resume: (fan) => fan('/resume', {}),
  async reload(fan, path, version) {
    if (path.startsWith('s3://'))
      throw new Error(`vLLM reloads a local folder; got ${path} (the trainer writes the weights locally)`);
    // our worker extension: reload, then re-tie and re-pack a tied lm_head (the CPU build's stale copy)
    const rpc = await fan('/collective_rpc', { method: 'trainflow_reload', args: [path] });
    // cached prefixes hold keys/values of the old weights: new requests must not reuse them
    await fan('/reset_prefix_cache', {});
    const versions = rpc.map(() => version ?? null);
    const answers = rpc.map((r, i) =>
      r === null ? null : { ...(r as object), policy_version: versions[i] },
    );
    return { answers, versions };
  },
};

export function engineControl(kind: EngineKind): EngineControl {
  return kind === 'vllm' ? vllmControl : localControl;
}

/**
 * The body vLLM gets for an agent's request: the served model name, token ids and log-probs asked for
 * (the agent's own top-k log-probs kept), streamed with usage.
 */
export function vllmRequest(json: Record<string, unknown>, kind: 'chat' | 'completion'): string {
  const body: Record<string, unknown> = {
    ...json,
    model: VLLM_MODEL,
    return_token_ids: true,
    return_tokens_as_token_ids: true,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (kind === 'chat') body.logprobs = true;
  else body.logprobs = Math.max(1, typeof json.logprobs === 'number' ? json.logprobs : 0);
  return JSON.stringify(body);
}

interface StreamMeta {
  id?: string;
  created?: number;
  model?: string;
  usage?: unknown;
}

/**
 * Relays a response of vLLM (always SSE, see vllmRequest) to the agent and records it, stamping each
 * token with `version()` as it arrives. A streaming agent gets the chunks as they come; any other gets one
 * JSON body built from them when the stream ends. An error answer (not 200) passes through unchanged.
 */
export class VllmRelay implements ResponseSink {
  private readonly rec = newRecord();
  private readonly meta: StreamMeta = {};
  private status = 0;
  private type: string | undefined;
  private readonly chunks: Buffer[] = [];
  private reader: SseReader | null = null;
  private recorded = false;

  constructor(
    private readonly res: http.ServerResponse,
    private readonly agentStreams: boolean,
    private readonly kind: 'chat' | 'completion',
    private readonly version: () => number | null,
    /** called once with the record of a streamed answer: at [DONE], before the agent can see it */
    private readonly onRecord: (rec: ResponseRecord) => void = () => undefined,
  ) {}

  head(status: number, contentType: string | undefined): void {
    this.status = status;
    this.type = contentType;
    if (status !== 200 || !(contentType ?? '').startsWith('text/event-stream')) return;
    if (this.agentStreams)
      this.res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    this.reader = new SseReader(
      (ev) => this.event(ev as Record<string, unknown>),
      () => {
        if (this.agentStreams) this.complete(); // a whole answer is recorded when it is sent (finish)
      },
    );
  }

  private complete(): void {
    if (this.recorded) return;
    this.recorded = true;
    // the record's output: the message the agent assembled from the deltas (tool calls merged)
    if (this.agentStreams && this.kind === 'chat') for (const ch of this.rec.choices.values()) chatChoice(ch);
    this.onRecord(this.rec);
  }

  private event(ev: Record<string, unknown>): void {
    this.meta.id ??= ev.id as string | undefined;
    this.meta.created ??= ev.created as number | undefined;
    this.meta.model ??= ev.model as string | undefined;
    if (ev.usage) this.meta.usage = ev.usage;
    absorb(this.rec, ev);
    const v = this.version();
    for (const ch of this.rec.choices.values())
      for (let i = ch.versions.length - 1; i >= 0 && ch.versions[i] === null; i--) ch.versions[i] = v;
  }

  data(chunk: Buffer): void {
    if (this.reader === null) {
      this.chunks.push(chunk);
      return;
    }
    this.reader.push(chunk);
    if (this.agentStreams) this.res.write(chunk);
  }

  /** Ends the agent's response and records it (nothing is recorded when vLLM did not answer with a stream). */
  finish(): void {
    if (this.reader === null) {
      const bytes = Buffer.concat(this.chunks);
      this.res.writeHead(this.status, {
        'content-type': this.type ?? 'application/json',
        'content-length': bytes.length,
      });
      this.res.end(bytes);
      return;
    }
    if (this.agentStreams) {
      this.res.end();
      this.complete();
      return;
    }
    const data = JSON.stringify(this.whole());
    this.res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(data),
    });
    this.res.end(data);
    this.complete();
  }

  /** The non-streamed body OpenAI's API gives for the same request, with vLLM's token fields. */
  private whole(): Record<string, unknown> {
    const choices = [...this.rec.choices.values()].sort((a, b) => a.index - b.index);
    const chat = this.kind === 'chat';
    return {
      id: this.meta.id,
      object: chat ? 'chat.completion' : 'text_completion',
      created: this.meta.created,
      model: this.meta.model,
      choices: choices.map((ch) => (chat ? chatChoice(ch) : completionChoice(ch))),
      usage: this.meta.usage ?? null,
      prompt_token_ids: this.rec.promptIds,
    };
  }
}

const tokenName = (id: number): string => `token_id:${id}`;

function chatChoice(ch: ChoiceRecord): Record<string, unknown> {
  const calls = mergeToolCalls(ch.toolCalls);
  const message: Record<string, unknown> = { role: 'assistant', content: ch.text || null };
  if (calls.length) message.tool_calls = calls;
  ch.message = message; // the record's output is the message the agent got
  return {
    index: ch.index,
    message,
    logprobs: {
      content: ch.tokenIds.map((id, i) => ({
        token: tokenName(id),
        logprob: ch.logprobs[i],
        top_logprobs: [],
      })),
    },
    finish_reason: ch.finishReason,
    token_ids: ch.tokenIds,
  };
}

function completionChoice(ch: ChoiceRecord): Record<string, unknown> {
  return {
    index: ch.index,
    text: ch.text,
    logprobs: { tokens: ch.tokenIds.map(tokenName), token_logprobs: ch.logprobs },
    finish_reason: ch.finishReason,
    token_ids: ch.tokenIds,
  };
}

interface ToolCallDelta {
  index?: number;
  id?: string;
  type?: string;
  function?: { name?: string; arguments?: string };
}

/** Streamed tool-call deltas (an id and name first, then argument fragments, by index) as whole calls. */
export function mergeToolCalls(deltas: unknown[]): Record<string, unknown>[] {
  const calls = new Map<
    number,
    { id?: string; type: string; function: { name: string; arguments: string } }
  >();
  for (const raw of deltas) {
    const d = raw as ToolCallDelta;
    const k = d.index ?? calls.size;
    let c = calls.get(k);
    if (!c) {
      c = { type: 'function', function: { name: '', arguments: '' } };
      calls.set(k, c);
    }
    if (d.id) c.id = d.id;
    if (d.type) c.type = d.type;
    if (d.function?.name) c.function.name += d.function.name;
    if (d.function?.arguments) c.function.arguments += d.function.arguments;
  }
  return [...calls.entries()].sort((a, b) => a[0] - b[0]).map(([, c]) => c);
}
