// The contract across the TypeScript–Python seam: every message that crosses it, by name. Each is a zod
// schema (its resolved output shape) from which `generate.ts` writes one JSON Schema and the trainer's
// pydantic models (trainer/trainflow_trainer/contract/). To add a message: define its schema in a file here,
// add it below, run `make contract` and commit the generated files (a test fails when they are stale).
import type { z } from 'zod';
import { resolvedPipelineSchema } from '../config/schema';
import {
  agentRequestSchema,
  driverAgentSchema,
  driverBatchSchema,
  driverCollectedSchema,
  driverDoneSchema,
  driverMessageSchema,
  driverReadySchema,
  driverSpecSchema,
  episodeSchema,
  stopSchema,
  trainedSchema,
  trainerMessageSchema,
} from './driver';
import { dataplaneReadySchema, serveReadySchema } from './ready';
import { jobSpecSchema, jobStatusSchema, storageEndpointSchema } from './job';
import {
  choiceTokensSchema,
  groupRecordSchema,
  responseTokensSchema,
  tokenTreeSchema,
  trajectorySchema,
} from './tokens';

export const CONTRACT: Record<string, z.ZodType> = {
  PipelineConfig: resolvedPipelineSchema,
  JobSpec: jobSpecSchema,
  JobStatus: jobStatusSchema,
  StorageEndpoint: storageEndpointSchema,
  DriverSpec: driverSpecSchema,
  DriverAgent: driverAgentSchema,
  DriverMessage: driverMessageSchema,
  DriverReady: driverReadySchema,
  DriverBatch: driverBatchSchema,
  DriverCollected: driverCollectedSchema,
  DriverDone: driverDoneSchema,
  TrainerMessage: trainerMessageSchema,
  Trained: trainedSchema,
  Stop: stopSchema,
  AgentRequest: agentRequestSchema,
  Episode: episodeSchema,
  ServeReady: serveReadySchema,
  DataplaneReady: dataplaneReadySchema,
  ChoiceTokens: choiceTokensSchema,
  ResponseTokens: responseTokensSchema,
  TokenTree: tokenTreeSchema,
  Trajectory: trajectorySchema,
  GroupRecord: groupRecordSchema,
};

/** Constants both sides need (prefixes of protocol lines, exit codes), emitted into the Python module too. */
export { CONTRACT_CONSTANTS } from './constants';
