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
  ],
};
