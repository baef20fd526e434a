// Where stage metrics go besides the status object: TensorBoard event files (by default, kept in storage next
// to the stage's checkpoints), and on request an MLflow tracking server and Weights & Biases. Each pipeline run
// is one tracked run and each stage one child of it; a resumed attempt continues its stage's curves.
import { z } from 'zod';

const text = () => z.string({ error: 'expected a string' }).min(1, { error: 'must not be empty' });

const mlflowSchema = z.strictObject({
  tracking_uri: z
    .url({ error: 'expected the URL of an MLflow tracking server, such as http://127.0.0.1:5050' })
    .describe('MLflow tracking server (`trainflow dev up --mlflow` starts one locally).'),
  experiment: text().default('trainflow').describe('MLflow experiment of the pipeline runs.'),
});

const wandbSchema = z.strictObject({
  project: text().describe('Weights & Biases project.'),
  entity: text().optional().describe('Weights & Biases entity (team or user); default: the API key’s.'),
  mode: z
    .enum(['offline', 'online'], { error: 'expected offline or online' })
    .default('offline')
    .describe(
      "offline: a run folder kept in storage next to the stage's checkpoints (`wandb/`; `wandb sync` uploads it); online: straight to W&B.",
    ),
});

export const trackingSchema = z.strictObject({
  tensorboard: z
    .boolean({ error: 'expected true or false' })
    .default(true)
    .describe(
      "Write every stage's metrics as TensorBoard event files under the stage's storage prefix (`tensorboard/`).",
    ),
  mlflow: mlflowSchema
    .optional()
    .describe('Also log to an MLflow tracking server: a run per pipeline run, a child run per stage.'),
  wandb: wandbSchema
    .optional()
    .describe('Also log to Weights & Biases: a run per stage, grouped by pipeline run.'),
});
