// The `trainflow` command line. Each sub-command lives in its own file under commands/ and registers itself.
import { Command } from 'commander';
import { register as registerValidate } from './commands/validate';
import { register as registerDev } from './commands/dev';
import { register as registerConfigReference } from './commands/config-reference';
import { register as registerRenderJob } from './commands/render-job';
import { register as registerStart } from './commands/start';
import { register as registerRun } from './commands/run';
import { register as registerStatus } from './commands/status';
import { register as registerList } from './commands/list';
import { register as registerCancel } from './commands/cancel';
import { register as registerLogs } from './commands/logs';
import { register as registerWorker } from './commands/worker';
import { register as registerResume } from './commands/resume';
import { register as registerSchedule } from './commands/schedule';
import { register as registerDataplane } from './commands/dataplane';
import { register as registerReport } from './commands/report';
import { reportAndExit } from './errors';

export function buildProgram(): Command {
  const program = new Command('trainflow')
    .description('Durable multi-stage training pipelines (mid-train, SFT, RFT, agentic RL) on Temporal')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)');
  registerValidate(program);
  registerDev(program);
  registerConfigReference(program);
  registerRenderJob(program);
  registerStart(program);
  registerRun(program);
  registerStatus(program);
  registerList(program);
  registerCancel(program);
  registerLogs(program);
  registerWorker(program);
  registerResume(program);
  registerSchedule(program);
  registerDataplane(program);
  registerReport(program);
  return program;
}

export function main(argv: string[] = process.argv): void {
  buildProgram()
    .parseAsync(argv)
    .catch((err: unknown) => reportAndExit(err));
}
