// The Kubernetes launcher's watch / delete / re-attach logic, through the real @kubernetes/client-node against
// the simulated API server of k8s-sim.ts — the one double allowed in these tests, since no Kubernetes API server
// can run on this machine. (The manifests themselves are validated against the Kubernetes 1.31 OpenAPI schema in
// render.test.ts.)
import type * as k8s from '@kubernetes/client-node';
import type { PoolConfig } from '../../src/config/schema';
import { classifyKubernetesJob, KubernetesLauncher } from '../../src/launchers/kubernetes';
import type { JobLaunch } from '../../src/launchers/types';
import { SimulatedKubernetes } from './k8s-sim';

const NS = 'training';
const pool: PoolConfig = {
  launcher: 'kubernetes',
  task_queue: 'trainflow-pool-gpu',
  gpus_per_node: 8,
  gpu_type: 'H800',
  max_nodes: 16,
  kubernetes: {
    namespace: NS,
    image: 'registry.example/trainflow/trainer:1',
    node_selector: { 'nvidia.com/gpu.product': 'NVIDIA-H800' },
    tolerations: [{ key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' }],
    service_account: 'trainflow-jobs',
    s3_secret: 'trainflow-s3',
    gpu_resource: 'nvidia.com/gpu',
  },
};

let sim: SimulatedKubernetes;
beforeEach(async () => {
  sim = new SimulatedKubernetes();
  await sim.start();
});
afterEach(async () => {
  await sim.stop();
});

function launcher(): KubernetesLauncher {
  return new KubernetesLauncher({ pool, kubeConfig: sim.kubeConfig(), queryIntervalMs: 50 });
}

function launchOf(name: string, nodes: number, attempt = 1): JobLaunch {
  return {
    name,
    command: ['/opt/venv/bin/python', '-m', 'trainflow_trainer.job', '--spec', '{spec}'],
    cwd: '/work/trainer',
    env: { TRAINFLOW_LOG_LEVEL: 'info' },
    spec: {
      protocol: 1,
      stage: { name: 'sft', kind: 'sft', resources: { pool: 'gpu', nodes, gpus_per_node: 8 } },
      attempt,
    },
    attempt,
  };
}

async function collect(it: AsyncIterable<string>): Promise<string> {
  let out = '';
  for await (const chunk of it) out += chunk;
  return out;
}

test('one node: a Job with the spec in a ConfigMap it owns; watched to its exit code; released; logs of rank 0', async () => {
  const l = launcher();
  const info = await l.launch(launchOf('demo-1.sft', 1));
  expect(info).toMatchObject({ state: 'running', id: `${NS}/demo-1-sft`, attempt: 1 });
  const job = sim.job(NS, 'demo-1-sft')!;
  expect(job.spec.completionMode).toBeUndefined(); // a plain Job for one node
  expect(job.spec.backoffLimit).toBe(0);
  const cm = sim.objects.configmaps.get(`${NS}/demo-1-sft-spec`)!;
  expect(JSON.parse(cm.data!['spec.json'])).toMatchObject({ stage: { name: 'sft' } });
  expect(cm.metadata.ownerReferences?.[0].uid).toBe(job.metadata.uid);
  expect(sim.objects.services.size).toBe(0);

  const [pod] = sim.runPods(NS, 'demo-1-sft');
  sim.appendLog(NS, pod, 'step 1\n');
  const follow = collect(l.logs('demo-1.sft', { follow: true }));
  await new Promise((r) => setTimeout(r, 200));
  sim.appendLog(NS, pod, 'TRAINFLOW_STATUS {"step":2}\n');
  expect((await l.status('demo-1.sft'))?.state).toBe('running');
  sim.endPod(NS, pod, { exitCode: 0 });
  expect(await follow).toBe('step 1\nTRAINFLOW_STATUS {"step":2}\n');
  await new Promise((r) => setTimeout(r, 60)); // past the launcher's query interval
  expect(await l.status('demo-1.sft')).toMatchObject({ state: 'exited', exitCode: 0 });

  await l.release('demo-1.sft');
  expect(sim.job(NS, 'demo-1-sft')!.metadata.annotations?.['trainflow.dev/released']).toBe('true');
  expect(await l.attach('demo-1.sft')).toBeUndefined();
  expect(await collect(l.logs('demo-1.sft', { tailBytes: 8 }))).toBe('step":2}\n'.slice(-8));
});

test('several nodes: an Indexed Job and a headless Service; rank 0 is the master; NODE_RANK is the completion index', async () => {
  const l = launcher();
  await l.launch(launchOf('big.rl', 4));
  const job = sim.job(NS, 'big-rl')!;
  expect(job.spec).toMatchObject({ completionMode: 'Indexed', completions: 4, parallelism: 4 });
  const podSpec = job.spec.template.spec;
  expect(podSpec.subdomain).toBe('big-rl');
  const env = Object.fromEntries(
    (podSpec.containers[0].env as { name: string; value?: string }[]).map((e) => [e.name, e.value]),
  );
  expect(env).toMatchObject({
    MASTER_ADDR: 'big-rl-0.big-rl.training.svc',
    NNODES: '4',
    NPROC_PER_NODE: '8',
    WORLD_SIZE: '32',
  });
  expect(podSpec.containers[0].command[2]).toContain('NODE_RANK="${JOB_COMPLETION_INDEX:-0}"');
  expect(podSpec.containers[0].resources.limits['nvidia.com/gpu']).toBe('8');
  const svc = sim.objects.services.get(`${NS}/big-rl`)!;
  expect(svc.spec).toMatchObject({
    clusterIP: 'None',
    publishNotReadyAddresses: true,
    selector: { 'trainflow.dev/job': 'big-rl' },
  });
  expect(svc.metadata.ownerReferences?.[0].uid).toBe(job.metadata.uid);
});

test('re-attach: a new launcher (a retry on another worker) finds the live Job by name; a second launch is refused', async () => {
  await launcher().launch(launchOf('again.sft', 1, 3));
  sim.runPods(NS, 'again-sft');
  const fresh = launcher();
  expect(await fresh.attach('again.sft')).toMatchObject({ state: 'running', attempt: 3 });
  await expect(fresh.launch(launchOf('again.sft', 1, 4))).rejects.toThrow(/already running/);
  expect(sim.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/jobs'))).toHaveLength(1);
});

test('cancel deletes the Job with Foreground propagation and returns only once its pods and objects are gone', async () => {
  const l = launcher();
  await l.launch(launchOf('stop.rl', 2));
  sim.runPods(NS, 'stop-rl');
  const started = Date.now();
  await l.cancel('stop.rl', 2000);
  expect(Date.now() - started).toBeGreaterThanOrEqual(sim.podTerminationMs - 20);
  const del = sim.requests.find((r) => r.method === 'DELETE' && r.path.endsWith('/jobs/stop-rl'))!;
  expect(del.query.propagationPolicy).toBe('Foreground');
  expect(del.query.gracePeriodSeconds).toBe('2');
  expect(
    sim.objects.jobs.size + sim.objects.pods.size + sim.objects.configmaps.size + sim.objects.services.size,
  ).toBe(0);
  expect(await l.attach('stop.rl')).toBeUndefined();
});

test('a relaunch after release replaces the ended Job (delete, then create) with the new attempt', async () => {
  const l = launcher();
  await l.launch(launchOf('retry.sft', 1, 1));
  const [pod] = sim.runPods(NS, 'retry-sft');
  sim.endPod(NS, pod, { exitCode: 1 });
  expect(await l.attach('retry.sft')).toMatchObject({ state: 'exited', exitCode: 1 });
  await l.release('retry.sft');
  const firstUid = sim.job(NS, 'retry-sft')!.metadata.uid;
  expect(await l.launch(launchOf('retry.sft', 1, 2))).toMatchObject({ state: 'running', attempt: 2 });
  expect(sim.job(NS, 'retry-sft')!.metadata.uid).not.toBe(firstUid);
  expect(sim.objects.configmaps.get(`${NS}/retry-sft-spec`)!.metadata.ownerReferences?.[0].uid).toBe(
    sim.job(NS, 'retry-sft')!.metadata.uid,
  );
});

test.each([
  ['OOMKilled', { exitCode: 137, reason: 'OOMKilled' }, 137, /OOMKilled.*memory limit/],
  [
    'preemption (DisruptionTarget)',
    { exitCode: 143, disruption: 'PreemptionByScheduler' },
    75,
    /PreemptionByScheduler.*preemption/,
  ],
  ['node-pressure eviction', { exitCode: 137, podReason: 'Evicted' }, 75, /evicted by its node/],
  ['bad input', { exitCode: 2 }, 2, undefined],
  ['preempted trainer (exit 75)', { exitCode: 75 }, 75, undefined],
] as const)(
  'a pod ending by %s maps to its exit code (with the reason in the log)',
  async (_what, how, code, note) => {
    const l = launcher();
    await l.launch(launchOf('fail.sft', 2));
    const [rank0, rank1] = sim.runPods(NS, 'fail-sft');
    sim.endPod(NS, rank1, how);
    sim.endPod(NS, rank0, { exitCode: 143 }); // killed as a consequence, in the same second: rank 1's reason is the cause
    const info = await l.attach('fail.sft');
    expect(info).toMatchObject({ state: 'exited', exitCode: code });
    const log = await collect(l.logs('fail.sft', { tailBytes: 4096 }));
    if (note) expect(log).toMatch(note);
  },
);

test('a bad input on one node wins over the crash it caused on another node that ended first', () => {
  const pod = (rank: number, exitCode: number, finishedAt: string): k8s.V1Pod => ({
    metadata: {
      name: `p-${rank}`,
      annotations: { 'batch.kubernetes.io/job-completion-index': String(rank) },
    },
    status: {
      phase: 'Failed',
      containerStatuses: [
        {
          name: 'trainer',
          image: 'i',
          imageID: 'i',
          ready: false,
          restartCount: 0,
          state: { terminated: { exitCode, finishedAt: new Date(finishedAt) } },
        },
      ],
    },
  });
  const failed = { status: { conditions: [{ type: 'Failed', status: 'True' }] } };
  // node 1's ranks lost their peer (exit 1) a second before node 0's wrapper reported its rank's bad input
  expect(
    classifyKubernetesJob(failed, [pod(1, 1, '2026-12-01T10:00:00Z'), pod(0, 2, '2026-12-01T10:00:01Z')]),
  ).toEqual({ state: 'exited', exitCode: 2 });
  // without a bad input the earliest failure stays the cause
  expect(
    classifyKubernetesJob(failed, [pod(1, 1, '2026-12-01T10:00:00Z'), pod(0, 137, '2026-12-01T10:00:01Z')]),
  ).toEqual({ state: 'exited', exitCode: 1 });
});

test('DeadlineExceeded is a timeout (124); a Job failed with no pod left is lost', async () => {
  const l = launcher();
  await l.launch(launchOf('slow.sft', 1));
  sim.runPods(NS, 'slow-sft');
  sim.exceedDeadline(NS, 'slow-sft');
  expect(await l.attach('slow.sft')).toMatchObject({ state: 'exited', exitCode: 124 });
  expect(
    classifyKubernetesJob(
      { status: { conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }] } },
      [],
    ),
  ).toMatchObject({ state: 'lost' });
  expect(classifyKubernetesJob({ status: { active: 1 } }, [])).toEqual({ state: 'running' });
});

test('an API server that stops answering does not end a running job: it stays running (for a while)', async () => {
  const l = launcher();
  await l.launch(launchOf('steady.sft', 1));
  sim.runPods(NS, 'steady-sft');
  expect((await l.status('steady.sft'))?.state).toBe('running');
  await sim.stop();
  await new Promise((r) => setTimeout(r, 100)); // past the query interval: the launcher asks, and gets no answer
  expect((await l.status('steady.sft'))?.state).toBe('running');
  // A job it never saw running is not invented: the error comes through.
  await expect(launcher().status('steady.sft')).rejects.toThrow();
});
