// The evaluation stage (`kind: eval`) and the promotion rule built on it. An eval stage runs its task set
// through the rollout engine without training (the input checkpoint's weights, `eval.samples` samples per task
// at `rollout.temperature`) and reports pass@k by the unbiased estimator of Chen et al. (2021), the mean
// reward and the pass rate overall and per difficulty level. `promotion` names the eval stage whose metric
// decides whether a finished run's final checkpoint becomes the one `model.init: {from_pipeline: NAME}` takes.
import { z } from 'zod';
import { METRICS_BY_KIND } from './metrics';

const positiveInt = () =>
  z
    .number({ error: 'expected a positive integer' })
    .int({ error: 'expected a positive integer' })
    .positive({ error: 'expected a positive integer' });

export const evalSchema = z.strictObject({
  samples: positiveInt()
    .default(4)
    .describe(
      'Samples per task (n of the pass@k estimator; at least the largest k). Replaces rollout.group_size, which eval stages do not use.',
    ),
  pass_k: z
    .array(positiveInt())
    .min(1, { error: 'expected at least one k' })
    .default([1])
    .describe('The k of each pass@k reported (metric `pass@K`); each at most samples.'),
});

export const promotionSchema = z.strictObject({
  stage: z
    .string({ error: 'expected the name of an eval stage' })
    .min(1, { error: 'expected the name of an eval stage' })
    .describe("The eval stage whose metric decides promotion (its run's last eval of the final weights)."),
  metric: z
    .string({ error: 'expected a metric name' })
    .min(1, { error: 'expected a metric name' })
    .default('pass@1')
    .describe('Metric of that stage to compare (higher is better: pass@K, pass_rate, reward_mean, …).'),
  min_improvement: z
    .number({ error: 'expected a number' })
    .default(0)
    .describe(
      "The run is promoted when its metric ≥ the promoted run's + min_improvement (the first run always is).",
    ),
});

const LEVEL_METRIC = /^pass_rate_level_\d+$/;

/** Whether an eval stage with these k's reports `metric`. */
export function isEvalMetric(metric: string, passK: readonly number[]): boolean {
  return (
    METRICS_BY_KIND.eval.includes(metric) ||
    passK.some((k) => metric === `pass@${k}`) ||
    LEVEL_METRIC.test(metric)
  );
}

/** The eval metric names for messages: the fixed ones, the configured pass@K and the per-level pattern. */
export function evalMetricNames(passK: readonly number[]): string[] {
  return [...passK.map((k) => `pass@${k}`), ...METRICS_BY_KIND.eval, 'pass_rate_level_N'];
}
