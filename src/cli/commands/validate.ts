// `trainflow validate FILE`: every problem a run would meet before its jobs start — the schema's rules and the
// inputs the config names (local files exist and parse; s3:// objects too with --check-remote) — at once, or the
// resolved config (every default filled in).
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { validateConfigFile } from '../../config/checks';
import { loadConfigFile } from '../../config/load';
import { ObjectStore } from '../../storage/s3';

export function register(program: Command): void {
  program
    .command('validate')
    .description(
      'check a pipeline config and the files it names, and print it resolved (all defaults filled in); durations print in ms',
    )
    .argument('<file>', 'pipeline config (YAML)')
    .option('--json', 'print the resolved config as JSON instead of YAML')
    .option('--check-remote', 'also check that the s3:// inputs exist (data, tokenizer, init checkpoint)')
    .option(
      '--schema-only',
      'check the schema rules only, not the files the config names (for tools that resolve configs, and tests)',
    )
    .action(async (file: string, opts: { json?: boolean; checkRemote?: boolean; schemaOnly?: boolean }) => {
      const storage = opts.checkRemote ? loadConfigFile(file).storage : undefined;
      const remote = storage && new ObjectStore(storage);
      const config = opts.schemaOnly ? loadConfigFile(file) : await validateConfigFile(file, { remote });
      process.stdout.write(opts.json ? `${JSON.stringify(config, null, 2)}\n` : stringify(config));
      process.stderr.write(
        `${file}: valid (${config.stages.length} stages: ${config.stages.map((s) => s.name).join(' → ')})\n`,
      );
    });
}
