// The metrics each stage kind reports in its status object, and so the ones a gate may test. The trainer
// (trainer/trainflow_trainer) emits these names; a gate on any other name is a config error.
export const METRICS_BY_KIND: Record<'midtrain' | 'sft' | 'rft' | 'rl', readonly string[]> = {
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
};
