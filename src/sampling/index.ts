// Difficulty-aware task sampling: statistics, samplers, advantage scaling and their persistence.
export * from './advantages';
export * from './drawer';
export * from './rng';
export * from './sampler';
export * from './stats';
export * from './store';
