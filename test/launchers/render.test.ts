// What the cluster launchers submit: `trainflow render-job` on configs/kat-dev-72b.yaml gives an 8-node × 8-GPU job
// on both launchers; the Kubernetes manifests (and infra/k8s/) validate against the Kubernetes 1.31 OpenAPI schema
// (PyPI's kubernetes-validate 1.31.0, strict: unknown fields fail); the batch script is valid bash with the
// directives and torchrun line asserted; and the Slurm state → exit code mapping, torchrun wrapping and naming
// rules as tables.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { renderJob } from '../../src/cli/commands/render-job';
import { dnsName, nodeCommand, slurmTime } from '../../src/launchers/cluster';
import { classifySlurmState, parseExitCode, parseScontrolJob } from '../../src/launchers/slurm';
import { repoRoot } from '../../src/pipeline/paths';

const KAT = path.join(repoRoot, 'configs/kat-dev-72b.yaml');
const tmp = mkdtempSync(path.join(tmpdir(), 'trainflow-render-'));
let validatorPython: string;

beforeAll(() => {
  // Installs kubernetes-validate 1.31.0 into its own cached venv the first time (about a minute), then instant.
  validatorPython = execFileSync('bash', [path.join(repoRoot, 'infra/k8s/setup-validator.sh')], {
    encoding: 'utf8',
  }).trim();
}, 300_000);

/** kubernetes-validate --strict against Kubernetes 1.31: '' when valid, else its complaints. */
function k8sProblems(file: string): string {
  const cli = path.join(path.dirname(validatorPython), 'kubernetes-validate');
  const r = spawnSync(cli, ['-k', '1.31.0', '--strict', '--no-warn', file], { encoding: 'utf8' });
  return r.status === 0 ? '' : `${r.stdout}${r.stderr}`;
}

test('kat-dev-72b midtrain-1 renders to an 8-node x 8-GPU sbatch script with the torchrun environment', () => {
  const { text, pool } = renderJob(KAT, 'midtrain-1', { launcher: 'slurm', pipelineId: 'kat-20261129' });
  expect(pool).toBe('h800-slurm');
  for (const directive of [
    '#SBATCH --job-name=kat-20261129.midtrain-1',
    '#SBATCH --nodes=8',
    '#SBATCH --ntasks-per-node=1',
    '#SBATCH --gres=gpu:8',
    '#SBATCH --time=7-00:00:00',
    '#SBATCH --signal=TERM@300',
    '#SBATCH --partition=h800',
    '#SBATCH --account=coding-agents',
    '#SBATCH --qos=high',
    '#SBATCH --open-mode=append',
  ]) {
    expect(text).toContain(directive);
  }
  expect(text).toMatch(/^#!\/bin\/bash\n/);
  expect(text).toContain('nodes=( $(scontrol show hostnames "$SLURM_JOB_NODELIST") )');
  expect(text).toContain('export MASTER_ADDR="${nodes[0]}"');
  expect(text).toContain('export NPROC_PER_NODE=8');
  expect(text).toContain('export WORLD_SIZE=$((NNODES * NPROC_PER_NODE))');
  expect(text).toContain('--container-image=registry.internal/trainflow/trainer:0.1.0');
  // One torchrun per node, with the image's python (the host venv is not in the container).
  expect(text).toMatch(
    /srun --ntasks-per-node=1 --kill-on-bad-exit=1 .* bash -c 'export NODE_RANK=\$SLURM_NODEID TRAINFLOW_NODE_EXIT_FILE=\/\S+\/kat-20261129\.midtrain-1\/node-\$SLURM_NODEID\.exit; exec python -m trainflow_trainer\.torchrun --nnodes="\$NNODES" --nproc-per-node="\$NPROC_PER_NODE" --node-rank="\$NODE_RANK" --master-addr="\$MASTER_ADDR" --master-port="\$MASTER_PORT" -m trainflow_trainer\.job --spec \/\S+\/kat-20261129\.midtrain-1\/spec\.json'/,
  );
  const file = path.join(tmp, 'job.sh');
  writeFileSync(file, text);
  expect(spawnSync('bash', ['-n', file], { encoding: 'utf8' }).stderr).toBe('');
});

test('kat-dev-72b renders to an indexed 8-pod Job with 8 GPUs each, valid against the Kubernetes 1.31 schema', () => {
  const { text, pool, note } = renderJob(KAT, 'rl', { launcher: 'kubernetes', pipelineId: 'kat-20261129' });
  expect(pool).toBe('h800-k8s');
  expect(note).toMatch(/h800-slurm is not a kubernetes pool/);
  const docs = parseAllDocuments(text).map((d) => d.toJS() as { kind: string; spec: any }); // eslint-disable-line @typescript-eslint/no-explicit-any
  expect(docs.map((d) => d.kind)).toEqual(['ConfigMap', 'Service', 'Job']);
  const job = docs[2].spec;
  expect(job).toMatchObject({ completionMode: 'Indexed', completions: 8, parallelism: 8, backoffLimit: 0 });
  const pod = job.template.spec;
  expect(pod.containers[0].resources.limits).toEqual({ 'nvidia.com/gpu': '8' });
  expect(pod.nodeSelector).toEqual({ 'nvidia.com/gpu.product': 'NVIDIA-H800' });
  expect(pod.tolerations).toEqual([{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }]);
  expect(pod.serviceAccountName).toBe('trainflow-jobs');
  const env = Object.fromEntries(
    (pod.containers[0].env as { name: string; value?: string }[]).map((e) => [e.name, e]),
  );
  expect(env.WORLD_SIZE.value).toBe('64');
  expect(env.AWS_SECRET_ACCESS_KEY).toEqual({
    name: 'AWS_SECRET_ACCESS_KEY',
    valueFrom: { secretKeyRef: { name: 'trainflow-s3', key: 'AWS_SECRET_ACCESS_KEY' } },
  });
  const file = path.join(tmp, 'kat-rl.yaml');
  writeFileSync(file, text);
  expect(k8sProblems(file)).toBe('');
  // One node: a plain Job, no Service — also valid.
  const single = renderJob(path.join(repoRoot, 'configs/kat-dev-72b.yaml'), 'sft', {
    launcher: 'kubernetes',
  });
  writeFileSync(path.join(tmp, 'kat-sft.yaml'), single.text);
  expect(k8sProblems(path.join(tmp, 'kat-sft.yaml'))).toBe('');
});

test('the validator is strict: a misspelled field fails (so the checks above can fail)', () => {
  const { text } = renderJob(KAT, 'rl', { launcher: 'kubernetes' });
  const file = path.join(tmp, 'broken.yaml');
  writeFileSync(
    file,
    text.replace('restartPolicy: Never', 'restartPolicy: Never\n      restartPolicyy: Never'),
  );
  expect(k8sProblems(file)).toMatch(/restartPolicyy/);
});

test('infra/k8s manifests (workers, RBAC) are valid against the Kubernetes 1.31 schema', () => {
  for (const f of ['workers.yaml', 'rbac.yaml'])
    expect(k8sProblems(path.join(repoRoot, 'infra/k8s', f))).toBe('');
});

test('render-job errors name the stage or the launcher', () => {
  expect(() => renderJob(KAT, 'nope', {})).toThrow(
    /no stage named "nope" \(stages: midtrain-1, midtrain-2, sft, rft, rl\)/,
  );
  expect(() => renderJob(KAT, 'sft', { launcher: 'local' })).toThrow(
    /--launcher: expected slurm or kubernetes, got local/,
  );
});

test('the render-job command through the real entry point', () => {
  const out = execFileSync(
    process.execPath,
    [path.join(repoRoot, 'bin/trainflow.js'), 'render-job', KAT, 'sft'],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  expect(out).toContain('#SBATCH --nodes=8');
});

test.each([
  // state, ExitCode, recorded exit_code, cancelled by us → state, exit code, note
  ['RUNNING', '0:0', undefined, false, 'running', undefined, undefined],
  ['PENDING', '0:0', undefined, false, 'running', undefined, undefined],
  ['COMPLETING', '0:0', undefined, false, 'running', undefined, undefined],
  ['COMPLETED', '0:0', 0, false, 'exited', 0, undefined],
  ['FAILED', '2:0', 2, false, 'exited', 2, undefined],
  ['FAILED', '75:0', undefined, false, 'exited', 75, undefined],
  ['FAILED', '0:9', undefined, false, 'exited', 137, undefined],
  ['PREEMPTED', '0:15', undefined, false, 'exited', 75, /PREEMPTED/],
  ['NODE_FAIL', '0:0', undefined, false, 'exited', 75, /NODE_FAIL/],
  ['BOOT_FAIL', '0:0', undefined, false, 'exited', 75, /BOOT_FAIL/],
  ['TIMEOUT', '0:15', 75, false, 'exited', 124, /TIMEOUT.*timeout/],
  ['DEADLINE', '0:0', undefined, false, 'exited', 124, /timeout/],
  ['OUT_OF_MEMORY', '0:125', undefined, false, 'exited', 137, /OUT_OF_MEMORY.*memory_per_node/],
  ['CANCELLED', '0:15', undefined, false, 'exited', 143, /from outside trainflow/],
  ['CANCELLED by 0', '0:15', undefined, true, 'exited', 143, /by trainflow/],
  ['REVOKED', '0:0', undefined, false, 'lost', undefined, /REVOKED/],
] as const)(
  'slurm %s (ExitCode %s, recorded %s) → %s %s',
  (state, exit, recorded, ours, expected, code, note) => {
    const outcome = classifySlurmState(state, exit, recorded, ours);
    expect(outcome.state).toBe(expected);
    expect(outcome.exitCode).toBe(code);
    if (note) expect(outcome.note).toMatch(note);
    else expect(outcome.note).toBeUndefined();
  },
);

test('Slurm output parsing, time limits, torchrun wrapping and names', () => {
  expect(parseExitCode('3:0')).toBe(3);
  expect(parseExitCode('0:9')).toBe(137);
  expect(parseExitCode(undefined)).toBeUndefined();
  expect(
    parseScontrolJob('JobId=7 JobName=a.b JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15'),
  ).toMatchObject({
    JobName: 'a.b',
    JobState: 'TIMEOUT',
    ExitCode: '0:15',
  });
  expect(slurmTime(60_000)).toBe('0-00:01:00');
  expect(slurmTime(61_000)).toBe('0-00:02:00'); // Slurm counts whole minutes: round up, never cut a job short
  expect(slurmTime(7 * 24 * 3600_000)).toBe('7-00:00:00');
  const py = ['/v/bin/python', '-m', 'trainflow_trainer.job', '--spec', 'S'];
  expect(nodeCommand(py, { nodes: 1, gpusPerNode: 0 })).toEqual(py); // one CPU process: as it is
  // the trainer under trainflow's torchrun wrapper (a rank's exit code 2/75 survives torchrun), a script under torchrun
  expect(nodeCommand(py, { nodes: 1, gpusPerNode: 4 }).slice(0, 3)).toEqual([
    '/v/bin/python',
    '-m',
    'trainflow_trainer.torchrun',
  ]);
  expect(nodeCommand(['/v/bin/python', 'x.py'], { nodes: 2, gpusPerNode: 0 }).slice(0, 3)).toEqual([
    '/v/bin/python',
    '-m',
    'torch.distributed.run',
  ]);
  expect(nodeCommand(['node', 'job.js'], { nodes: 2, gpusPerNode: 8 })).toEqual(['node', 'job.js']); // not Python
  expect(dnsName('Demo_Run.midtrain-1')).toBe('demo-run-midtrain-1');
  const long = dnsName(`${'x'.repeat(70)}.sft`, 52);
  expect(long.length).toBeLessThanOrEqual(52);
  expect(long).not.toBe(dnsName(`${'x'.repeat(70)}.rl`, 52)); // cut names stay distinct
});
