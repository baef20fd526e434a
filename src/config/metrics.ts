// The metrics each stage kind reports in its status object, and so the ones a gate may test. The trainer
// (trainer/trainflow_trainer) emits these names; a gate on any other name is a config error.
export const METRICS_BY_KIND: Record<
  'midtrain' | 'sft' | 'rft' | 'rl' | 'eval' | 'curate',
  readonly string[]
> = {
  // stages/curate.py: instances synthesised, of them valid (passed `tasks check`) and rejected
  curate: ['instances', 'valid', 'rejected', 'packages_with_instances'],
  midtrain: ['loss', 'eval_loss', 'grad_norm', 'lr', 'tokens_per_s'],
  sft: ['loss', 'eval_loss', 'grad_norm', 'lr', 'tokens_per_s'],
  rft: ['loss', 'grad_norm', 'lr', 'tokens_per_s', 'pass_rate', 'reward_mean', 'kept_fraction'],
  rl: [
    'loss',
    'grad_norm',
    'lr',
    'tokens_per_s',
    'reward_mean',
    'pass_rate',
    'kl',
    'entropy',
    'no_signal_fraction',
    'turns_mean',
    'staleness_mean',
    // the objective (trainer/trainflow_trainer/rl/objective.py): importance ratio π_θ/π_behaviour on the
    // trained tokens, clip fractions (verl's actor/pg_clipfrac = clip_frac), the decoupled weight
    // π_prox/π_behaviour, the k3 KL to the reference, generated tokens dropped as staler than max_staleness
    'clip_frac',
    'clip_frac_low',
    'clip_frac_high',
    'ratio_mean',
    'ratio_max',
    'behav_weight_mean',
    'behav_weight_max',
    'kl_ref',
    'dropped_stale_tokens',
  ],
  // besides these, an eval stage reports `pass@K` for each K of eval.pass_k and `pass_rate_level_N` for each
  // difficulty level N its tasks carry (src/config/eval.ts: isEvalMetric)
  eval: ['reward_mean', 'pass_rate', 'tasks', 'samples', 'episodes', 'turns_mean'],
};

/**
 * The names stage metrics are tracked under (TensorBoard, MLflow, W&B): verl's where verl has one, so dashboards
 * carry over; every other metric as `trainflow/NAME`. LM stages (midtrain, sft) use verl's SFT trainer names,
 * rollout stages (rft, rl) its PPO actor's. The trainer reads these tables from the generated contract.
 */
export const TRACKED_NAMES_LM: Record<string, string> = {
  loss: 'train/loss',
  lr: 'train/lr',
  grad_norm: 'train/grad_norm',
  tokens_per_s: 'perf/throughput',
  eval_loss: 'val/loss',
};
export const TRACKED_NAMES_ROLLOUT: Record<string, string> = {
  loss: 'actor/pg_loss',
  lr: 'actor/lr',
  grad_norm: 'actor/grad_norm',
  entropy: 'actor/entropy',
  kl: 'actor/kl_loss',
  clip_frac: 'actor/pg_clipfrac',
  reward_mean: 'critic/score/mean',
  turns_mean: 'num_turns/mean',
  response_length_mean: 'response_length/mean',
  tokens_per_s: 'perf/throughput',
  wait_s: 'timing_s/gen',
  train_s: 'timing_s/update_actor',
};
