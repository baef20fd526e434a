// A fast stub inference server for bench/dataplane: answers /v1/chat/completions at once with a canned
// response in our server's shape (token ids, log-probs, versions, prompt ids), whole or as 8 SSE chunks.
// Every chunk carries OpenAI's envelope (id, object, created, model) so third-party proxies (LiteLLM) parse it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const PROMPT = Array.from({ length: 64 }, (_, i) => i + 10);
const OUT = Array.from({ length: 16 }, (_, i) => i + 100);

const whole = JSON.stringify({
  id: 'chatcmpl-stub',
  object: 'chat.completion',
  created: 1764547200,
  model: 'stub',
  usage: {
    prompt_tokens: PROMPT.length,
    completion_tokens: OUT.length,
    total_tokens: PROMPT.length + OUT.length,
  },
  prompt_token_ids: PROMPT,
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'stub reply' },
      finish_reason: 'stop',
      token_ids: OUT,
      policy_versions: OUT.map(() => 1),
      logprobs: { content: OUT.map((t) => ({ token: `token_id:${t}`, logprob: -0.5 })) },
    },
  ],
});

const envelope = { id: 'chatcmpl-stub', object: 'chat.completion.chunk', created: 1764547200, model: 'stub' };
const chunks: string[] = [];
for (let k = 0; k < 8; k++) {
  const ids = OUT.slice(k * 2, k * 2 + 2);
  chunks.push(
    `data: ${JSON.stringify({ ...envelope, choices: [{ index: 0, delta: { content: 'ab' }, token_ids: ids, policy_versions: [1, 1], logprobs: { content: ids.map((t) => ({ token: `token_id:${t}`, logprob: -0.5 })) } }] })}\n\n`,
  );
}
chunks.push(
  `data: ${JSON.stringify({ ...envelope, choices: [{ index: 0, delta: {}, finish_reason: 'stop', token_ids: [] }] })}\n\n`,
);
chunks.push(
  `data: ${JSON.stringify({ ...envelope, choices: [], prompt_token_ids: PROMPT })}\n\ndata: [DONE]\n\n`,
);

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  let body = '';
  req.on('data', (c: Buffer) => (body += c.toString()));
  req.on('end', () => {
    const stream = body.includes('"stream":true');
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const c of chunks) res.write(c);
      res.end();
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(whole) });
      res.end(whole);
    }
  });
});
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () =>
  process.stdout.write(`STUB ${(server.address() as AddressInfo).port}\n`),
);
