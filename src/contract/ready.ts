// The ready lines of the data plane's long-lived processes: one stdout line once each is listening.
//   `python -m trainflow_trainer.serve` (the inference server): `TRAINFLOW_SERVE <ServeReady>`, read by the
//     RL stage's job (trainer/trainflow_trainer/rl/rollouts.py) and the tests;
//   `trainflow dataplane serve` (the proxy and its ledger): `TRAINFLOW_DATAPLANE <DataplaneReady>`.
import { z } from 'zod';

export const SERVE_LINE_PREFIX = 'TRAINFLOW_SERVE ';
export const DATAPLANE_LINE_PREFIX = 'TRAINFLOW_DATAPLANE ';

const port = () => z.number().int().min(0).max(65535);

export const serveReadySchema = z
  .strictObject({
    host: z.string(),
    port: port(),
    policy_version: z.number().int().nonnegative().describe('The policy version of the loaded weights.'),
  })
  .describe('The inference server is listening.');
export type ServeReady = z.output<typeof serveReadySchema>;

export const dataplaneReadySchema = z
  .strictObject({
    host: z.string(),
    port: port(),
    upstreams: z.array(z.string()),
    ledger_size: z
      .number()
      .int()
      .nonnegative()
      .optional()
      .describe('Records in the ledger (with --ledger-dir).'),
    ledger_from: z
      .enum(['local', 's3', 'new'])
      .optional()
      .describe('Where the ledger came from (src/dataplane/assemble.ts).'),
  })
  .describe('`trainflow dataplane serve` is listening.');
export type DataplaneReady = z.output<typeof dataplaneReadySchema>;
