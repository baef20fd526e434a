// The project's logger: pino, JSON lines by default (for machines and log shippers), readable on a terminal.
// Child loggers carry the pipeline, stage and attempt fields so every line says where it came from.
import pino from 'pino';

export type LogFields = { pipeline?: string; stage?: string; attempt?: number; [key: string]: unknown };

function wantsPretty(): boolean {
  const format = process.env.TRAINFLOW_LOG_FORMAT;
  if (format === 'json') return false;
  if (format === 'pretty') return true;
  return Boolean(process.stderr.isTTY);
}

function createLogger(): pino.Logger {
  const level = process.env.TRAINFLOW_LOG_LEVEL ?? 'info';
  const options: pino.LoggerOptions = { level, base: { service: 'trainflow' } };
  if (wantsPretty()) {
    // pino-pretty as a synchronous stream (not a worker-thread transport): short-lived CLI commands exit
    // without losing their last lines.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pretty = require('pino-pretty') as typeof import('pino-pretty');
    return pino(
      options,
      pretty({
        colorize: Boolean(process.stderr.isTTY),
        destination: 2,
        ignore: 'pid,hostname,service',
        sync: true,
      }),
    );
  }
  return pino(options, pino.destination({ dest: 2, sync: true }));
}

export const logger = createLogger();

export function logFor(fields: LogFields): pino.Logger {
  return logger.child(fields);
}
