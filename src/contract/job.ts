// The job protocol (activity ⇄ job): the spec the job activity hands to a job, the status object a job writes,
// and the exit codes. These zod schemas are the one definition; the trainer's Python types are generated from
// them (src/contract/generate.ts → trainer/trainflow_trainer/contract/).
import { z } from 'zod';
import { resolvedModelSchema, resolvedStageSchema } from '../config/schema';
import { trackingSchema } from '../config/tracking';

export const PROTOCOL_VERSION = 1;

export const EXIT_DONE = 0;
export const EXIT_BAD_INPUT = 2;
export const EXIT_PREEMPTED = 75;
/** Prefix of the one-line reason a job prints on stderr before exiting with EXIT_BAD_INPUT. */
export const BAD_INPUT_PREFIX = 'trainflow: bad input: ';
/** Prefix of the status line a job prints on stdout. */
export const STATUS_LINE_PREFIX = 'TRAINFLOW_STATUS ';

/** The S3 endpoint every process of a run talks to (credentials come from the standard AWS sources). */
export const storageEndpointSchema = z.strictObject({
  endpoint: z.string().optional().describe('S3 endpoint URL; unset means AWS S3.'),
  region: z.string().optional().describe('S3 region.'),
  force_path_style: z.boolean().optional().describe('Path-style addressing (MinIO needs it).'),
});
export type StorageEndpoint = z.output<typeof storageEndpointSchema>;

export const jobSpecSchema = z
  .strictObject({
    protocol: z
      .literal(PROTOCOL_VERSION)
      .describe('Version of this protocol; a job refuses one it does not speak.'),
    pipeline_id: z.string().min(1).describe('Id of the pipeline run.'),
    pipeline_name: z.string().min(1).describe("The pipeline's metadata.name."),
    run_id: z.string().describe('Temporal run id of the pipeline workflow.'),
    stage_index: z.number().int().nonnegative().describe("The stage's index in the pipeline."),
    attempt: z.number().int().positive().describe('Attempt of the job activity (1 first).'),
    stage: resolvedStageSchema.describe('The resolved stage config.'),
    model: resolvedModelSchema.describe("The pipeline's resolved model block."),
    input_checkpoint: z
      .string()
      .min(1)
      .nullable()
      .describe("The stage's input: the previous stage's output or the configured init; null: model.init."),
    output_prefix: z
      .string()
      .min(1)
      .describe('Where this stage commits its checkpoints (s3:// URI or folder).'),
    resume: z.boolean().describe("Resume from this stage's latest committed checkpoint when there is one."),
    status_uri: z.string().min(1).describe('Where the job writes its status object.'),
    storage: storageEndpointSchema,
    tracking: trackingSchema.describe("The pipeline's tracking block."),
    work_dir: z.string().min(1).describe('Scratch folder of the job on its host.'),
  })
  .describe('The job spec: what the job activity hands to a stage job (one JSON file).');
export type JobSpec = z.output<typeof jobSpecSchema>;

export const jobStatusSchema = z
  .strictObject({
    state: z.enum(['running', 'done', 'failed']),
    step: z.number().int().nonnegative().describe('Optimizer steps done.'),
    total_steps: z.number().int().nonnegative(),
    metrics: z.record(z.string(), z.number()).describe('Latest metrics by name (src/config/metrics.ts).'),
    last_checkpoint: z
      .string()
      .nullable()
      .describe('URI of the latest committed checkpoint of this attempt.'),
    last_checkpoint_step: z.number().int().nullable(),
    resumed_from: z
      .strictObject({ uri: z.string(), step: z.number().int().nonnegative() })
      .nullable()
      .describe('The committed checkpoint this attempt resumed from; null when it started afresh.'),
    reason: z.string().optional().describe('Why the job failed (state failed).'),
    attempt: z.number().int().positive(),
    pid: z.number().int(),
    updated_at: z.string().describe('ISO 8601 time of the last write.'),
  })
  .describe('The status object a job writes to status_uri and prints as a TRAINFLOW_STATUS line.');
export type JobStatus = z.output<typeof jobStatusSchema>;

/** The one builder of a job spec (the job activity's launches and `render-job`'s previews). */
export function buildJobSpec(a: {
  pipelineId: string;
  pipelineName: string;
  runId: string;
  stageIndex: number;
  attempt: number;
  stage: JobSpec['stage'];
  model: JobSpec['model'];
  tracking: JobSpec['tracking'];
  inputCheckpoint: string | null;
  outputPrefix: string;
  statusUri: string;
  storage: StorageEndpoint;
  workDir: string;
}): JobSpec {
  return {
    protocol: PROTOCOL_VERSION,
    pipeline_id: a.pipelineId,
    pipeline_name: a.pipelineName,
    run_id: a.runId,
    stage_index: a.stageIndex,
    attempt: a.attempt,
    stage: a.stage,
    model: a.model,
    input_checkpoint: a.inputCheckpoint,
    output_prefix: a.outputPrefix,
    resume: true,
    status_uri: a.statusUri,
    storage: a.storage,
    tracking: a.tracking,
    work_dir: a.workDir,
  };
}
