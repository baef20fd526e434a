// configs/swe-demo.yaml end to end on the real stack, sizes reduced: `trainflow run` (Temporal, MinIO), real
// jobs for all four stages — curate synthesises and checks SWE tasks from isodate's sdist (from PyPI through the
// SWE cache, as a fresh machine gets it), SFT trains on the instances' gold trajectories, RFT and RL run the
// reference agent in the sandbox on the curated tasks through the data plane, graded by the hidden tests.
// Asserted: every stage completed, the RFT and RL ledgers (shipped to S3) hold graded trajectories with every
// test's outcome, the SFT stage trained on the gold trajectories, and each training stage's checkpoint is
// committed. The tiny model is not expected to fix anything: what is checked is the pipeline, the recording
// and the grading.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { repoRoot } from '../../src/pipeline/paths';
import { BUCKET, S3_ENDPOINT, TEMPORAL_ADDRESS, uniqueId, useDataDir } from '../pipeline/helpers';
import { runToEnd } from '../pipeline/run-cli';

const PYTHON = path.join(repoRoot, '.venv/bin/python');
const TRAINER = path.join(repoRoot, 'trainer');
const STEPS: Record<string, number> = { sft: 6, rft: 1, rl: 2 };

interface Stage {
  name: string;
  kind: string;
  curate?: Record<string, unknown>;
  train?: { steps: number };
  checkpoint?: { every: number };
  rollout?: { max_new_tokens?: number };
}

/** configs/swe-demo.yaml with fewer steps and instances, its storage and queue private to this run. */
function reducedSweDemo(id: string, dataDir: string): string {
  const cfg = parse(readFileSync(path.join(repoRoot, 'configs/swe-demo.yaml'), 'utf8')) as {
    metadata: { name: string };
    storage: Record<string, unknown>;
    temporal?: Record<string, unknown>;
    pools?: Record<string, unknown>;
    defaults: { launcher?: string };
    model: { tokenizer: { path: string } };
    stages: Stage[];
  };
  cfg.metadata.name = 'ci-swe-demo';
  cfg.storage = { uri: `s3://${BUCKET}/tests/${id}`, endpoint: S3_ENDPOINT, force_path_style: true };
  cfg.temporal = { address: TEMPORAL_ADDRESS, task_queue: `q-${id}` };
  // its own launcher queue: this run's worker launches its jobs, not another test's `trainflow run`
  cfg.pools = { default: { launcher: 'local', task_queue: `q-${id}-jobs` } };
  delete cfg.defaults.launcher; // the pool names it
  cfg.model.tokenizer.path = path.join(dataDir, 'tokenizer.json');
  for (const s of cfg.stages) {
    if (s.curate) s.curate = { ...s.curate, per_package: 2, max_candidates: 8 };
    // a model trained for a few steps rarely ends its turn: shorter turns keep the rollouts short
    if (s.rollout) s.rollout.max_new_tokens = 128;
    if (s.train) {
      s.train.steps = STEPS[s.name] ?? s.train.steps;
      s.checkpoint = { every: s.train.steps };
    }
  }
  const file = path.join(dataDir, `${id}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

const s3 = new S3Client({ endpoint: S3_ENDPOINT, forcePathStyle: true, region: 'us-east-1' });

async function keys(prefix: string): Promise<string[]> {
  const out: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }),
    );
    for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key);
    token = page.NextContinuationToken;
  } while (token);
  return out;
}

async function text(key: string): Promise<string> {
  const obj = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return obj.Body!.transformToString();
}

interface Trajectory {
  task_id: string;
  reward: number;
  tests?: Record<string, string>;
  tree: Tree;
}
interface Tree {
  tokens: number[];
  children: Tree[];
}
const tokenCount = (t: Tree): number => t.tokens.length + t.children.reduce((n, c) => n + tokenCount(c), 0);

/**
 * Every trajectory of a stage's ledger as shipped to S3 (segment lines: `<checksum> <json {seq, id, record}>`;
 * a record is a group of trajectories of one task, src/rl/driver.ts).
 */
async function ledger(prefix: string): Promise<{ groups: number; trajectories: Trajectory[] }> {
  const segs = (await keys(`${prefix}/ledger/`)).filter((k) => /segment-\d{12}\.log$/.test(k));
  const trajectories: Trajectory[] = [];
  let groups = 0;
  for (const k of segs.sort()) {
    for (const line of (await text(k)).split('\n')) {
      if (line.length <= 17) continue;
      const { record } = JSON.parse(line.slice(17)) as {
        record: { kind?: string; trajectories?: Trajectory[] };
      };
      if (record.kind !== 'group') continue;
      groups += 1;
      trajectories.push(...(record.trajectories ?? []));
    }
  }
  return { groups, trajectories };
}

describe('configs/swe-demo.yaml (reduced) on the local stack', () => {
  let dataDir: string;
  beforeAll(() => {
    useDataDir();
    dataDir = mkdtempSync(path.join(tmpdir(), 'tf-ci-swe-demo-'));
    execFileSync(PYTHON, ['-m', 'trainflow_trainer.demo_data', dataDir, '--quiet'], { cwd: TRAINER });
  });

  test(
    'curate → SFT on gold trajectories → RFT → RL: all complete, ledgers hold graded trajectories with per-test outcomes',
    async () => {
      const id = uniqueId('ci-swe-demo');
      const run = await runToEnd(reducedSweDemo(id, dataDir), id);
      expect({ code: run.code, tail: run.code === 0 ? '' : run.tail }).toEqual({ code: 0, tail: '' });
      const root = `tests/${id}/${id}`;
      const manifest = JSON.parse(await text(`${root}/manifest.json`)) as {
        state: string;
        stages: Record<string, { kind: string; output_checkpoint: string; metrics: Record<string, number> }>;
      };
      expect(manifest.state).toBe('completed');
      expect(Object.keys(manifest.stages).sort()).toEqual(['curate', 'rft', 'rl', 'sft']);

      // curate: checked instances committed; SFT trained on one gold trajectory per instance
      const curate = manifest.stages.curate;
      expect(curate.metrics.valid).toBeGreaterThanOrEqual(1);
      const instances = (await text(`${root}/curate/step-000001/tasks.jsonl`)).trim().split('\n');
      expect(instances).toHaveLength(curate.metrics.valid);
      const sftLog = execFileSync(
        process.execPath,
        [path.join(repoRoot, 'bin/trainflow.js'), 'logs', id, 'sft'],
        // jest's process.env is the test's own copy: pass it, or the child reads the worker's (another data dir)
        { cwd: repoRoot, env: process.env },
      ).toString();
      expect(sftLog).toContain(`: ${instances.length} gold trajectories of ${instances.length} instances`);
      // every training stage's output is a committed checkpoint at its last step
      for (const name of ['sft', 'rft', 'rl']) {
        const step = String(STEPS[name]).padStart(6, '0');
        expect(manifest.stages[name].output_checkpoint).toMatch(new RegExp(`/${name}/step-${step}/?$`));
        const commit = JSON.parse(await text(`${root}/${name}/step-${step}/COMMIT.json`)) as {
          final: boolean;
          files: { path: string }[];
        };
        expect(commit.final).toBe(true);
        expect(commit.files.map((f) => f.path)).toContain('model.safetensors');
      }
      expect(manifest.stages.sft.metrics.loss).toBeGreaterThan(0);

      // RFT and RL: trajectories on the curated tasks, graded by the hidden tests, every test's outcome kept
      const taskIds = new Set(instances.map((l) => (JSON.parse(l) as { instance_id: string }).instance_id));
      for (const name of ['rft', 'rl']) {
        const { groups, trajectories } = await ledger(`${root}/${name}`);
        const rewards = trajectories.map((t) => t.reward.toFixed(2)).join(' ');
        process.stdout.write(`${name}: ${trajectories.length} trajectories, rewards ${rewards}\n`);
        expect(groups).toBeGreaterThanOrEqual(1);
        expect(trajectories).toHaveLength(groups * 2); // rollout.group_size
        for (const t of trajectories) {
          expect(taskIds.has(t.task_id)).toBe(true);
          expect(t.reward).toBeGreaterThanOrEqual(0);
          expect(t.reward).toBeLessThanOrEqual(1);
          expect(tokenCount(t.tree)).toBeGreaterThan(100); // the prompt alone is over a thousand
          const outcomes = Object.entries(t.tests ?? {});
          expect(outcomes.length).toBeGreaterThan(0);
          for (const [test, outcome] of outcomes) {
            expect(test).toMatch(/^tests\/.+\.py::/);
            expect(outcome).toMatch(/^[a-z_]+$/); // passed, failed, error, missing, …
          }
          // reward 1 iff every graded test passed (the swe verifier without partial credit)
          const allPassed = outcomes.every(([, o]) => o === 'passed' || o === 'xfailed');
          expect(t.reward === 1).toBe(allPassed);
        }
      }
    },
    30 * 60_000,
  );
});
