// The workflows a control worker registers (this file is the bundle's entry point).
export { trainingPipeline, statusQuery, stageProgressSignal } from './pipeline';
export type { PipelineInput } from './pipeline';
export { stageWorkflow } from './stage';
export type { StageWorkflowInput } from './stage';
