// The pipeline's search attributes, so runs can be filtered in the Temporal UI and by `trainflow list`:
// the pipeline's name, the stage it is in and its state. Set by the client at start, kept current by the
// pipeline workflow. Plain definitions: imported by workflow code, the client and the dev stack.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { PipelineState } from './status';

export const PIPELINE_ATTRIBUTE = defineSearchAttributeKey('TrainflowPipeline', SearchAttributeType.KEYWORD);
export const STAGE_ATTRIBUTE = defineSearchAttributeKey('TrainflowStage', SearchAttributeType.KEYWORD);
export const STATE_ATTRIBUTE = defineSearchAttributeKey('TrainflowState', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [PIPELINE_ATTRIBUTE, STAGE_ATTRIBUTE, STATE_ATTRIBUTE];

/** `temporal server start-dev` arguments registering them (dev server, `trainflow dev up`). */
export function devServerSearchAttributeArgs(): string[] {
  return SEARCH_ATTRIBUTES.flatMap((key) => ['--search-attribute', `${key.name}=Keyword`]);
}

/** The attributes a pipeline run starts with. */
export function initialSearchAttributes(pipelineName: string) {
  const state: PipelineState = 'running';
  return [
    { key: PIPELINE_ATTRIBUTE, value: pipelineName },
    { key: STATE_ATTRIBUTE, value: state },
  ];
}

/** A quoted visibility-query string literal. */
function literal(value: string): string {
  return `"${value.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
}

/** The visibility query `trainflow list` sends: pipeline runs, by name and/or state. */
export function listQuery(workflowType: string, filter: { name?: string; state?: string } = {}): string {
  const clauses = [`WorkflowType = ${literal(workflowType)}`];
  if (filter.name) clauses.push(`${PIPELINE_ATTRIBUTE.name} = ${literal(filter.name)}`);
  if (filter.state) clauses.push(`${STATE_ATTRIBUTE.name} = ${literal(filter.state)}`);
  return clauses.join(' AND ');
}

/** The command registering them on a cluster's namespace (one --type for every --name: all are Keyword). */
export function registerCommand(namespace: string): string {
  const names = SEARCH_ATTRIBUTES.map((key) => `--name ${key.name}`).join(' ');
  return `temporal operator search-attribute create --namespace ${namespace} ${names} --type Keyword`;
}
