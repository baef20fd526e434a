// A one-line workflow for the stack's health test: proves a worker and the dev server can round-trip.
import { sleep } from '@temporalio/workflow';

export async function ping(message: string): Promise<string> {
  await sleep(1); // a durable timer too, so the round trip exercises the server's timer queue
  return `pong: ${message}`;
}
