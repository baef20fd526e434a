// The `trainflow` command line. Each sub-command lives in its own file under commands/ and registers itself.
import { Command } from 'commander';
import { register as registerValidate } from './commands/validate';
import { register as registerDev } from './commands/dev';
import { register as registerConfigReference } from './commands/config-reference';
import { reportAndExit } from './errors';

export function buildProgram(): Command {
  const program = new Command('trainflow')
    .description('Durable multi-stage training pipelines (mid-train, SFT, RFT, agentic RL) on Temporal')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  registerValidate(program);
  registerDev(program);
  registerConfigReference(program);
  return program;
}

export function main(argv: string[] = process.argv): void {
  buildProgram()
    .parseAsync(argv)
    .catch((err: unknown) => reportAndExit(err));
}
