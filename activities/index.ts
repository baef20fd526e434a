// The activity types workflows import (`import type`): the control worker's light activities and the launcher
// workers' job activity.
import type { createControlActivities } from './control';
import type { createJobActivities } from './job';

export type ControlActivities = ReturnType<typeof createControlActivities>;
export type JobActivities = ReturnType<typeof createJobActivities>;
export type { PrepareInput, PreparedPipeline, CompletedStage, RecordStageInput } from './control';
export type { StageJobInput, StageJobResult } from './job';
