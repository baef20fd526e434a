// What a pipeline report shows, read from storage (S3 or a local folder), never from Temporal: the pipeline
// manifest (stages, their output checkpoints, completion times), each stage's status object, and the
// trainer_state.json of its latest checkpoint, which holds the per-step curves (midtrain/sft: loss_history;
// rl: history[].metrics with reward, pass rate, loss, throughput, turns, parallel tool calls).
import { readFileSync } from 'node:fs';
import { ObjectStore, joinUri, type StorageEndpoint } from '../storage/s3';
import { manifestUri, type PipelineManifest } from '../storage/manifest';
import { UserError } from '../errors';

export interface StageReport {
  name: string;
  kind: string;
  state: string;
  /** Attempts of the stage's job so far (the status object's attempt; 1 when it never retried). */
  attempt: number | null;
  step: number;
  totalSteps: number | null;
  checkpoint: string | null;
  startedAt: string | null;
  completedAt: string | null;
  metrics: Record<string, number>;
  /** metric name → (step, value) points */
  curves: Record<string, [number, number][]>;
}

export interface PipelineReport {
  pipelineId: string;
  name: string;
  state: string;
  createdAt: string;
  stages: StageReport[];
}

interface StatusObject {
  state?: string;
  step?: number;
  total_steps?: number;
  attempt?: number;
  metrics?: Record<string, number>;
  last_checkpoint?: string | null;
  updated_at?: string;
}

interface TrainerState {
  loss_history?: number[];
  history?: { step: number; time?: number; metrics?: Record<string, number> }[];
  metrics?: Record<string, number>;
}

/** Reads JSON from s3:// or a local path; undefined when absent. */
export class JsonReader {
  private readonly s3: ObjectStore;
  constructor(endpoint: StorageEndpoint) {
    this.s3 = new ObjectStore(endpoint);
  }

  async get<T>(uri: string): Promise<T | undefined> {
    if (uri.startsWith('s3://')) return this.s3.getJson<T>(uri);
    try {
      return JSON.parse(readFileSync(uri.replace(/^file:\/\//, ''), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
}

export async function collectReport(
  reader: JsonReader,
  storageUri: string,
  pipelineId: string,
): Promise<PipelineReport> {
  const manifest = await reader.get<PipelineManifest>(manifestUri(storageUri, pipelineId));
  if (!manifest)
    throw new UserError(
      `no pipeline ${pipelineId} under ${storageUri} (looked for ${manifestUri(storageUri, pipelineId)})`,
    );
  const config = manifest.config as { stages?: { name: string; kind: string }[] } | undefined;
  const order = config?.stages?.map((s) => ({ name: s.name, kind: s.kind })) ?? [];
  for (const [name, s] of Object.entries(manifest.stages))
    if (!order.some((o) => o.name === name)) order.push({ name, kind: s.kind });

  const stages: StageReport[] = [];
  let previousEnd: string | null = manifest.created_at;
  for (const { name, kind } of order) {
    const done = manifest.stages[name];
    const prefix = joinUri(storageUri, pipelineId, name);
    const status = await reader.get<StatusObject>(joinUri(prefix, 'status.json'));
    const checkpoint = done?.output_checkpoint ?? status?.last_checkpoint ?? null;
    const state = checkpoint
      ? await reader.get<TrainerState>(joinUri(checkpoint, 'trainer_state.json'))
      : undefined;
    const curves: Record<string, [number, number][]> = {};
    state?.loss_history?.forEach((l, i) => (curves.loss ??= []).push([i + 1, l]));
    for (const h of state?.history ?? [])
      for (const [k, v] of Object.entries(h.metrics ?? {}))
        if (typeof v === 'number') (curves[k] ??= []).push([h.step, v]);
    const completedAt = done?.completed_at ?? null;
    stages.push({
      name,
      kind,
      state: done ? 'completed' : (status?.state ?? 'pending'),
      attempt: status?.attempt ?? null,
      step: done?.final_step ?? status?.step ?? 0,
      totalSteps: status?.total_steps ?? null,
      checkpoint,
      startedAt: status || done ? previousEnd : null,
      completedAt: completedAt ?? (status?.state === 'running' ? (status.updated_at ?? null) : null),
      metrics: { ...(state?.metrics ?? {}), ...(status?.metrics ?? {}), ...(done?.metrics ?? {}) },
      curves,
    });
    if (completedAt) previousEnd = completedAt;
  }
  return {
    pipelineId,
    name: manifest.name,
    state: manifest.state,
    createdAt: manifest.created_at,
    stages,
  };
}
