// Unchanged agents need a faithful API: the official `openai` SDKs (npm here, Python through
// test/agents/sdk_fidelity.py in the agents venv) against the proxy in front of a real engine. One suite per
// engine (`fidelitySuite`): sdk-fidelity.test.ts runs it against the CPU engine, sdk-fidelity-vllm.test.ts
// against vLLM. Both SDKs' observations go through one set of assertions; where an engine cannot honour a
// parameter the proxy or the engine refuses it by name (a 400 with `param`), and the assertions say which.
import { execFile, execFileSync } from 'node:child_process';
import path from 'node:path';
import OpenAI from 'openai';
import type { EngineKind } from '../../src/dataplane/engines';
import { TrajectoryProxy } from '../../src/dataplane/proxy';
import { PYTHON, ROOT, TRAINER, type Fixture } from '../dataplane/servers';

const ADMIN = 'fidelity-admin';
const AGENTS_PYTHON = path.join(ROOT, '.venv-agents/bin/python');
const TOOLS = [
  { type: 'function' as const, function: { name: 'bash', parameters: { type: 'object', properties: {} } } },
  { type: 'function' as const, function: { name: 'submit', parameters: { type: 'object', properties: {} } } },
];

export interface Ids {
  letters: number[];
  lt: number;
  e1: number;
  e2: number;
  tool_call: number;
  im_end: number;
}

/** The token ids the requests restrict sampling to, read from the fixture's tokenizer. */
export function fixtureIds(fix: Fixture): Ids {
  const probe = [
    'import json,sys',
    'from trainflow_trainer.tokenizer import Tokenizer',
    't=Tokenizer.load(sys.argv[1])',
    'e=t.encode("é"); assert len(e)==2, e',
    'print(json.dumps({"lt": t.encode("<")[0], "e1": e[0], "e2": e[1], "tool_call": t.special_ids["<tool_call>"]}))',
  ].join('\n');
  const more = JSON.parse(
    execFileSync(PYTHON, ['-c', probe, fix.tokenizer], { cwd: TRAINER, encoding: 'utf8' }),
  ) as Omit<Ids, 'letters' | 'im_end'>;
  return { ...more, letters: [fix.letters.X, fix.letters.Y, fix.letters.Z], im_end: fix.im_end };
}

/** An engine started for the suite: its URL, its context length, the fixture's ids, and how to stop it. */
export interface Engine {
  url: string;
  maxLen: number;
  ids: Ids;
  adminToken?: string;
  stop: () => Promise<void>;
}

let proxy: TrajectoryProxy;
let base: string;
let ids: Ids;
let maxLen: number;

async function session(task: string): Promise<{ id: string; client: OpenAI }> {
  const r = await fetch(`${base}/admin/sessions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ task_id: task }),
  });
  const s = (await r.json()) as { session_id: string; key: string };
  return { id: s.session_id, client: new OpenAI({ baseURL: `${base}/v1`, apiKey: s.key, maxRetries: 0 }) };
}

type Extra = Record<string, unknown>;
const msgs = [{ role: 'user' as const, content: 'write' }];

async function streamedAndFinal(c: OpenAI, allowed: number[], seed: number): Promise<Pair> {
  const extra: Extra = { allowed_token_ids: allowed };
  const final = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 12,
    seed,
    ...extra,
  });
  let text = '';
  const stream = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 12,
    seed,
    stream: true,
    ...extra,
  });
  for await (const chunk of stream) for (const ch of chunk.choices) text += ch.delta.content ?? '';
  return { streamed: text, final: final.choices[0].message.content ?? '' };
}

function errorSeen(e: unknown): ErrorSeen {
  if (!(e instanceof OpenAI.APIError)) throw e;
  const err = e.error as { code?: string; param?: string } | undefined;
  return { status: e.status ?? 0, code: err?.code ?? e.code, param: err?.param ?? e.param };
}

async function errorOf(fn: () => Promise<unknown>): Promise<ErrorSeen> {
  try {
    await fn();
  } catch (e) {
    return errorSeen(e);
  }
  return { status: 200 };
}

interface Pair {
  streamed: string;
  final: string;
}
interface ErrorSeen {
  status: number;
  code?: string | null;
  param?: string | null;
}
interface CallsSeen {
  content: string | null;
  names: string[];
  finish: string;
}
/** A tool_choice request's outcome: the calls made, or the refusal */
type CallsOrRefusal = CallsSeen | { error: ErrorSeen };
interface Observed {
  stream_lt: Pair[];
  stream_utf8: Pair[];
  continue_session: string;
  multi_turn_session: string;
  stop: { full: string; cut: string; finish: string };
  top_logprobs: number[][];
  top_logprobs_streamed: number[][];
  parts: { list: number[]; text: number[] };
  tool_choice: {
    none: string;
    none_ids: number[];
    required: CallsOrRefusal;
    named: CallsOrRefusal;
    single: CallsOrRefusal;
    single_auto: CallsOrRefusal;
  };
  default_max_tokens: { prompt: number; completion: number; finish: string };
  context: ErrorSeen;
  unknown: ErrorSeen;
  penalty: ErrorSeen;
}

/** What the npm SDK sees: the same requests as sdk_fidelity.py. */
async function observeNpm(): Promise<Observed> {
  const out: Partial<Observed> = {};
  let { client: c } = await session('stream');
  out.stream_lt = [];
  for (let s = 0; s < 12; s++) out.stream_lt.push(await streamedAndFinal(c, [...ids.letters, ids.lt], s));
  out.stream_utf8 = [];
  for (let s = 0; s < 6; s++)
    out.stream_utf8.push(await streamedAndFinal(c, [ids.e1, ids.e2, ids.letters[0]], s));

  const cont = await session('continue');
  let first = '';
  const stream = await cont.client.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 12,
    seed: 3,
    stream: true,
    ...({ allowed_token_ids: [...ids.letters, ids.lt, ids.im_end] } as Extra),
  });
  for await (const chunk of stream) for (const ch of chunk.choices) first += ch.delta.content ?? '';
  await cont.client.chat.completions.create({
    model: 'm',
    max_tokens: 2,
    messages: [...msgs, { role: 'assistant', content: first }, { role: 'user', content: 'more' }],
  });
  out.continue_session = cont.id;

  // a multi-turn session that sends back the SDK's own message objects (letters and <|im_end|> only: single
  // tokens that never merge, so the replies re-tokenise as they were sampled)
  const multi = await session('multi-turn');
  const turn = { allowed_token_ids: [...ids.letters, ids.im_end] } as Extra;
  const history: OpenAI.Chat.ChatCompletionMessageParam[] = [...msgs];
  for (const [k, next] of ['more', 'again', null].entries()) {
    const r = await multi.client.chat.completions.create({
      model: 'm',
      messages: history,
      max_tokens: 6,
      seed: 7 + k,
      ...turn,
    });
    if (next === null) break;
    history.push(r.choices[0].message, { role: 'user', content: next });
  }
  out.multi_turn_session = multi.id;

  ({ client: c } = await session('stop'));
  const letters = { allowed_token_ids: ids.letters } as Extra;
  const full = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 12,
    seed: 5,
    ...letters,
  });
  const cut = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 12,
    seed: 5,
    stop: ['Y'],
    ...letters,
  });
  out.stop = {
    full: full.choices[0].message.content ?? '',
    cut: cut.choices[0].message.content ?? '',
    finish: cut.choices[0].finish_reason,
  };
  const lp = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 4,
    seed: 2,
    logprobs: true,
    top_logprobs: 3,
  });
  out.top_logprobs = lp.choices[0].logprobs!.content!.map((e) => e.top_logprobs.map((t) => t.logprob));
  out.top_logprobs_streamed = [];
  const lpStream = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 4,
    seed: 2,
    logprobs: true,
    top_logprobs: 3,
    stream: true,
  });
  for await (const chunk of lpStream)
    for (const ch of chunk.choices)
      for (const e of ch.logprobs?.content ?? [])
        out.top_logprobs_streamed.push(e.top_logprobs.map((t) => t.logprob));

  const parts = [
    { type: 'text' as const, text: 'You fix bugs.' },
    { type: 'text' as const, text: 'Be brief.' },
  ];
  const asList = await c.chat.completions.create({
    model: 'm',
    max_tokens: 1,
    messages: [
      { role: 'system', content: parts },
      { role: 'user', content: parts },
    ],
  });
  const asText = await c.chat.completions.create({
    model: 'm',
    max_tokens: 1,
    messages: [
      { role: 'system', content: 'You fix bugs.\nBe brief.' },
      { role: 'user', content: 'You fix bugs.\nBe brief.' },
    ],
  });
  const promptIds = (r: unknown): number[] => (r as { prompt_token_ids: number[] }).prompt_token_ids;
  out.parts = { list: promptIds(asList), text: promptIds(asText) };

  const calls = async (
    choice: OpenAI.Chat.ChatCompletionToolChoiceOption,
    extra: Extra = {},
  ): Promise<CallsOrRefusal> => {
    let r: OpenAI.Chat.ChatCompletion;
    try {
      r = await c.chat.completions.create({
        model: 'm',
        messages: msgs,
        max_tokens: 32,
        seed: 1,
        tools: TOOLS,
        tool_choice: choice,
        ...extra,
      });
    } catch (e) {
      return { error: errorSeen(e) };
    }
    const m = r.choices[0].message;
    return {
      content: m.content,
      names: (m.tool_calls ?? []).map((t) => (t.type === 'function' ? t.function.name : '?')),
      finish: r.choices[0].finish_reason,
    };
  };
  const none = await c.chat.completions.create({
    model: 'm',
    messages: msgs,
    max_tokens: 8,
    seed: 1,
    tools: TOOLS,
    tool_choice: 'none',
    ...({ allowed_token_ids: [ids.tool_call, ids.letters[0]] } as Extra),
  });
  out.tool_choice = {
    none: none.choices[0].message.content ?? '',
    none_ids: (none.choices[0] as unknown as { token_ids: number[] }).token_ids,
    required: await calls('required'),
    named: await calls({ type: 'function', function: { name: 'submit' } }),
    single: await calls('required', { parallel_tool_calls: false }),
    single_auto: await calls('auto', { parallel_tool_calls: false }),
  };

  const r = await c.chat.completions.create({ model: 'm', messages: msgs, ...letters });
  out.default_max_tokens = {
    prompt: r.usage!.prompt_tokens,
    completion: r.usage!.completion_tokens,
    finish: r.choices[0].finish_reason,
  };
  const long = [{ role: 'user' as const, content: 'run the tests '.repeat(400) }];
  out.context = await errorOf(() => c.chat.completions.create({ model: 'm', messages: long, max_tokens: 4 }));
  out.unknown = await errorOf(() =>
    c.chat.completions.create({ model: 'm', messages: msgs, max_tokens: 2, ...({ foo: 1 } as Extra) }),
  );
  out.penalty = await errorOf(() =>
    c.chat.completions.create({ model: 'm', messages: msgs, max_tokens: 2, frequency_penalty: 0.5 }),
  );
  return out as Observed;
}

async function drift(sessionId: string): Promise<{ detected: number; turns: number }> {
  const r = await fetch(`${base}/admin/sessions/${sessionId}`, {
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  const v = (await r.json()) as { drift: { detected: number }; turns: unknown[] };
  return { detected: v.drift.detected, turns: v.turns.length };
}

const callsOf = (c: CallsOrRefusal): CallsSeen => {
  if ('error' in c) throw new Error(`tool_choice refused: ${JSON.stringify(c.error)}`);
  return c;
};

async function check(o: Observed, engine: EngineKind): Promise<void> {
  // streaming drops nothing: the streamed text is the final content, also when it ends in a prefix of <tool_call>
  for (const p of [...o.stream_lt, ...o.stream_utf8]) expect(p.streamed).toBe(p.final);
  expect(o.stream_lt.some((p) => p.final.endsWith('<'))).toBe(true);
  expect(o.stream_utf8.some((p) => p.final.includes('é'))).toBe(true); // two tokens, one character
  // an agent that continues from the streamed text has not drifted
  expect(await drift(o.continue_session)).toEqual({ detected: 0, turns: 2 });
  // nor one that sends back the SDK's own message objects, turn after turn
  expect(await drift(o.multi_turn_session)).toEqual({ detected: 0, turns: 3 });
  // stop strings cut the text before the stop string and end the generation
  expect(o.stop.full).toContain('Y');
  expect(o.stop.cut).toBe(o.stop.full.split('Y')[0]);
  expect(o.stop.finish).toBe('stop');
  // top_logprobs: 3 alternatives per token, most likely first
  expect(o.top_logprobs).toHaveLength(4);
  for (const top of o.top_logprobs) {
    expect(top).toHaveLength(3);
    expect([...top].sort((a, b) => b - a)).toEqual(top);
  }
  expect(o.top_logprobs_streamed).toEqual(o.top_logprobs); // the same seed, streamed
  // text parts render as the joined string, in system and user messages alike
  expect(o.parts.list).toEqual(o.parts.text);
  // tool_choice: none never calls (the marker is banned even when it is all the request allows besides X):
  // not in the text, and not sampled either (an engine that skips special tokens in the text would hide it)
  expect(o.tool_choice.none).not.toContain('<tool_call>');
  expect(o.tool_choice.none).toMatch(/^X+$/);
  expect(o.tool_choice.none_ids).not.toContain(ids.tool_call);
  expect(o.tool_choice.none_ids.length).toBeGreaterThan(0);
  if (engine === 'local') {
    const required = callsOf(o.tool_choice.required);
    expect(required.names.length).toBeGreaterThanOrEqual(1);
    expect(['bash', 'submit']).toContain(required.names[0]);
    expect(callsOf(o.tool_choice.named).names[0]).toBe('submit');
    expect(callsOf(o.tool_choice.single).names).toHaveLength(1);
    expect(callsOf(o.tool_choice.single_auto).names.length).toBeLessThanOrEqual(1);
  } else {
    // vLLM forces a call with guided JSON that is not the chat template's <tool_call> markup (the recorded
    // tokens would not be what the template renders back), and cuts parallel calls only in the parsed
    // message: the proxy refuses both by name
    for (const [refused, param] of [
      [o.tool_choice.required, 'tool_choice'],
      [o.tool_choice.named, 'tool_choice'],
      [o.tool_choice.single, 'tool_choice'],
      [o.tool_choice.single_auto, 'parallel_tool_calls'],
    ] as const)
      expect(refused).toEqual({ error: { status: 400, code: 'unsupported_value', param } });
  }
  // no max_tokens: the rest of the context (not 16)
  expect(o.default_max_tokens.completion).toBe(maxLen - o.default_max_tokens.prompt);
  expect(o.default_max_tokens.finish).toBe('length');
  // errors carry OpenAI's codes and name the parameter
  expect(o.context).toMatchObject({ status: 400, code: 'context_length_exceeded' });
  expect(o.unknown).toEqual({ status: 400, code: 'unknown_parameter', param: 'foo' });
  expect(o.penalty).toMatchObject({ status: 400, param: 'frequency_penalty' });
}

/**
 * The suite against one engine: the proxy (engine kind `engine`) in front of what `start` starts, then the
 * npm SDK's and the Python SDK's observations, each checked by `check`.
 */
export function fidelitySuite(engine: EngineKind, start: () => Promise<Engine>): void {
  let upstream: Engine | undefined;
  beforeAll(async () => {
    upstream = await start();
    ({ ids, maxLen } = upstream);
    proxy = new TrajectoryProxy({
      upstreams: [upstream.url],
      engine,
      adminToken: ADMIN,
      upstreamAdminToken: upstream.adminToken,
    });
    base = `http://127.0.0.1:${await proxy.listen(0)}`;
  });

  afterAll(async () => {
    await proxy?.close();
    await upstream?.stop();
  });

  test(`the npm openai SDK through the proxy (${engine}): streaming, stop, top_logprobs, content parts, tool_choice, defaults, errors`, async () => {
    await check(await observeNpm(), engine);
  });

  test(`the Python openai SDK through the proxy (${engine}): the same observations`, async () => {
    const spec = JSON.stringify({ base, admin: ADMIN, ids });
    const out = await new Promise<string>((resolve, reject) => {
      // async: the proxy serving the script runs in this process
      execFile(
        AGENTS_PYTHON,
        [path.join(__dirname, 'sdk_fidelity.py'), spec],
        { encoding: 'utf8', timeout: 180_000 },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
      );
    });
    // the last line: litellm prints its own notices on stdout before it
    const seen = JSON.parse(out.trim().split('\n').at(-1)!) as Observed & { litellm_context: string };
    await check(seen, engine);
    // litellm (mini-swe-agent's client) recognises the error: a context-window error, not a retryable one
    expect(seen.litellm_context).toBe('ContextWindowExceededError');
  }, 240_000); // importing the SDKs and litellm alone takes tens of seconds on a loaded 2-core machine
}
