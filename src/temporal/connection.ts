// Connections to Temporal, with the one failure every user hits first (no server) turned into one sentence.
import { Client, Connection } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { UserError } from '../errors';

export class TemporalUnreachableError extends UserError {}

export function temporalAddress(address?: string): string {
  return address ?? process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233';
}

function unreachable(address: string): TemporalUnreachableError {
  return new TemporalUnreachableError(
    `Temporal is unreachable at ${address}: start it with \`trainflow dev up\``,
  );
}

export async function connectClient(options: { address?: string; namespace?: string } = {}): Promise<Client> {
  const address = temporalAddress(options.address);
  try {
    // Generous: a loaded machine can take seconds to answer; a refused connection still fails at once.
    const connection = await Connection.connect({ address, connectTimeout: 15_000 });
    return new Client({ connection, namespace: options.namespace ?? 'default' });
  } catch {
    throw unreachable(address);
  }
}

export async function connectWorker(address?: string): Promise<NativeConnection> {
  const target = temporalAddress(address);
  // Loaded on demand: the worker package (native core) takes seconds to load, and most commands never need it.
  const { NativeConnection: Native } = await import('@temporalio/worker');
  try {
    return await Native.connect({ address: target });
  } catch {
    throw unreachable(target);
  }
}

/** The Web UI link of a workflow on the dev server (port 8233 next to 7233) or TEMPORAL_UI_URL. */
export function workflowUiUrl(address: string, namespace: string, workflowId: string): string {
  const base = process.env.TEMPORAL_UI_URL ?? `http://${address.split(':')[0]}:8233`;
  return `${base}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
