// What the pipeline CLI commands share: connecting (from a config file or flags/env), following a pipeline
// until it ends, and reading a pipeline's status even when no worker answers queries.
import type { Client } from '@temporalio/client';
import type { Command } from 'commander';
import { setTimeout as sleep } from 'node:timers/promises';
import { statusQuery, type trainingPipeline } from '../../workflows';
import { loadConfigFile } from '../config/load';
import type { PipelineConfig } from '../config/schema';
import { connectClient, temporalAddress, workflowUiUrl } from '../temporal/connection';
import { changeLines, renderStatus } from './render';
import type { PipelineStatus } from './status';

export interface ConnectionFlags {
  address?: string;
  namespace?: string;
  config?: string;
}

export function addConnectionFlags(command: Command): Command {
  return command
    .option(
      '--address <host:port>',
      'Temporal frontend (default: the config’s, $TEMPORAL_ADDRESS or 127.0.0.1:7233)',
    )
    .option('--namespace <name>', 'Temporal namespace (default: the config’s or "default")');
}

export async function clientFor(flags: ConnectionFlags, config?: PipelineConfig): Promise<Client> {
  const loaded = config ?? (flags.config ? loadConfigFile(flags.config) : undefined);
  return connectClient({
    address: flags.address ?? loaded?.temporal.address ?? temporalAddress(),
    namespace: flags.namespace ?? loaded?.temporal.namespace ?? 'default',
  });
}

export function uiUrl(client: Client, id: string, address = temporalAddress()): string {
  return workflowUiUrl(address, client.options.namespace, id);
}

/** The status query, or — for a closed run no worker answers for — its result when it completed. */
export async function readStatus(client: Client, id: string): Promise<PipelineStatus | undefined> {
  const handle = client.workflow.getHandle<typeof trainingPipeline>(id);
  // Deadlines, not a timed race: an abandoned call keeps retrying inside the gRPC client, and a retry firing
  // after the connection is closed crashes the process (`Channel has been shut down`). Every call here ends.
  try {
    return await client.withDeadline(Date.now() + 5000, () => handle.query(statusQuery));
  } catch {
    const d = await client.withDeadline(Date.now() + 10_000, () => handle.describe());
    if (d.status.name === 'COMPLETED') return await handle.result();
    return undefined;
  }
}

/**
 * Shows the status every second until the run ends (or `stop` resolves); returns its last status. On a terminal
 * the block is redrawn in place; otherwise a line is printed for each change (see changeLines), never a redraw.
 */
export async function follow(
  client: Client,
  id: string,
  out: NodeJS.WriteStream = process.stdout,
  stop?: Promise<unknown>,
): Promise<PipelineStatus | undefined> {
  let stopped = false;
  void stop?.then(() => (stopped = true));
  const link = uiUrl(client, id);
  const show = out.isTTY ? redrawer(out, link) : changePrinter(out, link);
  while (!stopped) {
    const status = await readStatus(client, id).catch(() => undefined);
    if (status) {
      show(status);
      if (status.state !== 'running') return status;
    } else {
      const d = await client.workflow
        .getHandle(id)
        .describe()
        .catch(() => undefined);
      if (d && d.status.name !== 'RUNNING') {
        out.write(`pipeline ${id}: ${d.status.name.toLowerCase()}\n`);
        return undefined;
      }
      show(
        d
          ? `pipeline ${id}: waiting for a control worker to answer (start one: \`trainflow worker\`)`
          : `pipeline ${id}: Temporal is unreachable; waiting for it to come back`,
      );
    }
    await Promise.race([sleep(1000), stop]);
  }
  return undefined;
}

type Show = (what: PipelineStatus | string) => void;

/** On a terminal: the status block (or a waiting notice), redrawn in place when it changes. */
function redrawer(out: NodeJS.WriteStream, link: string): Show {
  let previousText = '';
  return (what) => {
    const text = typeof what === 'string' ? what : renderStatus(what, link);
    if (text === previousText) return;
    if (previousText) out.write(`\x1b[${previousText.split('\n').length}A\x1b[J`);
    out.write(`${text}\n`);
    previousText = text;
  };
}

/** Elsewhere: the UI link once, then a line per change; a notice once until the status is back. */
function changePrinter(out: NodeJS.WriteStream, link: string): Show {
  const seen = new Map<string, string>();
  let linked = false;
  let notice = '';
  return (what) => {
    if (typeof what === 'string') {
      if (what !== notice) out.write(`${what}\n`);
      notice = what;
      return;
    }
    notice = '';
    const lines = changeLines(seen, what);
    if (!linked && lines.length > 0) lines.splice(1, 0, `  ${link}`);
    linked ||= lines.length > 0;
    if (lines.length > 0) out.write(`${lines.join('\n')}\n`);
  };
}
