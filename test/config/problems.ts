// The config tests' way to read a rejection: every `FILE:LINE:COL path: message` line of a config that must fail.
import { ConfigError, parseConfig } from '../../src/config/load';

/** The problems `parseConfig` reports for `yaml` (as file x.yaml); throws if the config is accepted. */
export function problems(yaml: string): string[] {
  try {
    parseConfig(yaml, 'x.yaml');
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  throw new Error('expected the config to be rejected');
}
