// `trainflow rl-driver DRIVER.json`: the rollout side of an RL or RFT stage (src/rl/driver.ts), started by the
// stage's Python job as a child process. Hidden from the main help: only the trainer runs it.
import type { Command } from 'commander';
import fs from 'node:fs';
import { UserError } from '../../errors';

export function register(program: Command): void {
  program
    .command('rl-driver <spec>', { hidden: true })
    .description(
      'run the data-plane driver of an RL/RFT stage (proxy, ledger, sampler, rollout manager, agents) for ' +
        'the JSON spec its trainer wrote; it talks to the trainer over stdin/stdout (TRAINFLOW_RL lines)',
    )
    .action(async (spec: string) => {
      if (!fs.existsSync(spec)) throw new UserError(`rl-driver: no driver spec at ${spec}`);
      // Loaded on demand, like the worker: the other commands do not pay for the data plane's modules.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const driver = require('../../rl/driver') as typeof import('../../rl/driver');
      await driver.main(spec);
    });
}
