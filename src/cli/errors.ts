// How the CLI ends on an error: a user error is one clear message; anything else is a bug, shown with its
// stack so it can be reported.
import { UserError } from '../errors';

export function reportAndExit(err: unknown): never {
  if (err instanceof UserError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(err.exitCode);
  }
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`trainflow: unexpected error: ${text}\n`);
  process.exit(1);
}
