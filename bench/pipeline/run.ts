// Bench: pipeline overhead on the local stack (`make bench-pipeline`, which starts a private stack).
//   transition: from one stage's job exit to the next stage's job start (activity sees the exit, completes,
//     the stage workflow records the manifest and applies retention, the pipeline starts the next child, its
//     job activity is dispatched and launches) — measured from the job log's exit and launch lines.
//   five_stage_wall_s: a 5-stage pipeline of no-op jobs (one step each) from start to close.
// Workers run in this process with their default polling (the job activity checks its job every 250 ms).
// Writes bench/results/pipeline.json and prints a table.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { jobName } from '../../src/launchers/types';
import { startPipeline } from '../../src/pipeline/client';
import { repoRoot } from '../../src/pipeline/paths';
import {
  connectTestClient,
  makeConfig,
  startWorkers,
  uniqueId,
  useDataDir,
} from '../../test/pipeline/helpers';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const STAGES = 5;

function times(dataDir: string, job: string): { launches: number[]; exits: number[] } {
  const log = readFileSync(path.join(dataDir, 'jobs', job, 'job.log'), 'utf8');
  const launches = [...log.matchAll(/^=== trainflow: attempt \d+ launching .* at (\S+)$/gm)].map((m) =>
    Date.parse(m[1]),
  );
  const exits = [...log.matchAll(/^=== trainflow: job exited with code \d+ at (\S+)$/gm)].map((m) =>
    Date.parse(m[1]),
  );
  return { launches, exits };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main(): Promise<void> {
  const dataDir = useDataDir();
  const client = await connectTestClient();
  const taskQueue = uniqueId('bench');
  const stages = Array.from({ length: STAGES }, (_, i) => ({
    name: `stage-${i + 1}`,
    steps: 1,
    every: 1,
    stepMs: 0,
  }));
  const config = makeConfig({ taskQueue, storagePrefix: `bench/${uniqueId('pipeline')}`, stages });
  // Production polling (not the tests' fast polls): what a user gets.
  const workers = await startWorkers(config, { pollMs: 250, statusPollMs: 2000, progressMs: 5000 });
  const transitions: number[] = [];
  const walls: number[] = [];
  try {
    // One warm-up run (workflow bundle, first connections), not measured.
    await (await startPipeline(client, config, { id: uniqueId('bench-warmup') })).result();
    for (let r = 0; r < RUNS; r++) {
      const id = uniqueId('bench');
      const handle = await startPipeline(client, config, { id });
      await handle.result();
      const d = await handle.describe();
      walls.push((d.closeTime!.getTime() - d.startTime.getTime()) / 1000);
      for (let i = 0; i + 1 < STAGES; i++) {
        const exit = times(dataDir, jobName(id, stages[i].name)).exits.at(-1)!;
        const next = times(dataDir, jobName(id, stages[i + 1].name)).launches[0];
        transitions.push((next - exit) / 1000);
      }
    }
  } finally {
    await workers.stop();
    await client.connection.close();
  }
  const result = {
    transition_median_s: Number(median(transitions).toFixed(3)),
    transition_max_s: Number(Math.max(...transitions).toFixed(3)),
    five_stage_wall_s: Number(median(walls).toFixed(3)),
    five_stage_wall_runs_s: walls.map((w) => Number(w.toFixed(3))),
    transitions_measured: transitions.length,
    target_transition_s: 1.0,
    meets_target: median(transitions) < 1.0,
    job_poll_ms: 250,
    note: 'no-op jobs = the fake job (node) with one step; wall time includes each job process start (~1 s of node+tsx start-up)',
  };
  const rows = [
    ['metric', 'value'],
    ['transition median (s)', String(result.transition_median_s)],
    ['transition max (s)', String(result.transition_max_s)],
    ['5-stage wall, median of runs (s)', String(result.five_stage_wall_s)],
    ['transitions measured', String(result.transitions_measured)],
    ['target: transition < 1 s', result.meets_target ? 'met' : 'NOT met'],
  ];
  const w = Math.max(...rows.map((r) => r[0].length));
  process.stdout.write(`${rows.map((r) => `${r[0].padEnd(w)}  ${r[1]}`).join('\n')}\n`);
  const out = path.join(repoRoot, 'bench', 'results', 'pipeline.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`wrote ${path.relative(repoRoot, out)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
