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

// What the proxy passes on to vLLM. vLLM accepts unknown fields silently (a warning in its log), so the proxy
// names the parameters it lets through and refuses any other by name, as OpenAI does (`unknown_parameter`).
const NEUTRAL = [
  'model',
  'user',
  'metadata',
  'store',
  'service_tier',
  'safety_identifier',
  'prompt_cache_key',
];
const SAMPLING = ['n', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'stream', 'stream_options'];
// vLLM's own extensions that trainflow's agents and tests send (ids, not text: nothing the trainer misreads)
const EXTENSIONS = [
  'stop_token_ids',
  'ignore_eos',
  'allowed_token_ids',
  'return_token_ids',
  'return_tokens_as_token_ids',
];
const CHAT = new Set([
  ...NEUTRAL,
  ...SAMPLING,
  ...EXTENSIONS,
  'messages',
  'tools',
  'tool_choice',
  'parallel_tool_calls',
  'logprobs',
  'top_logprobs',
  'max_completion_tokens',
]);
const COMPLETION = new Set([...NEUTRAL, ...SAMPLING, ...EXTENSIONS, 'prompt', 'logprobs']);
// Known parameters accepted only at their default. vLLM would apply them, but the trainer recomputes each
// token's log-prob from temperature and top-p alone (serve/ADAPTERS.md): a penalty, a bias or a grammar
// would make the recorded log-probs disagree with the trainer's, so they are refused, as the CPU engine does.
const AT_DEFAULT: Record<string, unknown> = {
  frequency_penalty: 0,
  presence_penalty: 0,
  logit_bias: {},
  response_format: { type: 'text' },
  modalities: ['text'],
  audio: null,
  prediction: null,
  web_search_options: null,
  functions: null,
  function_call: null,
  reasoning_effort: null,
  verbosity: null,
  echo: false,
  best_of: 1,
  suffix: null,
};

/** A request the proxy refuses in OpenAI's words: the parameter it is about and OpenAI's error code. */
export interface Refusal {
  message: string;
  param: string;
  code: string;
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * Why vLLM cannot serve this request faithfully, or null. Besides unknown parameters and the ones above:
 * `tool_choice` required or a named function (vLLM forces those with guided JSON, `[{"name", "parameters"}]`
 * or the bare arguments, not the chat template's `<tool_call>` markup: the recorded tokens would not be what
 * the template renders when the conversation goes on, and the policy would learn a format it is never
 * prompted in) and `parallel_tool_calls: false` (vLLM drops the extra calls from the message only: their
 * tokens stay in the record).
 */
export function vllmRefusal(json: Record<string, unknown>, kind: 'chat' | 'completion'): Refusal | null {
  const known = kind === 'chat' ? CHAT : COMPLETION;
  for (const [key, value] of Object.entries(json)) {
    if (known.has(key)) continue;
    if (key in AT_DEFAULT) {
      if (value === null || same(value, AT_DEFAULT[key])) continue;
      return {
        message: `'${key}' is not supported by this engine (only ${JSON.stringify(AT_DEFAULT[key])} is): remove it`,
        param: key,
        code: 'unsupported_parameter',
      };
    }
    return {
      message: `Unrecognized request argument supplied: ${key}`,
      param: key,
      code: 'unknown_parameter',
    };
  }
  const k = json.top_logprobs;
  if (k !== undefined && k !== null && !(Number.isInteger(k) && (k as number) >= 0 && (k as number) <= 20))
    return {
      message: `'top_logprobs' must be an integer from 0 to 20, got ${JSON.stringify(k)}`,
      param: 'top_logprobs',
      code: 'invalid_value',
    };
  const choice = json.tool_choice;
  if (choice !== undefined && choice !== null && choice !== 'auto' && choice !== 'none')
    return {
      message:
        `tool_choice ${JSON.stringify(choice)} is not supported on vLLM: it forces calls in a format other than ` +
        "the chat template's <tool_call> markup; use 'auto' (or none)",
      param: 'tool_choice',
      code: 'unsupported_value',
    };
  if (json.parallel_tool_calls === false)
    return {
      message:
        'parallel_tool_calls false is not supported on vLLM (it drops extra calls from the message, not from ' +
        'the generated tokens): leave it out',
      param: 'parallel_tool_calls',
      code: 'unsupported_value',
    };
  return null;
}

/** The tool-call marker of our chat template (tokenizer.py; vLLM's hermes parser reads the same). */
const TOOL_OPEN = '<tool_call>';

/**
 * The body vLLM gets for an agent's request: the served model name, token ids and log-probs asked for,
 * streamed with usage. The agent's top-k log-probs are asked as k+1: vLLM lists the sampled token first and
 * cuts after k entries, so the k most likely are only all there with one more (VllmRelay puts them in
 * order). `tool_choice: none` bans the tool-call marker: vLLM would sample it and hide it from the text
 * (a special token), so the agent sees no call while the record holds one.
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
  if (kind === 'chat') {
    body.logprobs = true;
    const k = topK(json);
    if (k > 0) body.top_logprobs = k + 1;
    if (json.tool_choice === 'none') body.bad_words = [TOOL_OPEN];
  } else body.logprobs = Math.max(1, typeof json.logprobs === 'number' ? json.logprobs : 0);
  return JSON.stringify(body);
}

/** The alternatives per token a chat request asks for (0: none). */
function topK(json: Record<string, unknown>): number {
  return json.logprobs === true && typeof json.top_logprobs === 'number' ? json.top_logprobs : 0;
}

interface StreamMeta {
  id?: string;
  created?: number;
  model?: string;
  usage?: unknown;
}

/** One entry of vLLM's chat log-probs (tokens written `token_id:N`). */
interface TopEntry {
  token: string;
  logprob: number;
  bytes?: number[] | null;
}

/**
 * Relays a response of vLLM (always SSE, see vllmRequest) to the agent and records it, stamping each
 * token with `version()` as it arrives. A streaming agent gets the chunks as they come (re-written only when
 * it asked for top log-probs: they are put in OpenAI's order); any other gets one JSON body built from them
 * when the stream ends (with the log-probs, as the CPU engine's answers always have them). An error answer (not 200) gets OpenAI's
 * shape: a string code (`context_length_exceeded` for a prompt over the context), the parameter named.
 */
export class VllmRelay implements ResponseSink {
  private readonly rec = newRecord();
  private readonly meta: StreamMeta = {};
  private status = 0;
  private type: string | undefined;
  private readonly chunks: Buffer[] = [];
  private reader: SseReader | null = null;
  private recorded = false;
  /** per choice, per token: the k most likely alternatives (chat with top_logprobs only) */
  private readonly tops = new Map<number, TopEntry[][]>();
  private readonly k: number;

  constructor(
    private readonly res: http.ServerResponse,
    private readonly agentStreams: boolean,
    private readonly kind: 'chat' | 'completion',
    private readonly version: () => number | null,
    request: Record<string, unknown> = {},
    /** called once with the record of a streamed answer: at [DONE], before the agent can see it */
    private readonly onRecord: (rec: ResponseRecord) => void = () => undefined,
  ) {
    this.k = kind === 'chat' ? topK(request) : 0;
  }

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
    if (this.k > 0) this.orderTops(ev);
    absorb(this.rec, ev);
    const v = this.version();
    for (const ch of this.rec.choices.values())
      for (let i = ch.versions.length - 1; i >= 0 && ch.versions[i] === null; i--) ch.versions[i] = v;
    if (this.k > 0 && this.agentStreams) this.res.write(`data: ${JSON.stringify(ev)}\n\n`);
  }

  /** vLLM's alternatives (the sampled token first, k+1 asked) as OpenAI's: the k most likely, in order. */
  private orderTops(ev: Record<string, unknown>): void {
    for (const c of (ev.choices ?? []) as { index?: number; logprobs?: { content?: unknown } | null }[]) {
      const entries = (c.logprobs?.content ?? null) as { top_logprobs?: TopEntry[] }[] | null;
      if (!entries) continue;
      let seen = this.tops.get(c.index ?? 0);
      if (!seen) this.tops.set(c.index ?? 0, (seen = []));
      for (const e of entries) {
        const unique = new Map((e.top_logprobs ?? []).map((t) => [t.token, t]));
        e.top_logprobs = [...unique.values()].sort((a, b) => b.logprob - a.logprob).slice(0, this.k);
        seen.push(e.top_logprobs);
      }
    }
  }

  data(chunk: Buffer): void {
    if (this.reader === null) {
      this.chunks.push(chunk);
      return;
    }
    this.reader.push(chunk); // parsed first: a [DONE] in it is recorded before the agent can see it
    if (this.agentStreams && this.k === 0) this.res.write(chunk); // with top_logprobs: re-written in event()
  }

  /** Ends the agent's response and records it (nothing is recorded when vLLM did not answer with a stream). */
  finish(): void {
    if (this.reader === null) {
      const bytes = openaiError(this.status, Buffer.concat(this.chunks));
      this.res.writeHead(this.status, {
        'content-type': this.type ?? 'application/json',
        'content-length': bytes.length,
      });
      this.res.end(bytes);
      return;
    }
    if (this.agentStreams) {
      this.complete();
      this.res.end(this.k > 0 ? 'data: [DONE]\n\n' : undefined);
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
      choices: choices.map((ch) => (chat ? chatChoice(ch, this.tops.get(ch.index)) : completionChoice(ch))),
      usage: this.meta.usage ?? null,
      prompt_token_ids: this.rec.promptIds,
    };
  }
}

/**
 * vLLM's error body in OpenAI's shape: OpenAI's clients branch on `code`, a string or null (vLLM writes the
 * HTTP status there); a prompt over the context is `context_length_exceeded` (litellm, and so
 * mini-swe-agent, raise a context-window error for it instead of retrying). Anything unreadable passes as is.
 */
export function openaiError(status: number, bytes: Buffer): Buffer {
  let body: { error?: { message?: unknown; type?: unknown; param?: unknown; code?: unknown } };
  try {
    body = JSON.parse(bytes.toString('utf8')) as typeof body;
  } catch {
    return bytes;
  }
  const e = body?.error;
  if (status < 400 || typeof e !== 'object' || e === null) return bytes;
  const message = typeof e.message === 'string' ? e.message : '';
  const overLong = /maximum context length/i.test(message);
  const error = {
    message,
    type: status >= 500 ? 'server_error' : 'invalid_request_error',
    param: overLong ? 'messages' : typeof e.param === 'string' ? e.param : null,
    code: overLong ? 'context_length_exceeded' : typeof e.code === 'string' ? e.code : null,
  };
  return Buffer.from(JSON.stringify({ error }));
}

const tokenName = (id: number): string => `token_id:${id}`;

function chatChoice(ch: ChoiceRecord, tops?: TopEntry[][]): Record<string, unknown> {
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
        top_logprobs: tops?.[i] ?? [],
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
