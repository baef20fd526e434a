import { StringDecoder } from 'node:string_decoder';
import type { ChoiceTokens, ResponseTokens } from '../contract/tokens';

// Turning an inference server's OpenAI-style response (whole or streamed) into per-choice token records.
//
// What we read, per choice: `token_ids` (or the `token_id:N` tokens of `logprobs`, vLLM's
// return_tokens_as_token_ids), the log-probs of the sampled tokens, `policy_versions` (our server's
// per-token tag; absent on vLLM/SGLang, where the proxy's knowledge of the loaded version fills in), and the
// top-level `prompt_token_ids`.

export interface ChoiceRecord {
  index: number;
  tokenIds: number[];
  logprobs: number[];
  versions: (number | null)[];
  finishReason: string | null;
  /** chat: content deltas concatenated; completion: text */
  text: string;
  /** chat: the final message (non-streamed) or tool calls gathered from deltas */
  message: Record<string, unknown> | null;
  toolCalls: unknown[];
}

export interface ResponseRecord {
  promptIds: number[] | null;
  choices: Map<number, ChoiceRecord>;
}

interface LogprobEntry {
  token?: string;
  logprob?: number;
}

// The token fields are the contract's (src/contract/tokens.ts: what the inference server sends); the rest is
// OpenAI's shape. Typed, not validated here: this runs on every response and every streamed chunk, and the
// server's side is built from the same schema (its generated models) and checked in the tests.
interface RawChoice extends ChoiceTokens {
  /** vLLM's completions put the prompt's ids in each choice (its chat responses at the top level) */
  prompt_token_ids?: number[] | null;
  index?: number;
  finish_reason?: string | null;
  text?: string;
  message?: Record<string, unknown>;
  delta?: { content?: string | null; tool_calls?: unknown[] };
  logprobs?: { content?: LogprobEntry[] | null; tokens?: string[]; token_logprobs?: number[] } | null;
}

interface RawResponse extends ResponseTokens {
  choices?: RawChoice[];
}

function idFromToken(t: string | undefined): number {
  const m = /^token_id:(\d+)$/.exec(t ?? '');
  if (!m)
    throw new Error(
      `cannot read a token id from logprobs token ${JSON.stringify(t)}: ask the server for token ids`,
    );
  return Number(m[1]);
}

export function newRecord(): ResponseRecord {
  return { promptIds: null, choices: new Map() };
}

/** Folds one response object (a whole response, or one SSE chunk) into the record. */
export function absorb(rec: ResponseRecord, raw: RawResponse): void {
  if (Array.isArray(raw.prompt_token_ids)) rec.promptIds = raw.prompt_token_ids;
  for (const c of raw.choices ?? []) {
    const index = c.index ?? 0;
    let ch = rec.choices.get(index);
    if (!ch) {
      ch = {
        index,
        tokenIds: [],
        logprobs: [],
        versions: [],
        finishReason: null,
        text: '',
        message: null,
        toolCalls: [],
      };
      rec.choices.set(index, ch);
    }
    if (Array.isArray(c.prompt_token_ids)) rec.promptIds ??= c.prompt_token_ids;
    const lp = c.logprobs ?? null;
    const entries = lp?.content ?? null;
    let ids: number[];
    let lps: number[];
    if (entries) {
      lps = entries.map((e) => e.logprob ?? NaN);
      ids = c.token_ids ?? entries.map((e) => idFromToken(e.token));
    } else if (lp?.token_logprobs) {
      lps = lp.token_logprobs;
      ids = c.token_ids ?? (lp.tokens ?? []).map(idFromToken);
    } else {
      ids = c.token_ids ?? [];
      lps = ids.map(() => NaN);
    }
    if (ids.length !== lps.length)
      throw new Error(`choice ${index}: ${ids.length} token ids but ${lps.length} log-probs`);
    ch.tokenIds.push(...ids);
    ch.logprobs.push(...lps);
    const versions = c.policy_versions;
    ch.versions.push(...ids.map((_, i) => (versions && versions.length === ids.length ? versions[i] : null)));
    if (c.finish_reason) ch.finishReason = c.finish_reason;
    if (typeof c.text === 'string') ch.text += c.text;
    if (c.message) ch.message = c.message;
    if (c.delta?.content) ch.text += c.delta.content;
    if (c.delta?.tool_calls) ch.toolCalls.push(...c.delta.tool_calls);
  }
}

/**
 * An incremental SSE reader: feed it the bytes as they pass through, it calls `onEvent` with each parsed
 * `data:` payload and `onDone` at the `[DONE]` event.
 */
export class SseReader {
  private buf = '';
  // A multi-byte character may straddle two chunks: the decoder holds its first bytes back.
  private readonly decoder = new StringDecoder('utf8');
  constructor(
    private readonly onEvent: (obj: unknown) => void,
    private readonly onDone: () => void = () => undefined,
  ) {}

  // Runs on every chunk of every streamed response: it scans by index and cuts out only the data payloads
  // (no copies of the buffer per event, no line arrays).
  push(chunk: Buffer): void {
    const text = this.decoder.write(chunk);
    const buf = this.buf.length ? this.buf + text : text;
    let start = 0;
    let cut: number;
    while ((cut = buf.indexOf('\n\n', start)) >= 0) {
      this.event(buf, start, cut);
      start = cut + 2;
    }
    this.buf = start === 0 ? buf : buf.slice(start);
  }

  /** The event in buf[start, end): each `data:` line's payload. */
  private event(buf: string, start: number, end: number): void {
    for (let line = start; line < end;) {
      let eol = buf.indexOf('\n', line);
      if (eol < 0 || eol > end) eol = end;
      if (buf.startsWith('data:', line)) {
        const data = buf.slice(line + 5, eol).trim();
        if (data === '[DONE]') this.onDone();
        else if (data !== '') this.onEvent(JSON.parse(data));
      }
      line = eol + 1;
    }
  }
}
