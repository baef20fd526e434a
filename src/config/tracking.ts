// Where stage metrics go besides the status object: TensorBoard event files (by default, kept in S3 next to
// the stage's checkpoints), and on request an MLflow tracking server and Weights & Biases.
import { z } from 'zod';

export const trackingSchema = z.strictObject({
  tensorboard: z
    .boolean({ error: 'expected true or false' })
    .default(true)
    .describe(
      "Write every stage's metrics as TensorBoard event files under the stage's storage prefix (`tensorboard/`).",
    ),
});
