// The proxy's vLLM request rules (src/dataplane/engines.ts) as pure functions; the same rules against a real
// vLLM through both official SDKs: test/agents/sdk-fidelity-vllm.test.ts (the pytest-vllm lane).
import { openaiError, vllmRefusal, vllmRequest } from '../../src/dataplane/engines';

const msgs = [{ role: 'user', content: 'hi' }];
const tools = [{ type: 'function', function: { name: 'bash', parameters: {} } }];

test('vLLM: parameters it would ignore or cannot serve faithfully are refused by name', () => {
  const refused = (body: Record<string, unknown>) => vllmRefusal({ messages: msgs, ...body }, 'chat');
  expect(refused({ foo: 1 })).toMatchObject({ param: 'foo', code: 'unknown_parameter' });
  expect(refused({ prompt_token_ids: [1, 2] })).toMatchObject({ param: 'prompt_token_ids' });
  expect(refused({ frequency_penalty: 0.5 })).toMatchObject({
    param: 'frequency_penalty',
    code: 'unsupported_parameter',
  });
  expect(refused({ logit_bias: { 3: -100 } })).toMatchObject({ param: 'logit_bias' });
  expect(refused({ tools, tool_choice: 'required' })).toMatchObject({
    param: 'tool_choice',
    code: 'unsupported_value',
  });
  expect(refused({ tools, tool_choice: { type: 'function', function: { name: 'bash' } } })).toMatchObject({
    param: 'tool_choice',
  });
  expect(refused({ tools, parallel_tool_calls: false })).toMatchObject({ param: 'parallel_tool_calls' });
  expect(refused({ logprobs: true, top_logprobs: 21 })).toMatchObject({ param: 'top_logprobs' });
  expect(vllmRefusal({ prompt: 'x', echo: true }, 'completion')).toMatchObject({ param: 'echo' });
  // what agents send passes, defaults included
  for (const ok of [
    { tools, tool_choice: 'auto', parallel_tool_calls: true, max_tokens: 8, temperature: 1, top_p: 0.9 },
    {
      tools,
      tool_choice: 'none',
      seed: 3,
      stop: ['\n'],
      stream: true,
      stream_options: { include_usage: true },
    },
    { frequency_penalty: 0, presence_penalty: null, logit_bias: {}, response_format: { type: 'text' } },
    {
      logprobs: true,
      top_logprobs: 20,
      allowed_token_ids: [1, 2],
      n: 2,
      user: 'u',
      max_completion_tokens: 4,
    },
  ])
    expect(refused(ok)).toBeNull();
  expect(vllmRefusal({ prompt: [1, 2], logprobs: 2, ignore_eos: true }, 'completion')).toBeNull();
});

test('vLLM: the request asks for one more top log-prob and bans the tool-call marker for tool_choice none', () => {
  const body = JSON.parse(
    vllmRequest({ messages: msgs, tools, tool_choice: 'none', logprobs: true, top_logprobs: 3 }, 'chat'),
  ) as Record<string, unknown>;
  expect(body).toMatchObject({ top_logprobs: 4, bad_words: ['<tool_call>'], stream: true, model: 'policy' });
  const plain = JSON.parse(vllmRequest({ messages: msgs }, 'chat')) as Record<string, unknown>;
  expect(plain.top_logprobs).toBeUndefined();
  expect(plain.bad_words).toBeUndefined();
});

test("vLLM's error bodies in OpenAI's shape", () => {
  // vLLM 0.32's answer to a prompt over the context (its code is the HTTP status)
  const overLong = Buffer.from(
    JSON.stringify({
      error: {
        message:
          "This model's maximum context length is 600 tokens. However, your prompt contains at least 601 input tokens",
        type: 'BadRequestError',
        param: 'input_tokens',
        code: 400,
      },
    }),
  );
  expect(JSON.parse(openaiError(400, overLong).toString())).toMatchObject({
    error: { type: 'invalid_request_error', param: 'messages', code: 'context_length_exceeded' },
  });
  const other = Buffer.from(
    JSON.stringify({ error: { message: 'bad', type: 'BadRequestError', code: 400 } }),
  );
  expect(JSON.parse(openaiError(400, other).toString())).toEqual({
    error: { message: 'bad', type: 'invalid_request_error', param: null, code: null },
  });
  const text = Buffer.from('Internal Server Error');
  expect(openaiError(500, text)).toBe(text);
});
