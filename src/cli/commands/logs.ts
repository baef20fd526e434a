// `trainflow logs ID [STAGE] [--follow]`: a stage's job log (stdout+stderr of every attempt), as kept by the
// local launcher (or the Slurm launcher's shared job folder) on this host; without STAGE, every stage's log in order.
import type { Command } from 'commander';
import { existsSync, readdirSync } from 'node:fs';
import { UserError } from '../../errors';
import { LocalLauncher } from '../../launchers/local';
import { SlurmLauncher } from '../../launchers/slurm';
import { jobName } from '../../launchers/types';

export function register(program: Command): void {
  program
    .command('logs')
    .description('print the job log of a pipeline stage (local or Slurm launcher, from this host)')
    .argument('<id>', 'pipeline id')
    .argument('[stage]', 'stage name (default: every stage)')
    .option('--follow', 'keep printing while the job runs')
    .action(async (id: string, stage: string | undefined, opts: { follow?: boolean }) => {
      // Local and Slurm jobs keep their log in a job folder (Slurm's is shared with the compute nodes).
      const launchers = [new LocalLauncher(), new SlurmLauncher()];
      const prefix = jobName(id, 'x').slice(0, -1);
      const present: { name: string; launcher: LocalLauncher | SlurmLauncher }[] = [];
      for (const launcher of launchers) {
        const names = stage
          ? [jobName(id, stage)]
          : existsSync(launcher.root)
            ? readdirSync(launcher.root)
                .filter((n) => n.startsWith(prefix))
                .sort()
            : [];
        for (const name of names) {
          if (existsSync(`${launcher.jobDir(name)}/job.log`)) present.push({ name, launcher });
        }
      }
      if (present.length === 0) {
        throw new UserError(
          `no job logs for ${id}${stage ? ` stage ${stage}` : ''} under ${launchers.map((l) => l.root).join(' or ')} (logs stay on the launcher worker's host)`,
        );
      }
      for (const { name, launcher } of present) {
        if (!stage) process.stdout.write(`==> ${name.slice(prefix.length)} <==\n`);
        for await (const chunk of launcher.logs(name, { follow: opts.follow })) process.stdout.write(chunk);
      }
    });
}
