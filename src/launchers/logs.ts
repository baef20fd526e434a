// Reading a job's log file, shared by every launcher that keeps one on this host (local, Slurm).
import { existsSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LogOptions } from './types';

/**
 * A log file as chunks of text: from `tailBytes` before its end (or its start), and with `follow` on until
 * `running()` says the job ended (then one last read) or the signal aborts.
 */
export async function* followFile(
  file: string,
  options: LogOptions,
  running: () => Promise<boolean>,
  pollMs = 300,
): AsyncIterable<string> {
  while (!existsSync(file)) {
    // A pending job has no log yet: wait for it while following, else there is nothing to show.
    if (!options.follow || options.signal?.aborted || !(await running())) return;
    await sleep(pollMs);
  }
  const handle = await open(file, 'r');
  try {
    let position = options.tailBytes !== undefined ? Math.max(0, statSync(file).size - options.tailBytes) : 0;
    const buffer = Buffer.alloc(64 * 1024);
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
      if (bytesRead > 0) {
        position += bytesRead;
        yield buffer.subarray(0, bytesRead).toString('utf8');
        continue;
      }
      if (!options.follow || options.signal?.aborted) return;
      if (!(await running())) {
        for (;;) {
          const last = await handle.read(buffer, 0, buffer.length, position);
          if (last.bytesRead === 0) return;
          position += last.bytesRead;
          yield buffer.subarray(0, last.bytesRead).toString('utf8');
        }
      }
      await sleep(pollMs);
    }
  } finally {
    await handle.close();
  }
}
