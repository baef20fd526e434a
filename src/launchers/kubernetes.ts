// The `kubernetes` launcher: one batch/v1 Job per stage job, through @kubernetes/client-node 0.22 (the last
// CommonJS line: 1.x is ESM-only and does not load under this project's CommonJS/jest set-up).
//
// What it creates (all named after the job, DNS-safe; `trainflow render-job --launcher kubernetes` prints them):
//   Job        1 node: a plain Job; N nodes: an Indexed Job (completions = parallelism = N) whose pod i is node
//              rank i (NODE_RANK = JOB_COMPLETION_INDEX), each pod one torchrun with one process per GPU;
//              backoffLimit 0: retries belong to the Temporal activity, which resumes from the last checkpoint.
//   Service    N nodes: headless, so pod 0 is reachable as `<job>-0.<service>` (MASTER_ADDR).
//   ConfigMap  the job spec (`spec.json`, mounted at /etc/trainflow).
// The ConfigMap and Service are owned by the Job, so deleting the Job (propagation Foreground) removes everything.
// S3 credentials come from the pool's Secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY keys).
//
// Watching: the launcher reads the Job (at most every `queryIntervalMs`) and, once it has ended, its pods, and
// maps how they ended to the job protocol's exit codes, appending the reason to what `logs` returns last:
//   Complete → 0; a container's exit code otherwise (2 bad input, 75 preempted, ...)
//   DisruptionTarget (preemption, API eviction, taint manager), Evicted (node pressure) → 75 (retried as preemption)
//   OOMKilled → 137 (failure naming the memory limit)     DeadlineExceeded → 124 (timeout, retried)
// Re-attach: a retry finds the Job by name; `release` marks it released (its pods and logs stay until the Job's
// TTL), and the next launch deletes a released or ended Job of that name before creating a new one.
import * as k8s from '@kubernetes/client-node';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolConfig } from '../config/schema';
import { UserError } from '../errors';
import {
  dnsName,
  jobShape,
  MASTER_PORT,
  nodeCommand,
  procsPerNode,
  shellWord,
  type JobShape,
  cachedStatus,
  type StatusCache,
} from './cluster';
import type { JobInfo, JobLaunch, Launcher, LogOptions } from './types';

export const SPEC_DIR = '/etc/trainflow';
const EXIT_BAD_INPUT = 2;
const EXIT_PREEMPTED = 75;
const EXIT_TIMEOUT = 124;
const EXIT_OOM = 137;
const LABEL_JOB = 'trainflow.dev/job';
const ANNOTATION_NAME = 'trainflow.dev/job-name';
const ANNOTATION_ATTEMPT = 'trainflow.dev/attempt';
const ANNOTATION_STARTED = 'trainflow.dev/started-at';
const ANNOTATION_RELEASED = 'trainflow.dev/released';
const CONTAINER = 'trainer';

type KubernetesPool = NonNullable<PoolConfig['kubernetes']>;

export interface KubernetesManifestInput {
  name: string;
  argv: string[];
  env: Record<string, string>;
  spec: unknown;
  attempt: number;
  shape: JobShape;
  pool?: PoolConfig;
  /** Pool name, for error messages. */
  poolName?: string;
}

export interface KubernetesManifests {
  configMap: k8s.V1ConfigMap;
  service?: k8s.V1Service;
  job: k8s.V1Job;
}

function settings(pool: PoolConfig | undefined): KubernetesPool {
  return (
    pool?.kubernetes ?? {
      namespace: 'default',
      node_selector: {},
      tolerations: [],
      s3_secret: 'trainflow-s3',
      gpu_resource: 'nvidia.com/gpu',
    }
  );
}

/** The objects of one job: ConfigMap (spec), headless Service (multi-node) and the Job. */
export function renderKubernetesManifests(input: KubernetesManifestInput): KubernetesManifests {
  const kube = settings(input.pool);
  const { shape } = input;
  if (!kube.image) {
    throw new UserError(
      `pools.${input.poolName ?? '<name>'}.kubernetes.image is not set: the Kubernetes launcher needs the trainer's container image`,
    );
  }
  const name = dnsName(input.name, 52); // Job pods get a suffix: leave room for it within 63 characters
  const namespace = kube.namespace;
  const multi = shape.nodes > 1;
  const labels = { 'app.kubernetes.io/managed-by': 'trainflow', [LABEL_JOB]: name };
  const annotations = {
    [ANNOTATION_NAME]: input.name,
    [ANNOTATION_ATTEMPT]: String(input.attempt),
    [ANNOTATION_STARTED]: new Date().toISOString(),
  };

  // In the image the host's virtualenv is not there: its own python runs the same module.
  let argv = nodeCommand(input.argv, shape);
  if (/^\/.*\/python[0-9.]*$/.test(argv[0] ?? '')) argv = ['python', ...argv.slice(1)];
  const nodeLine = `export NODE_RANK="\${JOB_COMPLETION_INDEX:-0}"; exec ${argv.map(shellWord).join(' ')}`;

  const resources: Record<string, string> = {};
  if (shape.gpusPerNode > 0) resources[kube.gpu_resource] = String(shape.gpusPerNode);
  if (shape.cpusPerNode) resources.cpu = String(shape.cpusPerNode);
  if (shape.memoryPerNode) resources.memory = `${Math.ceil(shape.memoryPerNode / 2 ** 20)}Mi`;

  const env: k8s.V1EnvVar[] = [
    { name: 'MASTER_ADDR', value: multi ? `${name}-0.${name}.${namespace}.svc` : '127.0.0.1' },
    { name: 'MASTER_PORT', value: String(MASTER_PORT) },
    { name: 'NNODES', value: String(shape.nodes) },
    { name: 'NPROC_PER_NODE', value: String(procsPerNode(shape)) },
    { name: 'WORLD_SIZE', value: String(shape.nodes * procsPerNode(shape)) },
    { name: 'TRAINFLOW_JOB_NAME', value: input.name },
    ...['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'].map((key) => ({
      name: key,
      valueFrom: { secretKeyRef: { name: kube.s3_secret, key } },
    })),
    ...Object.entries(input.env).map(([k, v]) => ({ name: k, value: v })),
  ];

  const configMap: k8s.V1ConfigMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: `${name}-spec`, namespace, labels, annotations },
    data: { 'spec.json': `${JSON.stringify(input.spec, null, 2)}\n` },
  };
  const service: k8s.V1Service | undefined = multi
    ? {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name, namespace, labels, annotations },
        spec: {
          clusterIP: 'None',
          selector: { [LABEL_JOB]: name },
          // Rank 0 must be resolvable before its readiness: the other ranks connect while it starts.
          publishNotReadyAddresses: true,
          ports: [{ name: 'rendezvous', port: MASTER_PORT, targetPort: MASTER_PORT }],
        },
      }
    : undefined;
  const job: k8s.V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, namespace, labels, annotations },
    spec: {
      backoffLimit: 0,
      ...(multi ? { completionMode: 'Indexed', completions: shape.nodes, parallelism: shape.nodes } : {}),
      // A safety net for released jobs; an ended job is normally released by the activity right away.
      ttlSecondsAfterFinished: 7 * 24 * 3600,
      template: {
        metadata: { labels, annotations },
        spec: {
          restartPolicy: 'Never',
          ...(multi ? { subdomain: name } : {}),
          ...(kube.service_account ? { serviceAccountName: kube.service_account } : {}),
          ...(Object.keys(kube.node_selector).length ? { nodeSelector: kube.node_selector } : {}),
          ...(kube.tolerations.length ? { tolerations: kube.tolerations } : {}),
          // Time for the trainer to save a checkpoint after SIGTERM (preemption, cancel) before SIGKILL.
          terminationGracePeriodSeconds: 300,
          containers: [
            {
              name: CONTAINER,
              image: kube.image,
              command: ['/bin/bash', '-c', nodeLine],
              env,
              ...(Object.keys(resources).length
                ? { resources: { requests: resources, limits: resources } }
                : {}),
              ports: [{ name: 'rendezvous', containerPort: MASTER_PORT }],
              volumeMounts: [
                { name: 'spec', mountPath: SPEC_DIR, readOnly: true },
                { name: 'dshm', mountPath: '/dev/shm' }, // NCCL and dataloader workers need more than 64 MiB
              ],
            },
          ],
          volumes: [
            { name: 'spec', configMap: { name: `${name}-spec` } },
            { name: 'dshm', emptyDir: { medium: 'Memory' } },
          ],
        },
      },
    },
  };
  return { configMap, service, job };
}

/** How a finished Job's pods ended, in the job protocol's terms. */
export interface KubernetesOutcome {
  state: JobInfo['state'];
  exitCode?: number;
  note?: string;
}

function condition(
  conditions: { type: string; status: string; reason?: string; message?: string }[] | undefined,
  type: string,
) {
  return conditions?.find((c) => c.type === type && c.status === 'True');
}

/** Maps a Job and its pods to the launcher's state: running, or exited with an exit code and the reason why. */
export function classifyKubernetesJob(job: k8s.V1Job, pods: k8s.V1Pod[]): KubernetesOutcome {
  const conditions = job.status?.conditions;
  if (condition(conditions, 'Complete')) return { state: 'exited', exitCode: 0 };
  const failedPods = pods.filter((p) => p.status?.phase === 'Failed');
  const failed = condition(conditions, 'Failed');
  if (!failed && failedPods.length === 0) return { state: 'running' };
  if (failed?.reason === 'DeadlineExceeded') {
    return {
      state: 'exited',
      exitCode: EXIT_TIMEOUT,
      note: 'DeadlineExceeded: the Job ran past its activeDeadlineSeconds (timeout; retried)',
    };
  }
  // The cause is the pod that failed first (the others are mostly killed as a consequence): a disruption, an
  // eviction or an OOM kill anywhere names the cause; otherwise the earliest exit code, preferring a process that
  // exited by itself (< 128) over one killed by a signal at the same moment, then the lower rank.
  const finished = (p: k8s.V1Pod) => {
    const at = terminatedOf(p)?.finishedAt;
    return at ? new Date(at).getTime() : Number.MAX_SAFE_INTEGER;
  };
  const sorted = [...failedPods].sort(
    (a, b) =>
      finished(a) - finished(b) ||
      Number((terminatedOf(a)?.exitCode ?? 0) >= 128) - Number((terminatedOf(b)?.exitCode ?? 0) >= 128) ||
      podRank(a) - podRank(b),
  );
  // A bad input on any node (its torchrun wrapper exited 2, trainflow_trainer/torchrun.py) is the cause whatever
  // ended first: the other nodes' ranks die of it (a broken collective) and may end sooner; a retry meets it again.
  const bad = sorted.find((p) => terminatedOf(p)?.exitCode === EXIT_BAD_INPUT);
  if (bad) return { state: 'exited', exitCode: EXIT_BAD_INPUT };
  for (const pod of sorted) {
    const podName = pod.metadata?.name ?? '?';
    const disruption = condition(pod.status?.conditions, 'DisruptionTarget');
    if (disruption) {
      return {
        state: 'exited',
        exitCode: EXIT_PREEMPTED,
        note: `pod ${podName} was disrupted (${disruption.reason ?? 'DisruptionTarget'}: preemption or eviction; retried as a preemption)`,
      };
    }
    if (pod.status?.reason === 'Evicted') {
      return {
        state: 'exited',
        exitCode: EXIT_PREEMPTED,
        note: `pod ${podName} was evicted by its node (${pod.status.message ?? 'node pressure'}; retried as a preemption)`,
      };
    }
    if (terminatedOf(pod)?.reason === 'OOMKilled') {
      return {
        state: 'exited',
        exitCode: EXIT_OOM,
        note: `pod ${podName} was OOMKilled: the trainer went over its memory limit; lower micro_batch_size or seq_len, or raise resources.memory_per_node`,
      };
    }
  }
  const first = sorted.find((p) => (terminatedOf(p)?.exitCode ?? 0) !== 0);
  if (first) return { state: 'exited', exitCode: terminatedOf(first)!.exitCode };
  if (failed) {
    // Failed without a pod that tells why (pods deleted from outside, or gone with their node).
    return {
      state: 'lost',
      note: `the Job failed (${failed.reason ?? 'no reason'}: ${failed.message ?? ''}) and no pod says how`,
    };
  }
  return { state: 'running' }; // a pod failed; the Job's Failed condition follows
}

function terminatedOf(pod: k8s.V1Pod): k8s.V1ContainerStateTerminated | undefined {
  return pod.status?.containerStatuses?.find((c) => c.name === CONTAINER)?.state?.terminated;
}

function podRank(pod: k8s.V1Pod): number {
  const index = pod.metadata?.annotations?.['batch.kubernetes.io/job-completion-index'];
  return index === undefined ? 0 : Number(index);
}

function isNotFound(err: unknown): boolean {
  return (err as { statusCode?: number }).statusCode === 404;
}

export interface KubernetesLauncherOptions {
  pool?: PoolConfig;
  poolName?: string;
  /** Default: the kubeconfig of the environment (in-cluster service account, KUBECONFIG or ~/.kube/config). */
  kubeConfig?: k8s.KubeConfig;
  /** Least time between two reads of a running Job. */
  queryIntervalMs?: number;
}

export class KubernetesLauncher implements Launcher {
  readonly kind = 'kubernetes';
  readonly namespace: string;
  private readonly pool?: PoolConfig;
  private readonly poolName?: string;
  private readonly kc: k8s.KubeConfig;
  private readonly batch: k8s.BatchV1Api;
  private readonly core: k8s.CoreV1Api;
  private readonly queryIntervalMs: number;
  private readonly cache: StatusCache = new Map();
  /** Reasons already appended to a job's log stream, so `logs` ends with why the job ended. */
  private readonly notes = new Map<string, string>();

  constructor(options: KubernetesLauncherOptions = {}) {
    this.pool = options.pool;
    this.poolName = options.poolName;
    this.namespace = settings(options.pool).namespace;
    this.kc = options.kubeConfig ?? defaultKubeConfig();
    this.batch = this.kc.makeApiClient(k8s.BatchV1Api);
    this.core = this.kc.makeApiClient(k8s.CoreV1Api);
    this.queryIntervalMs = options.queryIntervalMs ?? 5000;
  }

  objectName(name: string): string {
    return dnsName(name, 52);
  }

  render(job: JobLaunch): KubernetesManifests {
    return renderKubernetesManifests({
      name: job.name,
      argv: job.command.map((a) => a.replaceAll('{spec}', `${SPEC_DIR}/spec.json`)),
      env: job.env,
      spec: job.spec,
      attempt: job.attempt,
      shape: jobShape(job.spec, this.pool),
      pool: this.pool,
      poolName: this.poolName,
    });
  }

  private async readJob(name: string): Promise<k8s.V1Job | undefined> {
    try {
      return (await this.batch.readNamespacedJob(this.objectName(name), this.namespace)).body;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async pods(name: string): Promise<k8s.V1Pod[]> {
    const res = await this.core.listNamespacedPod(
      this.namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      `${LABEL_JOB}=${this.objectName(name)}`,
    );
    return res.body.items;
  }

  private async info(name: string, job: k8s.V1Job): Promise<JobInfo> {
    const a = job.metadata?.annotations ?? {};
    const base = {
      name,
      id: `${this.namespace}/${job.metadata?.name ?? this.objectName(name)}`,
      attempt: Number(a[ANNOTATION_ATTEMPT] ?? 0),
      startedAt: a[ANNOTATION_STARTED] ?? job.metadata?.creationTimestamp?.toString() ?? '',
    };
    const conditions = job.status?.conditions;
    const ended =
      condition(conditions, 'Complete') ??
      condition(conditions, 'Failed') ??
      ((job.status?.failed ?? 0) > 0 ? true : undefined);
    if (!ended) return { ...base, state: 'running' };
    const outcome = classifyKubernetesJob(job, await this.pods(name));
    if (outcome.note) this.notes.set(name, outcome.note);
    return outcome.state === 'exited'
      ? { ...base, state: 'exited', exitCode: outcome.exitCode }
      : { ...base, state: outcome.state };
  }

  async launch(job: JobLaunch): Promise<JobInfo> {
    const existing = await this.readJob(job.name);
    if (existing) {
      const info = existing.metadata?.annotations?.[ANNOTATION_RELEASED]
        ? undefined
        : await this.info(job.name, existing);
      if (info?.state === 'running') {
        throw new Error(
          `job ${job.name} is already running (Job ${info.id}); attach to it or cancel it first`,
        );
      }
      await this.deleteAndWait(job.name, 0); // an ended or released Job of that name: make room
    }
    const { configMap, service, job: manifest } = this.render(job);
    const created = (await this.batch.createNamespacedJob(this.namespace, manifest)).body;
    // Owned by the Job: deleting the Job removes them too.
    const owner: k8s.V1OwnerReference = {
      apiVersion: 'batch/v1',
      kind: 'Job',
      name: created.metadata!.name!,
      uid: created.metadata!.uid!,
      controller: false,
      blockOwnerDeletion: true,
    };
    for (const object of [configMap, service]) {
      if (!object) continue;
      object.metadata = { ...object.metadata, ownerReferences: [owner] };
    }
    await this.createReplacing('configmap', configMap);
    if (service) await this.createReplacing('service', service);
    this.cache.delete(job.name);
    this.notes.delete(job.name);
    return await this.info(job.name, created);
  }

  /** Creates a ConfigMap/Service, replacing a leftover of that name (owned by a Job deleted while it was orphaned). */
  private async createReplacing(
    kind: 'configmap' | 'service',
    object: k8s.V1ConfigMap | k8s.V1Service,
  ): Promise<void> {
    const name = object.metadata!.name!;
    const create = () =>
      kind === 'configmap'
        ? this.core.createNamespacedConfigMap(this.namespace, object)
        : this.core.createNamespacedService(this.namespace, object);
    try {
      await create();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 409) throw err;
      if (kind === 'configmap') await this.core.deleteNamespacedConfigMap(name, this.namespace);
      else await this.core.deleteNamespacedService(name, this.namespace);
      await create();
    }
  }

  async attach(name: string): Promise<JobInfo | undefined> {
    const job = await this.readJob(name);
    const info =
      job && !job.metadata?.annotations?.[ANNOTATION_RELEASED] ? await this.info(name, job) : undefined;
    this.cache.set(name, { at: Date.now(), info });
    return info;
  }

  status(name: string): Promise<JobInfo | undefined> {
    return cachedStatus(this.cache, name, this.queryIntervalMs, (n) => this.attach(n));
  }

  async cancel(name: string, graceMs: number): Promise<void> {
    this.cache.delete(name);
    await this.deleteAndWait(name, graceMs);
  }

  /** Deletes the Job with Foreground propagation (pods first, then the Job) and waits until it is gone. */
  private async deleteAndWait(name: string, graceMs: number): Promise<void> {
    const objectName = this.objectName(name);
    try {
      await this.batch.deleteNamespacedJob(
        objectName,
        this.namespace,
        undefined,
        undefined,
        Math.ceil(graceMs / 1000),
        undefined,
        'Foreground',
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const deadline = Date.now() + graceMs + 120_000;
    while (await this.readJob(name)) {
      if (Date.now() > deadline)
        throw new Error(
          `Job ${this.namespace}/${objectName} still exists ${Math.round((graceMs + 120_000) / 1000)} s after its deletion`,
        );
      await sleep(Math.min(1000, this.queryIntervalMs));
    }
  }

  async release(name: string): Promise<void> {
    this.cache.delete(name);
    this.notes.delete(name);
    try {
      await this.batch.patchNamespacedJob(
        this.objectName(name),
        this.namespace,
        { metadata: { annotations: { [ANNOTATION_RELEASED]: 'true' } } },
        undefined,
        undefined,
        undefined,
        undefined,
        undefined,
        { headers: { 'Content-Type': 'application/merge-patch+json' } },
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** The log of rank 0's pod (it prints the status lines), then why the job ended when the launcher knows. */
  async *logs(name: string, options: LogOptions = {}): AsyncIterable<string> {
    const pod = await this.waitForRankZero(name, options);
    if (pod) {
      if (options.follow) yield* this.followLog(pod, options);
      else {
        const res = await this.core.readNamespacedPodLog(pod, this.namespace, CONTAINER);
        const text = typeof res.body === 'string' ? res.body : String(res.body ?? '');
        yield options.tailBytes !== undefined ? text.slice(-options.tailBytes) : text;
      }
    }
    const note = this.notes.get(name);
    if (note) yield `trainflow: kubernetes job ${this.namespace}/${this.objectName(name)}: ${note}\n`;
  }

  private async waitForRankZero(name: string, options: LogOptions): Promise<string | undefined> {
    for (;;) {
      const pods = await this.pods(name);
      const started = pods
        .filter((p) => p.status?.phase && p.status.phase !== 'Pending')
        .sort((a, b) => podRank(a) - podRank(b));
      if (started[0] && podRank(started[0]) === 0) return started[0].metadata?.name;
      if (!options.follow || options.signal?.aborted || (await this.status(name))?.state !== 'running')
        return undefined;
      await sleep(Math.min(1000, this.queryIntervalMs));
    }
  }

  private async *followLog(pod: string, options: LogOptions): AsyncIterable<string> {
    const stream = new PassThrough();
    const ended = new Promise<void>((resolve) => stream.on('end', resolve).on('close', resolve));
    const done = () => {
      if (!stream.writableEnded) stream.end();
    };
    // tailBytes 0 (only what comes next): no past lines. Otherwise the whole log, then what comes.
    // (The `request` library's Request, whose types this project does not install: only abort() is used.)
    const request = (await new k8s.Log(this.kc).log(this.namespace, pod, CONTAINER, stream, done, {
      follow: true,
      ...(options.tailBytes === 0 ? { tailLines: 0 } : {}),
    })) as unknown as { abort(): void };
    const abort = () => {
      request.abort();
      done();
    };
    options.signal?.addEventListener('abort', abort, { once: true });
    try {
      for await (const chunk of stream) yield (chunk as Buffer).toString('utf8');
      await ended;
    } finally {
      options.signal?.removeEventListener('abort', abort);
      request.abort();
    }
  }
}

function defaultKubeConfig(): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  return kc;
}
