// The pipeline's status, as the `status` query returns it and the CLI shows it, and the progress signal the job
// activity sends to keep it current. Plain data: imported by workflow code (types only) and the CLI.

export type StageState = 'pending' | 'running' | 'completed' | 'skipped' | 'failed' | 'cancelled';
export type PipelineState = 'running' | 'completed' | 'failed' | 'cancelled';

export interface StageStatus {
  name: string;
  kind: string;
  state: StageState;
  attempt: number;
  step: number;
  totalSteps: number;
  metrics: Record<string, number>;
  inputCheckpoint: string | null;
  lastCheckpoint: string | null;
  outputCheckpoint: string | null;
  jobName: string | null;
  startedAt: string | null;
  endedAt: string | null;
  error: string | null;
}

export interface PipelineStatus {
  pipelineId: string;
  name: string;
  runId: string;
  state: PipelineState;
  configHash: string;
  startedAt: string;
  endedAt: string | null;
  error: string | null;
  stages: StageStatus[];
}

/** Sent by the job activity to the pipeline workflow (signal `stageProgress`). */
export interface StageProgress {
  stage: string;
  attempt: number;
  step: number;
  totalSteps: number;
  metrics: Record<string, number>;
  lastCheckpoint: string | null;
  jobName: string;
}
