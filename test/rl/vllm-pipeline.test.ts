// RFT then RL with `rollout.inference.backend: vllm` on the local stack: `trainflow run` (Temporal, MinIO, the
// local launcher) runs both stages as real jobs; each job's data-plane driver starts a real vLLM engine (its
// own venv, `make setup-vllm`) from the vLLM launch template (trainer/trainflow_trainer/engines/vllm.py), puts
// its proxy in front, and the RL job reloads the engine's weights after each step (pause keep → reload through
// our worker extension → resume). Each job starts one engine: minutes of CPU on 2 cores, so this file runs in
// the vLLM lane of infra/dev/run-tests.sh. Token-level checks against vLLM's own answers, reloads mid-generation
// and greedy parity: trainer/tests/test_vllm_engine.py.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { jobName } from '../../src/launchers/types';
import { repoRoot } from '../../src/pipeline/paths';
import { BUCKET, S3_ENDPOINT, TEMPORAL_ADDRESS, uniqueId, useDataDir } from '../pipeline/helpers';
import { runToEnd } from '../pipeline/run-cli';

const PYTHON = path.join(repoRoot, '.venv/bin/python');
const TRAINER = path.join(repoRoot, 'trainer');
const RL_STEPS = 3;
const VLLM = { inference: { backend: 'vllm' } };

function config(id: string, demoDir: string): string {
  const cfg = {
    api_version: 'trainflow/v1',
    metadata: { name: 'vllm-pipeline' },
    storage: { uri: `s3://${BUCKET}/tests/${id}`, endpoint: S3_ENDPOINT, force_path_style: true },
    temporal: { address: TEMPORAL_ADDRESS, task_queue: `q-${id}` },
    defaults: { resources: { cpus_per_node: 2 } },
    // its own launcher queue: this run's worker launches its jobs (in this test's data dir, where the
    // assertions read their logs), not another test's `trainflow run` polling the default pool's queue
    pools: { default: { launcher: 'local', task_queue: `q-${id}-jobs` } },
    model: {
      init: { preset: 'tiny' },
      tokenizer: { path: path.join(demoDir, 'tokenizer.json') },
      dtype: 'fp32',
    },
    stages: [
      {
        name: 'rft',
        kind: 'rft',
        tasks: { family: 'demo', count: 4 },
        rollout: { group_size: 2, concurrency: 4, max_turns: 1, max_new_tokens: 8, ...VLLM },
        rft: { keep: 'passing' },
        train: { steps: 1, batch_size: 4 },
      },
      {
        name: 'rl',
        kind: 'rl',
        tasks: { family: 'demo', count: 8 },
        rollout: {
          group_size: 2,
          concurrency: 4,
          batch_groups: 2,
          max_turns: 1,
          max_new_tokens: 8,
          max_staleness: 1,
          ...VLLM,
        },
        // a random model solves nothing: keep all-equal groups so batches still form
        sampling: { strategy: 'difficulty', filter_all_equal: false },
        algorithm: { name: 'dapo', clip_low: 0.2, clip_high: 0.28, loss_agg: 'token-mean' },
        packing: { mode: 'trie', max_tokens: 2048 },
        train: { steps: RL_STEPS, lr: 1e-4 },
        checkpoint: { every: RL_STEPS },
      },
    ],
  };
  const file = path.join(demoDir, `${id}.yaml`);
  writeFileSync(file, stringify(cfg));
  return file;
}

async function s3Json<T>(key: string): Promise<T> {
  const s3 = new S3Client({ endpoint: S3_ENDPOINT, forcePathStyle: true, region: 'us-east-1' });
  const obj = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return JSON.parse(await obj.Body!.transformToString()) as T;
}

interface Tree {
  tokens: number[];
  logprobs: (number | null)[];
  versions: (number | null)[];
  children: Tree[];
}

/** (log-prob, version) of every generated token the job's ledger recorded (prompt tokens carry none). */
function ledgerTokens(workDir: string): [number, number][] {
  const dir = path.join(workDir, 'ledger');
  const out: [number, number][] = [];
  const walk = (t: Tree) => {
    t.logprobs.forEach((lp, i) => lp !== null && out.push([lp, t.versions[i]!]));
    t.children.forEach(walk);
  };
  const segments = readdirSync(dir).filter((f) => /^segment-\d{12}\.log$/.test(f));
  for (const seg of segments.sort()) {
    for (const line of readFileSync(path.join(dir, seg), 'utf8').split('\n')) {
      if (line.length <= 17) continue;
      // each line: a 17-byte checksum prefix, then the entry (trainer/trainflow_trainer/rl/ledger_check.py)
      const entry = JSON.parse(line.slice(17)) as {
        record: { kind?: string; trajectories?: { tree: Tree }[] };
      };
      if (entry.record.kind === 'group') entry.record.trajectories!.forEach((t) => walk(t.tree));
    }
  }
  return out;
}

/** The driver started its engine from the vLLM launch template and the engine that served was vLLM. */
function expectVllmFleet(workDir: string, driverSpec: string, log: string): void {
  const spec = JSON.parse(readFileSync(path.join(workDir, driverSpec), 'utf8')) as {
    upstream_engine: string;
    upstreams: string[];
    engines: { argv: string[]; env: Record<string, string> };
  };
  expect([spec.upstream_engine, spec.upstreams]).toEqual(['vllm', []]);
  const argv = spec.engines.argv;
  expect(argv).toEqual(
    expect.arrayContaining(['vllm.entrypoints.openai.api_server', '{port}', '{checkpoint}']),
  );
  expect(argv[argv.indexOf('--worker-extension-cls') + 1]).toBe('trainflow_vllm_ext.TrainflowReload');
  expect(spec.engines.env.VLLM_SERVER_DEV_MODE).toBe('1');
  expect(log).toContain('[engine 0]');
  expect(log).toContain('"GET /health HTTP/1.1" 200');
}

const count = (text: string, s: string) => text.split(s).length - 1;

describe('RFT and RL on vLLM through the pipeline', () => {
  let dataDir: string;
  let demoDir: string;
  beforeAll(() => {
    dataDir = useDataDir();
    demoDir = mkdtempSync(path.join(tmpdir(), 'tf-vllm-pipeline-'));
    execFileSync(PYTHON, ['-m', 'trainflow_trainer.demo_data', demoDir, '--quiet'], { cwd: TRAINER });
  });

  test(
    'both stages complete on the local stack, served by vLLM, tokens recorded, weights reloaded per step',
    async () => {
      const id = uniqueId('vllm');
      const run = await runToEnd(config(id, demoDir), id);
      expect({ code: run.code, tail: run.code === 0 ? '' : run.tail }).toEqual({ code: 0, tail: '' });
      const job = (stage: string) => jobName(id, stage);
      const log = (stage: string) => readFileSync(path.join(dataDir, 'jobs', job(stage), 'job.log'), 'utf8');
      const work = (stage: string) => path.join(dataDir, 'work', job(stage));

      const rftLog = log('rft');
      expect(rftLog).toContain('rft rollouts: 8 episodes');
      expectVllmFleet(work('rft'), 'driver-collect.json', rftLog);
      const rftTokens = ledgerTokens(work('rft'));
      expect(rftTokens.length).toBeGreaterThan(0);
      expect(rftTokens.every(([lp, v]) => Number.isFinite(lp) && lp <= 0 && v === 0)).toBe(true);

      const rlLog = log('rl');
      expectVllmFleet(work('rl'), 'driver-rl.json', rlLog);
      // a weight update after each step but the last: pause (keep), reload through our extension, resume
      expect(count(rlLog, '"POST /pause?mode=keep HTTP/1.1" 200')).toBeGreaterThanOrEqual(RL_STEPS - 1);
      expect(count(rlLog, '"POST /collective_rpc HTTP/1.1" 200')).toBeGreaterThanOrEqual(RL_STEPS - 1);
      const rlTokens = ledgerTokens(work('rl'));
      expect(rlTokens.length).toBeGreaterThan(0);
      expect(rlTokens.every(([lp]) => Number.isFinite(lp) && lp <= 0)).toBe(true);
      expect(new Set(rlTokens.map(([, v]) => v)).size).toBeGreaterThan(1); // later groups: reloaded weights

      const stepKey = `tests/${id}/${id}/rl/step-${String(RL_STEPS).padStart(6, '0')}`;
      const commit = await s3Json<{ final: boolean }>(`${stepKey}/COMMIT.json`);
      expect(commit.final).toBe(true);
      const state = await s3Json<{ history: { step: number }[] }>(`${stepKey}/trainer_state.json`);
      expect(state.history.map((h) => h.step)).toEqual([1, 2, 3]);
      expect(existsSync(work('rl'))).toBe(true);
    },
    40 * 60_000,
  );
});
