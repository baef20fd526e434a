// The demo pipeline in a reduced form (fewer mid-train and RFT steps, fewer tasks; RL as long as the demo's),
// end to end on the real stack — the CLI's `trainflow run`, Temporal, MinIO, the trainer, the data plane, the
// inference server, the sandboxed agent — on two seeds. Its eval stages (before and after RL) run on fewer tasks.
// The two runs must show RL working: the RL stage's mean reward over its last tenth of steps exceeds its first
// tenth (trainflow_trainer.rl.evidence, the check `make demo` prints per run) by at least three standard errors
// combined over the seeds (Stouffer), and in neither run does it fall by three. Combined, not per seed: a
// 30-step run whose starting policy solves almost nothing can fail to take off with nothing broken (seen once
// in CI); a collapse still fails the test.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { repoRoot } from '../../src/pipeline/paths';
import { BUCKET, S3_ENDPOINT, TEMPORAL_ADDRESS, uniqueId, useDataDir } from '../pipeline/helpers';
import { runToEnd } from '../pipeline/run-cli';

const PYTHON = path.join(repoRoot, '.venv/bin/python');
const TRAINER = path.join(repoRoot, 'trainer');
const RL_STEPS = 30;

interface Stage {
  name: string;
  kind: string;
  data?: { sources: { path: string }[] };
  train?: { steps: number; seed?: number };
  checkpoint?: { every: number };
  tasks?: { count?: number; seed?: number };
  gates?: unknown[];
}

/** configs/demo.yaml with fewer steps, its data from `dataDir`, its storage and queue private to this run. */
function reducedDemo(id: string, seed: number, dataDir: string): string {
  const cfg = parse(readFileSync(path.join(repoRoot, 'configs/demo.yaml'), 'utf8')) as {
    metadata: { name: string };
    storage: Record<string, unknown>;
    defaults: { launcher?: string; resources?: Record<string, unknown> };
    temporal?: Record<string, unknown>;
    pools?: Record<string, unknown>;
    model: { init: { preset: string }; tokenizer: { path: string } };
    stages: Stage[];
  };
  cfg.metadata.name = `ci-demo-${seed}`;
  cfg.storage = { uri: `s3://${BUCKET}/tests/${id}`, endpoint: S3_ENDPOINT, force_path_style: true };
  cfg.temporal = { address: TEMPORAL_ADDRESS, task_queue: `q-${id}` };
  // its own launcher queue: this run's worker launches its jobs, not another test's `trainflow run`
  cfg.pools = { default: { launcher: 'local', task_queue: `q-${id}-jobs` } };
  delete cfg.defaults.launcher; // the pool names it
  // The seed reaches the weights through train.seed below (model.init.seed was never read, and is refused).
  // Two pipelines side by side on CI's 2 cores: one CPU thread per job, or PyTorch's per-core threads fight.
  cfg.defaults.resources = { ...cfg.defaults.resources, cpus_per_node: 1 };
  cfg.model.tokenizer.path = path.join(dataDir, 'tokenizer.json');
  const steps: Record<string, number> = {
    'midtrain-1': 100,
    'midtrain-2': 10,
    sft: 60,
    rft: 4,
    rl: RL_STEPS,
  };
  for (const s of cfg.stages) {
    for (const src of s.data?.sources ?? []) src.path = path.join(dataDir, path.basename(src.path));
    delete s.gates;
    if (!s.train) {
      // an eval stage: one task per difficulty level, held out from the training tasks' seed
      if (s.tasks) s.tasks = { ...s.tasks, seed: seed + 100, count: 5 };
      continue;
    }
    s.train.steps = steps[s.name] ?? s.train.steps;
    s.train.seed = 1000 + seed;
    s.checkpoint = { every: s.train.steps };
    if (s.tasks) s.tasks = { ...s.tasks, seed, count: s.kind === 'rft' ? 16 : 32 };
  }
  const file = path.join(dataDir, `${id}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

async function rlHistoryFile(id: string, dir: string): Promise<string> {
  const s3 = new S3Client({ endpoint: S3_ENDPOINT, forcePathStyle: true, region: 'us-east-1' });
  const key = `tests/${id}/${id}/rl/step-${String(RL_STEPS).padStart(6, '0')}/trainer_state.json`;
  const obj = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  const file = path.join(dir, `${id}-rl-state.json`);
  writeFileSync(file, await obj.Body!.transformToString());
  return file;
}

interface RunEvidence {
  first: number;
  last: number;
  se: number;
  z: number;
  passed: boolean;
  rewards: number[];
}

interface Evidence {
  z: number;
  passed: boolean;
  runs: RunEvidence[];
}

function evidence(stateFiles: string[]): Evidence {
  let out: string;
  try {
    out = execFileSync(PYTHON, ['-m', 'trainflow_trainer.rl.evidence', ...stateFiles], {
      cwd: TRAINER,
    }).toString();
  } catch (err) {
    out = String((err as { stdout?: Buffer }).stdout ?? ''); // exit 1: no rise; the JSON says by how much
  }
  return JSON.parse(out) as Evidence;
}

describe('the demo pipeline (reduced) raises the RL reward on two seeds', () => {
  let dataDir: string;
  beforeAll(() => {
    useDataDir();
    dataDir = mkdtempSync(path.join(tmpdir(), 'tf-ci-demo-'));
    execFileSync(PYTHON, ['-m', 'trainflow_trainer.demo_data', dataDir, '--quiet'], { cwd: TRAINER });
  });

  // The two seeds run side by side (as two users would): each pipeline's processes leave the cores idle
  // while they wait on each other (rollouts ↔ training), so together they take less than one after the other.
  test(
    'seeds 1 and 2: all seven stages complete and reward(last tenth) − reward(first tenth) ≥ 3 SE combined',
    async () => {
      const seeds = [1, 2];
      const ids = seeds.map((seed) => uniqueId(`ci-demo-${seed}`));
      const runs = await Promise.all(
        seeds.map((seed, i) => runToEnd(reducedDemo(ids[i], seed, dataDir), ids[i])),
      );
      for (const run of runs)
        expect({ code: run.code, tail: run.code === 0 ? '' : run.tail }).toEqual({ code: 0, tail: '' });
      const ev = evidence(await Promise.all(ids.map((id) => rlHistoryFile(id, dataDir))));
      for (const [i, run] of ev.runs.entries())
        process.stdout.write(
          `seed ${seeds[i]}: RL reward ${run.first.toFixed(3)} → ${run.last.toFixed(3)} (z ${run.z.toFixed(1)}); ` +
            `per step ${run.rewards.map((r) => r.toFixed(2)).join(' ')}\n`,
        );
      process.stdout.write(`combined z ${ev.z.toFixed(1)} over seeds ${seeds.join(', ')}\n`);
      expect(ev.runs.map((r) => r.rewards.length)).toEqual(seeds.map(() => RL_STEPS));
      // the z of each seed rides along, so a failure's diff shows them
      const seen = ev.runs.map((r, i) => `seed ${seeds[i]}: z ${r.z.toFixed(1)}`).join(', ');
      const fell = ev.runs.filter((r) => r.z <= -3).length;
      expect({ seen, combined: ev.z >= 3, fell, passed: ev.passed }).toEqual({
        seen,
        combined: true,
        fell: 0,
        passed: true,
      });
    },
    45 * 60_000,
  );
});
