// `trainflow validate FILE`: the resolved config (every default filled in) or every problem at once.
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { loadConfigFile } from '../../config/load';

export function register(program: Command): void {
  program
    .command('validate')
    .description(
      'check a pipeline config and print it resolved (all defaults filled in); durations print in ms',
    )
    .argument('<file>', 'pipeline config (YAML)')
    .option('--json', 'print the resolved config as JSON instead of YAML')
    .action((file: string, opts: { json?: boolean }) => {
      const config = loadConfigFile(file);
      process.stdout.write(opts.json ? `${JSON.stringify(config, null, 2)}\n` : stringify(config));
      process.stderr.write(
        `${file}: valid (${config.stages.length} stages: ${config.stages.map((s) => s.name).join(' → ')})\n`,
      );
    });
}
