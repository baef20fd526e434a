// A streamed answer is recorded before the agent can see its end: an agent (the openai SDK, litellm) sends
// its next turn as soon as it has read `data: [DONE]`, and that turn must find the streamed one as its
// parent even when the upstream's end of response arrives later. A real inference server ends its response
// right after [DONE], so the gap shows only under load; this scripted upstream (a test double for that
// timing alone) holds its response open after [DONE].
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TrajectoryProxy } from '../../src/dataplane/proxy';

const ADMIN = 'adm';
const HOLD_MS = 400;

function scriptedUpstream(): Promise<{ server: http.Server; url: string }> {
  let calls = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const turn = calls++;
      // turn 0: prompt [1, 2], output [3, 4]; turn 1's prompt extends it (no drift)
      const prompt = turn === 0 ? [1, 2] : [1, 2, 3, 4, 5];
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chunk = (o: unknown): boolean => res.write(`data: ${JSON.stringify(o)}\n\n`);
      chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] });
      chunk({
        choices: [
          {
            index: 0,
            delta: { content: 'ab' },
            logprobs: { content: [{ logprob: -1 }, { logprob: -2 }] },
            token_ids: [3, 4],
            policy_versions: [0, 0],
          },
        ],
      });
      chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
      chunk({ choices: [], prompt_token_ids: prompt });
      res.write('data: [DONE]\n\n');
      setTimeout(() => res.end(), HOLD_MS);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }),
    ),
  );
}

/** Reads a streamed answer only up to its [DONE] event, as the SDKs do, and returns the text streamed. */
async function untilDone(res: Response): Promise<string> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error('the stream ended without [DONE]');
    buf += dec.decode(value, { stream: true });
    let cut: number;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const data = buf.slice(0, cut).replace(/^data: /, '');
      buf = buf.slice(cut + 2);
      if (data === '[DONE]') {
        void reader.cancel().catch(() => undefined);
        return text;
      }
      const ev = JSON.parse(data) as { choices: { delta?: { content?: string } }[] };
      text += ev.choices[0]?.delta?.content ?? '';
    }
  }
}

test('the next turn, sent at [DONE] while the upstream still holds its response open, continues the streamed one', async () => {
  const up = await scriptedUpstream();
  const proxy = new TrajectoryProxy({ upstreams: [up.url], adminToken: ADMIN });
  const base = `http://127.0.0.1:${await proxy.listen(0)}`;
  try {
    const issued = (await (
      await fetch(`${base}/admin/sessions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ task_id: 't' }),
      })
    ).json()) as { session_id: string; key: string };
    const ask = (messages: unknown[]): Promise<Response> =>
      fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${issued.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ messages, stream: true }),
      });
    const first = [{ role: 'user', content: 'hi' }];
    const t0 = Date.now();
    const reply = await untilDone(await ask(first));
    expect(reply).toBe('ab');
    await untilDone(
      await ask([...first, { role: 'assistant', content: reply }, { role: 'user', content: 'go on' }]),
    );
    expect(Date.now() - t0).toBeLessThan(HOLD_MS); // the second turn was sent while the first was still open
    await new Promise((r) => setTimeout(r, HOLD_MS + 100));
    const t = await proxy.finish(issued.session_id, 1);
    expect(t.turns.map((u) => [u.id, u.parent, u.drift])).toEqual([
      ['0.0', null, false],
      ['1.0', '0.0', false],
    ]);
  } finally {
    await proxy.close();
    up.server.closeAllConnections();
    up.server.close();
  }
});
