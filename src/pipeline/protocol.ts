// The job protocol of the shared contract, as TypeScript types: the spec the activity hands to a job, the status
// object a job writes, and the exit codes. (The Python trainer implements the other side.)
import type { StorageEndpoint } from '../storage/s3';

export const PROTOCOL_VERSION = 1;

export const EXIT_DONE = 0;
export const EXIT_BAD_INPUT = 2;
export const EXIT_PREEMPTED = 75;
/** Prefix of the one-line reason a job prints on stderr before exiting with EXIT_BAD_INPUT. */
export const BAD_INPUT_PREFIX = 'trainflow: bad input: ';
/** Prefix of the status line a job prints on stdout. */
export const STATUS_LINE_PREFIX = 'TRAINFLOW_STATUS ';

export interface JobSpec {
  protocol: 1;
  pipeline_id: string;
  run_id: string;
  stage_index: number;
  attempt: number;
  stage: Record<string, unknown> & { name: string; kind: string };
  model: Record<string, unknown>;
  input_checkpoint: string | null;
  output_prefix: string;
  resume: boolean;
  status_uri: string;
  storage: StorageEndpoint;
  work_dir: string;
}

export interface JobStatus {
  state: 'running' | 'done' | 'failed';
  step: number;
  total_steps: number;
  metrics: Record<string, number>;
  last_checkpoint: string | null;
  last_checkpoint_step: number | null;
  attempt: number;
  pid: number;
  updated_at: string;
}
