// THE ONE TEST DOUBLE OF THIS PROJECT'S LAUNCHER TESTS: a simulated Kubernetes API server. No API server can run
// on the test machine, so this small in-process HTTP server speaks the few endpoints the Kubernetes launcher uses,
// with the real paths, verbs and object shapes (batch/v1 Jobs, v1 ConfigMaps, Services, Pods and pod logs), and
// stands in for the Job controller and the kubelet through methods the tests call (start pods, end them with an
// exit code or a reason, write log lines). Deletion follows the API's semantics: propagationPolicy=Foreground
// keeps the Job (with a deletionTimestamp) until its pods are gone; objects owned by a deleted Job are collected.
import * as k8s from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: { uid: string }[];
    deletionTimestamp?: string;
    creationTimestamp?: string;
  };
  spec?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  status?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  data?: Record<string, string>;
};

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
}

const RESOURCES = { jobs: 'Job', configmaps: 'ConfigMap', services: 'Service', pods: 'Pod' } as const;
type Resource = keyof typeof RESOURCES;

export class SimulatedKubernetes {
  readonly objects: Record<Resource, Map<string, Obj>> = {
    jobs: new Map(),
    configmaps: new Map(),
    services: new Map(),
    pods: new Map(),
  };
  readonly requests: RecordedRequest[] = [];
  private readonly logs = new Map<string, string>();
  private readonly followers = new Map<string, Set<http.ServerResponse>>();
  /** How long pods take to terminate after a deletion (the grace period a kubelet would give). */
  podTerminationMs = 300;
  private server?: http.Server;
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        try {
          this.handle(req, res, body);
        } catch (err) {
          this.send(res, 500, status(500, String(err)));
        }
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    for (const set of this.followers.values()) for (const res of set) res.end();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }

  kubeConfig(): k8s.KubeConfig {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'sim', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'sim', token: 'simulated' }],
      contexts: [{ name: 'sim', cluster: 'sim', user: 'sim' }],
      currentContext: 'sim',
    });
    return kc;
  }

  // ---- the controller and kubelet, driven by the tests ----------------------------------------------------

  job(ns: string, name: string): Obj | undefined {
    return this.objects.jobs.get(`${ns}/${name}`);
  }

  /** Creates the Job's pods (one per completion index) as Running. */
  runPods(ns: string, jobName: string): string[] {
    const job = this.job(ns, jobName)!;
    const n: number = job.spec.completions ?? 1;
    const names: string[] = [];
    for (let i = 0; i < n; i++) {
      const name = `${jobName}-${job.spec.completionMode === 'Indexed' ? `${i}-` : ''}${randomUUID().slice(0, 5)}`;
      this.objects.pods.set(`${ns}/${name}`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace: ns,
          uid: randomUUID(),
          labels: { ...job.spec.template.metadata.labels, 'batch.kubernetes.io/job-name': jobName },
          annotations: {
            ...job.spec.template.metadata.annotations,
            'batch.kubernetes.io/job-completion-index': String(i),
          },
          ownerReferences: [{ uid: job.metadata.uid! }],
        },
        spec: job.spec.template.spec,
        status: { phase: 'Running', containerStatuses: [{ name: 'trainer', state: { running: {} } }] },
      });
      names.push(name);
    }
    job.status = { ...job.status, active: n };
    return names;
  }

  appendLog(ns: string, pod: string, text: string): void {
    const key = `${ns}/${pod}`;
    this.logs.set(key, (this.logs.get(key) ?? '') + text);
    for (const res of this.followers.get(key) ?? []) res.write(text);
  }

  /** Ends a pod: an exit code, optionally a container reason (OOMKilled), a pod reason (Evicted) or a disruption. */
  endPod(
    ns: string,
    pod: string,
    how: { exitCode: number; reason?: string; podReason?: string; disruption?: string },
  ): void {
    const p = this.objects.pods.get(`${ns}/${pod}`)!;
    const failed = how.exitCode !== 0 || how.podReason !== undefined;
    p.status = {
      phase: failed ? 'Failed' : 'Succeeded',
      ...(how.podReason ? { reason: how.podReason, message: 'The node was low on resource: memory.' } : {}),
      conditions: how.disruption
        ? [{ type: 'DisruptionTarget', status: 'True', reason: how.disruption }]
        : [],
      containerStatuses: [
        {
          name: 'trainer',
          state: {
            // Whole seconds, as the API reports them: pods that end together tie.
            terminated: {
              exitCode: how.exitCode,
              finishedAt: `${new Date().toISOString().slice(0, 19)}Z`,
              ...(how.reason ? { reason: how.reason } : {}),
            },
          },
        },
      ],
    };
    this.endFollowers(`${ns}/${pod}`);
    // The Job controller: backoffLimit 0, so one failed pod fails the Job; all succeeded completes it.
    const jobName = p.metadata.labels!['batch.kubernetes.io/job-name'];
    const job = this.job(ns, jobName)!;
    const pods = [...this.objects.pods.values()].filter(
      (x) => x.metadata.labels?.['batch.kubernetes.io/job-name'] === jobName,
    );
    const succeeded = pods.filter((x) => x.status.phase === 'Succeeded').length;
    if (failed) {
      job.status = {
        ...job.status,
        failed: 1,
        conditions: [{ type: 'Failed', status: 'True', reason: 'BackoffLimitExceeded' }],
      };
    } else if (succeeded === (job.spec.completions ?? 1)) {
      job.status = {
        ...job.status,
        succeeded,
        active: 0,
        conditions: [{ type: 'Complete', status: 'True' }],
      };
    }
  }

  /** The Job controller's deadline: the Job fails with DeadlineExceeded and its pods are killed. */
  exceedDeadline(ns: string, jobName: string): void {
    const job = this.job(ns, jobName)!;
    job.status = {
      ...job.status,
      failed: 1,
      conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded' }],
    };
    for (const [key, pod] of this.objects.pods) {
      if (pod.metadata.labels?.['batch.kubernetes.io/job-name'] === jobName) {
        pod.status = { ...pod.status, phase: 'Failed' };
        this.endFollowers(key);
      }
    }
  }

  private endFollowers(key: string): void {
    for (const res of this.followers.get(key) ?? []) res.end();
    this.followers.delete(key);
  }

  // ---- the API ----------------------------------------------------------------------------------------------

  private send(res: http.ServerResponse, code: number, body: unknown): void {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
    const url = new URL(req.url ?? '/', 'http://sim');
    const query = Object.fromEntries(url.searchParams);
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query });
    const m =
      /^\/(?:api\/v1|apis\/batch\/v1)\/namespaces\/([^/]+)\/(jobs|configmaps|services|pods)(?:\/([^/]+))?(\/log)?$/.exec(
        url.pathname,
      );
    if (!m)
      return this.send(
        res,
        404,
        status(404, `the simulated API does not serve ${req.method} ${url.pathname}`),
      );
    const [, ns, resource, name, log] = m as unknown as [
      string,
      string,
      Resource,
      string | undefined,
      string | undefined,
    ];
    const store = this.objects[resource];
    const key = `${ns}/${name}`;

    if (log) {
      if (!store.has(key)) return this.send(res, 404, status(404, `pods "${name}" not found`));
      res.writeHead(200, { 'content-type': 'text/plain' });
      const pod = store.get(key)!;
      const ended = pod.status.phase === 'Succeeded' || pod.status.phase === 'Failed';
      if (query.tailLines !== '0') res.write(this.logs.get(key) ?? '');
      if (query.follow !== 'true' || ended) return void res.end();
      const set = this.followers.get(key) ?? new Set();
      set.add(res);
      this.followers.set(key, set);
      res.on('close', () => set.delete(res));
      return;
    }

    switch (req.method) {
      case 'POST': {
        const obj = JSON.parse(body) as Obj;
        const k = `${ns}/${obj.metadata.name}`;
        if (store.has(k))
          return this.send(
            res,
            409,
            status(409, `${resource} "${obj.metadata.name}" already exists`, 'AlreadyExists'),
          );
        obj.metadata = {
          ...obj.metadata,
          namespace: ns,
          uid: randomUUID(),
          creationTimestamp: new Date().toISOString(),
        };
        if (resource === 'jobs') obj.status = {};
        store.set(k, obj);
        return this.send(res, 201, obj);
      }
      case 'GET': {
        if (name === undefined) {
          const [lk, lv] = (query.labelSelector ?? '=').split('=');
          const items = [...store.values()].filter(
            (o) => o.metadata.namespace === ns && (!lk || o.metadata.labels?.[lk] === lv),
          );
          return this.send(res, 200, {
            apiVersion: 'v1',
            kind: `${RESOURCES[resource]}List`,
            metadata: {},
            items,
          });
        }
        const obj = store.get(key);
        return obj
          ? this.send(res, 200, obj)
          : this.send(res, 404, status(404, `${resource} "${name}" not found`));
      }
      case 'PATCH': {
        const obj = store.get(key);
        if (!obj) return this.send(res, 404, status(404, `${resource} "${name}" not found`));
        if (req.headers['content-type'] !== 'application/merge-patch+json') {
          return this.send(res, 415, status(415, `unsupported patch type ${req.headers['content-type']}`));
        }
        const patch = JSON.parse(body) as Partial<Obj>;
        obj.metadata.annotations = { ...obj.metadata.annotations, ...patch.metadata?.annotations };
        return this.send(res, 200, obj);
      }
      case 'DELETE': {
        const obj = store.get(key);
        if (!obj) return this.send(res, 404, status(404, `${resource} "${name}" not found`));
        const options = body ? (JSON.parse(body) as { propagationPolicy?: string }) : {};
        const policy = query.propagationPolicy ?? options.propagationPolicy ?? 'Background';
        if (resource === 'jobs') this.deleteJob(key, obj, policy);
        else store.delete(key);
        return this.send(res, 200, obj);
      }
      default:
        return this.send(res, 405, status(405, `method ${req.method} not allowed`));
    }
  }

  private deleteJob(key: string, job: Obj, policy: string): void {
    job.metadata.deletionTimestamp = new Date().toISOString();
    const owned = (o: Obj) => o.metadata.ownerReferences?.some((r) => r.uid === job.metadata.uid);
    const pods = [...this.objects.pods.entries()].filter(([, p]) => owned(p));
    const collect = () => {
      for (const store of [this.objects.configmaps, this.objects.services]) {
        for (const [k, o] of store) if (owned(o)) store.delete(k);
      }
    };
    // Pods terminate after their grace period; Foreground keeps the Job until they are gone.
    setTimeout(() => {
      for (const [k] of pods) {
        this.objects.pods.delete(k);
        this.endFollowers(k);
      }
      if (policy === 'Foreground') {
        this.objects.jobs.delete(key);
        collect();
      }
    }, this.podTerminationMs);
    if (policy !== 'Foreground') {
      this.objects.jobs.delete(key);
      collect();
    }
  }
}

function status(code: number, message: string, reason = code === 404 ? 'NotFound' : 'Failure') {
  return { apiVersion: 'v1', kind: 'Status', status: 'Failure', message, reason, code };
}
