// The SDK fidelity suite (sdk-fidelity.ts) against the proxy in front of the real CPU engine (serve/).
import { buildFixture, SERVER_ADMIN, startServer } from '../dataplane/servers';
import { fidelitySuite, fixtureIds } from './sdk-fidelity';

const MAX_LEN = 600;

fidelitySuite('local', async () => {
  const fix = buildFixture();
  const server = await startServer(fix.checkpoints[0], ['--max-len', String(MAX_LEN)]);
  return {
    url: server.url,
    maxLen: MAX_LEN,
    ids: fixtureIds(fix),
    adminToken: SERVER_ADMIN,
    stop: server.stop,
  };
});
