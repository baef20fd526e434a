// The data plane's token records against the contract (src/contract/tokens.ts), with the real Python inference
// server: its responses' token extensions (whole and streamed) have the contract's shape, and the trajectory
// the proxy records from them, wrapped as the rollout manager's group record, parses as the ledger's record.
import {
  choiceTokensSchema,
  groupRecordSchema,
  responseTokensSchema,
  trajectorySchema,
} from '../../src/contract/tokens';
import { TrajectoryProxy } from '../../src/dataplane/proxy';
import {
  buildFixture,
  SERVER_ADMIN,
  startServer,
  type Fixture,
  type RunningServer,
} from '../dataplane/servers';

let fix: Fixture;
let server: RunningServer;

beforeAll(async () => {
  fix = buildFixture();
  server = await startServer(fix.checkpoints[0]);
}, 120_000);

afterAll(async () => {
  await server?.stop();
});

interface RawChoice {
  token_ids?: unknown;
  policy_versions?: unknown;
}

/** The contract's fields of a choice or response (the rest is OpenAI's shape). */
function tokenFields(o: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
}

const body = (stream: boolean) => ({
  messages: [{ role: 'user', content: 'say X' }],
  max_tokens: 4,
  logprobs: true,
  stream,
  allowed_token_ids: [fix.letters.X, fix.letters.Y, fix.im_end],
});

test('the server sends the contract’s token extensions, whole and streamed', async () => {
  const whole = (await (
    await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body(false)),
    })
  ).json()) as { choices: RawChoice[]; prompt_token_ids?: unknown };
  const choice = choiceTokensSchema.parse(
    tokenFields(whole.choices[0] as never, ['token_ids', 'policy_versions']),
  );
  expect(choice.token_ids!.length).toBeGreaterThan(0);
  expect(choice.policy_versions).toHaveLength(choice.token_ids!.length);
  expect(
    responseTokensSchema.parse(tokenFields(whole, ['prompt_token_ids'])).prompt_token_ids!.length,
  ).toBeGreaterThan(0);

  const sse = await (
    await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body(true)),
    })
  ).text();
  const chunks = sse
    .split('\n\n')
    .map((e) => e.replace(/^data: /, '').trim())
    .filter((d) => d && d !== '[DONE]')
    .map((d) => JSON.parse(d) as { choices: RawChoice[]; prompt_token_ids?: unknown });
  let tokens = 0;
  for (const c of chunks) {
    responseTokensSchema.parse(tokenFields(c, ['prompt_token_ids']));
    for (const ch of c.choices) {
      const ext = choiceTokensSchema.parse(tokenFields(ch as never, ['token_ids', 'policy_versions']));
      tokens += ext.token_ids?.length ?? 0; // the opening chunk (the role) carries none
    }
  }
  expect(tokens).toBeGreaterThan(0);
  expect(chunks.some((c) => Array.isArray(c.prompt_token_ids))).toBe(true);
}, 60_000);

test('a recorded trajectory and its group record parse as the contract’s records', async () => {
  const proxy = new TrajectoryProxy({
    upstreams: [server.url],
    adminToken: 'adm',
    upstreamAdminToken: SERVER_ADMIN,
  });
  const port = await proxy.listen(0);
  try {
    const { session, key } = proxy.sessions.issue('task-1', 'g-1', { launch_version: 0 });
    const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify(body(false)),
    });
    expect(res.status).toBe(200);
    await res.text();
    const trajectory = await proxy.finish(session.id, 1);
    const parsed = trajectorySchema.parse(JSON.parse(JSON.stringify(trajectory)));
    expect(parsed.tree.children.length + parsed.tree.tokens.length).toBeGreaterThan(0);
    groupRecordSchema.parse(
      JSON.parse(
        JSON.stringify({
          kind: 'group',
          group_id: 'g-1',
          task_id: 'task-1',
          launch_version: 0,
          trajectories: [trajectory],
        }),
      ),
    );
  } finally {
    await proxy.close();
  }
}, 60_000);
