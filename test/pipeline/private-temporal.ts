// A Temporal dev server of a test's own, for the tests that stop or kill the server mid-run: the shared
// stack's server serves the other lanes' tests at the same time (infra/dev/run-tests.sh runs them side by
// side), and an outage there would fail whichever of them connects during it.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  killTemporal,
  stackSettings,
  startTemporal,
  stopTemporal,
  type StackSettings,
} from '../../src/dev/stack';

export interface PrivateTemporal {
  /** host:port of its frontend */
  address: string;
  settings: StackSettings;
  /** kill -9 (no shutdown); `start` brings it back with the same history (its SQLite file) */
  kill(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** stops it and removes its data */
  close(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

export async function startPrivateTemporal(): Promise<PrivateTemporal> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'trainflow-temporal-'));
  const settings: StackSettings = {
    ...stackSettings(),
    dataDir,
    temporalPort: await freePort(),
    temporalUiPort: await freePort(),
  };
  await startTemporal(settings);
  return {
    address: `${settings.host}:${settings.temporalPort}`,
    settings,
    kill: () => killTemporal(settings),
    stop: () => stopTemporal(settings),
    start: () => startTemporal(settings),
    async close() {
      await stopTemporal(settings);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** One private server for the test file: started before its tests, stopped after; the getter gives it. */
export function usePrivateTemporal(): () => PrivateTemporal {
  let temporal: PrivateTemporal | undefined;
  beforeAll(async () => {
    temporal = await startPrivateTemporal();
  }, 90_000);
  afterAll(async () => {
    await temporal?.close();
  });
  return () => {
    if (!temporal)
      throw new Error(
        'the private Temporal server is not started (call usePrivateTemporal at the top level)',
      );
    return temporal;
  };
}
