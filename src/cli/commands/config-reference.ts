// `trainflow config-reference`: the field reference of the config, generated from the schema.
import type { Command } from 'commander';
import { configReference } from '../../config/reference';

export function register(program: Command): void {
  program
    .command('config-reference')
    .description('print the reference of every config field (Markdown), generated from the schema')
    .action(() => {
      process.stdout.write(configReference());
    });
}
