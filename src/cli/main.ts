// The `trainflow` command line. Each sub-command lives in its own file under commands/ and registers itself.
import { Command } from 'commander';
import { reportAndExit } from './errors';

type Register = (program: Command) => void;

// Each command's module, loaded only when the program needs it: a command's own dependencies (the Temporal
// client, the Kubernetes client, the AWS SDK) take seconds to load, and `trainflow rl-driver`, started by
// every RL stage, should not pay for the others. require, not import(): tsx resolves a dynamic import() of a
// .ts path as ESM, without extension lookup.
/* eslint-disable @typescript-eslint/no-require-imports */
const COMMANDS: Record<string, () => Register> = {
  validate: () => (require('./commands/validate') as typeof import('./commands/validate')).register,
  dev: () => (require('./commands/dev') as typeof import('./commands/dev')).register,
  'config-reference': () =>
    (require('./commands/config-reference') as typeof import('./commands/config-reference')).register,
  'render-job': () => (require('./commands/render-job') as typeof import('./commands/render-job')).register,
  start: () => (require('./commands/start') as typeof import('./commands/start')).register,
  run: () => (require('./commands/run') as typeof import('./commands/run')).register,
  status: () => (require('./commands/status') as typeof import('./commands/status')).register,
  list: () => (require('./commands/list') as typeof import('./commands/list')).register,
  cancel: () => (require('./commands/cancel') as typeof import('./commands/cancel')).register,
  logs: () => (require('./commands/logs') as typeof import('./commands/logs')).register,
  worker: () => (require('./commands/worker') as typeof import('./commands/worker')).register,
  resume: () => (require('./commands/resume') as typeof import('./commands/resume')).register,
  schedule: () => (require('./commands/schedule') as typeof import('./commands/schedule')).register,
  dataplane: () => (require('./commands/dataplane') as typeof import('./commands/dataplane')).register,
  report: () => (require('./commands/report') as typeof import('./commands/report')).register,
  'rl-driver': () => (require('./commands/rl-driver') as typeof import('./commands/rl-driver')).register,
  tasks: () => (require('./commands/tasks') as typeof import('./commands/tasks')).register,
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** The program with every command, or only `only` (a known command name: what `main` runs). */
export function buildProgram(only?: string): Command {
  const program = new Command('trainflow')
    .description('Durable multi-stage training pipelines (mid-train, SFT, RFT, agentic RL) on Temporal')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  for (const [name, load] of Object.entries(COMMANDS))
    if (only === undefined || only === name) load()(program);
  return program;
}

export function main(argv: string[] = process.argv): void {
  // `trainflow NAME ...` loads only NAME; anything else (--help, --version, a typo) gets the whole program.
  const name = argv[2];
  buildProgram(name !== undefined && Object.hasOwn(COMMANDS, name) ? name : undefined)
    .parseAsync(argv)
    .catch((err: unknown) => reportAndExit(err));
}
