// The Temporal SDK's logs through the project's pino logger (src/log.ts), at levels a person at a terminal can
// live with: the worker's life cycle and its "not polling" notices at debug; a failed activity attempt as one
// sentence (`stage sft: attempt 2 failed (job exited 1: …); retrying in 5s`), never a stack trace, with the
// full error at debug; errors in any other SDK message reduced to their first line above debug. Native (core)
// logs are forwarded to the same logger instead of the SDK's own console output.
import { Context } from '@temporalio/activity';
import type { LogLevel, LogMetadata, Logger, RetryPolicy } from '@temporalio/common';
import type pino from 'pino';
import { logger as rootLogger } from '../log';

const PINO_LEVEL: Record<LogLevel, pino.Level> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/** SDK messages that describe the worker's own life, not the pipeline's: debug, whatever level the SDK gives. */
const LIFE_CYCLE = [
  /^Worker state changed/,
  /^No (workflows|activities|Nexus services) registered/,
  /^Initializing worker/,
  /^Worker shutdown/,
  // Core retrying its calls while the server is away: `trainflow run`'s progress says "Temporal is unreachable"
  // once; a line per retried poll would bury it.
  /^gRPC call \S+ retried \d+ times/,
];

/** The first line of an error's message: enough for a terminal; the stack goes to debug. */
function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0].trim();
}

/** What a failed job attempt says in one parenthesis: `job exited 1: <its last output line>`, or the message. */
export function failureSummary(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const exited = /failed with exit code (\d+); last lines:\n([\s\S]*)$/.exec(message);
  if (exited) {
    const last = exited[2].trimEnd().split('\n').pop()?.trim();
    return last ? `job exited ${exited[1]}: ${last.slice(0, 160)}` : `job exited ${exited[1]}`;
  }
  return firstLine(err).slice(0, 200);
}

function durationMs(value: RetryPolicy['initialInterval']): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number') return value;
  // decompileRetryPolicy yields milliseconds; a string duration only reaches here from hand-built options.
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(String(value).trim());
  if (!m) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 'ms'] ?? 1;
  return Number(m[1]) * unit;
}

export function formatDelay(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`;
  return `${Math.round(ms / 60_000)}m`;
}

interface FailedAttempt {
  attempt: number;
  activityType: string;
  workflowId?: string;
  retryPolicy?: RetryPolicy;
}

/** Whether the server will retry this failure, and after how long (its retry policy, as the server applies it). */
export function nextRetry(err: unknown, a: FailedAttempt): { delayMs: number } | undefined {
  const failure = err as { nonRetryable?: boolean; type?: string | null } | undefined;
  if (failure?.nonRetryable) return undefined;
  const policy = a.retryPolicy;
  if (failure?.type && policy?.nonRetryableErrorTypes?.includes(failure.type)) return undefined;
  if (policy?.maximumAttempts && a.attempt >= policy.maximumAttempts) return undefined;
  const initial = durationMs(policy?.initialInterval) ?? 1000;
  const max = durationMs(policy?.maximumInterval) ?? initial * 100;
  const delay = initial * (policy?.backoffCoefficient ?? 2) ** (a.attempt - 1);
  return { delayMs: Math.min(delay, max) };
}

/** `stage sft: attempt 2 failed (job exited 1: …); retrying in 5s` — one line per failed attempt. */
export function attemptLine(err: unknown, a: FailedAttempt): string {
  // The stage's child workflow is `<pipeline id>--<stage>` (workflows/pipeline.ts).
  const stage =
    a.activityType === 'runStageJob' && a.workflowId?.includes('--')
      ? a.workflowId.slice(a.workflowId.lastIndexOf('--') + 2)
      : undefined;
  const subject = stage ? `stage ${stage}` : `activity ${a.activityType}`;
  const retry = nextRetry(err, a);
  const outcome = retry ? `retrying in ${formatDelay(retry.delayMs)}` : 'not retried';
  return `${subject}: attempt ${a.attempt} failed (${failureSummary(err)}); ${outcome}`;
}

function currentAttempt(meta: LogMetadata | undefined): FailedAttempt | undefined {
  try {
    // The SDK logs `Activity failed` inside the activity's context, so its info (retry policy included) is here.
    const info = Context.current().info;
    return {
      attempt: info.attempt,
      activityType: info.activityType,
      workflowId: info.workflowExecution?.workflowId,
      retryPolicy: info.retryPolicy,
    };
  } catch {
    if (typeof meta?.attempt !== 'number' || typeof meta.activityType !== 'string') return undefined;
    return {
      attempt: meta.attempt,
      activityType: meta.activityType,
      workflowId: typeof meta.workflowId === 'string' ? meta.workflowId : undefined,
    };
  }
}

/** A Temporal `Logger` writing through pino. */
export class PinoTemporalLogger implements Logger {
  constructor(private readonly pinoLogger: pino.Logger = rootLogger.child({ component: 'temporal' })) {}

  log(level: LogLevel, message: string, meta: LogMetadata = {}): void {
    const { error, err, ...fields } = meta as { error?: unknown; err?: unknown } & LogMetadata;
    const failure = error ?? err;
    let pinoLevel = PINO_LEVEL[level];
    if (LIFE_CYCLE.some((re) => re.test(message))) pinoLevel = 'debug';
    if (message === 'Activity failed' && level !== 'DEBUG' && level !== 'TRACE') {
      const attempt = currentAttempt(meta);
      if (attempt) {
        this.pinoLogger.debug({ ...fields, err: failure }, message);
        this.pinoLogger.warn(attemptLine(failure, attempt));
        return;
      }
    }
    if (failure !== undefined && pinoLevel !== 'debug' && pinoLevel !== 'trace') {
      // One readable line at the SDK's level; the stack (and cause chain) only at debug.
      this.pinoLogger.debug({ ...fields, err: failure }, message);
      this.pinoLogger[pinoLevel](fields, `${message}: ${firstLine(failure)}`);
      return;
    }
    this.pinoLogger[pinoLevel](failure === undefined ? fields : { ...fields, err: failure }, message);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }
}

let installed = false;

/**
 * Installs the Temporal runtime with the pino logger, once per process, before any worker connection is made;
 * a process that installed a runtime already (a test harness) keeps its own.
 */
export function installTemporalLogging(): void {
  if (installed) return;
  installed = true;
  // Loaded here, not at the top: the worker package (native core) is only for processes that run workers.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Runtime } = require('@temporalio/worker') as typeof import('@temporalio/worker');
  try {
    Runtime.install({
      logger: new PinoTemporalLogger(),
      // Core's own warnings (poll errors while the server is away, …) through the same logger, not raw stderr.
      telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } },
    });
  } catch {
    // already installed
  }
}
