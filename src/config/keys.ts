// Every leaf key of the config schema and what it does: honoured (where it takes effect, and the test that shows
// it changing behaviour), metadata (kept and shown, changes no behaviour, and why), or rejected (the schema
// refuses it when set, because nothing honours it yet; the test shows the refusal). A key the code ignores
// silently is the bug this list exists to prevent: test/config/keys-honoured.test.ts fails when a schema key is
// missing here, when an entry names a key the schema lacks, or when a named test does not exist.
//
// Key paths: `.` between fields, `[]` for list items, `NAME` for a mapping's user-chosen keys; the alternatives of
// a union (model.init, model.tokenizer) share their parent's path.

export type KeyEntry =
  { honoured: string; test: string } | { metadata: string } | { rejected: string; test: string };

const PIPE = 'test/pipeline/pipeline.test.ts::a three-stage pipeline completes';
const FAIL = 'test/pipeline/failures.test.ts::kill -9 of the job mid-stage';
const CLI_RUN = 'test/pipeline/cli.test.ts::run, status --json, list and logs';
const SLURM =
  'test/launchers/render.test.ts::kat-dev-72b midtrain-1 renders to an 8-node x 8-GPU sbatch script';
const K8S = 'test/launchers/kubernetes.test.ts::one node: a Job with the spec in a ConfigMap';
const RESOURCES = 'test/config/config.test.ts::a resource request the launcher cannot serve';
const BAD = 'test/config/bad-configs.test.ts::each bad config is rejected at its field';
const RL_RESUME = 'trainer/tests/test_rl.py::test_rl_stage_kill9_resumes_cursor_and_sampler_stats';
const OBJECTIVE = 'trainer/tests/test_rl_objective.py::';
const BYO = 'trainer/tests/test_byo_agent.py::test_scripted_openai_sdk_agent_runs_an_rft_stage';
const JOB = 'trainer/tests/test_job.py::test_one_cpu_training_step_learns';
const FSDP = 'trainer/tests/test_fsdp.py::';
const PPN = 'test/launchers/procs-per-node.test.ts::';
const RESUME = 'trainer/tests/test_job.py::test_exact_resume_after_sigkill';
const SAMPLER = 'test/sampling/sampler.test.ts::';
const TRACKING = 'trainer/tests/test_tracking.py::';
const PROMOTION = 'test/pipeline/promotion.test.ts::';
const EVAL_CONFIG = 'test/config/eval.test.ts::';
const CURATE = 'trainer/tests/test_curate_stage.py::test_curate_stage_synthesises_checks_and_commits_once';
const SWE_FILTERS =
  'trainer/tests/test_swe_grading.py::test_pr_dataset_filters_drop_by_stars_activity_and_issue_content';

export const CONFIG_KEYS: Record<string, KeyEntry> = {
  api_version: {
    honoured: 'schema: only trainflow/v1 is read',
    test: 'test/config/config.test.ts::valid configs',
  },
  'metadata.name': { honoured: 'pipeline ids, manifests and memo (src/pipeline/client.ts)', test: CLI_RUN },
  'metadata.description': { metadata: 'free text for people; shown in the resolved config only' },
  'metadata.labels': {
    metadata: 'free labels for people and tooling; kept in the resolved config, no behaviour',
  },

  'storage.uri': {
    honoured: 'where checkpoints and manifests live (activities, trainer checkpoint.py)',
    test: PIPE,
  },
  'storage.endpoint': {
    honoured: 'the S3 client of every process',
    test: 'test/pipeline/cli.test.ts::an unreachable Temporal server or S3 endpoint',
  },
  'storage.region': {
    honoured: 'the S3 client region (src/storage/s3.ts s3Client, trainer storage.py)',
    test: PIPE,
  },
  'storage.force_path_style': { honoured: 'the S3 client addressing (MinIO needs it)', test: PIPE },

  'temporal.address': {
    honoured: 'the Temporal connection of run/start/workers',
    test: 'test/pipeline/cli.test.ts::an unreachable Temporal server or S3 endpoint',
  },
  'temporal.namespace': { honoured: 'the Temporal namespace of clients and workers', test: CLI_RUN },
  'temporal.task_queue': { honoured: "the control worker's task queue", test: CLI_RUN },

  'defaults.launcher': {
    honoured: 'the launcher of the implicit default pool (a config without pools); with pools, an error',
    test: "test/config/config.test.ts::defaults.launcher is the implicit default pool's launcher",
  },
  'defaults.retry.max_attempts': { honoured: "the job activity's retry policy (workflows)", test: FAIL },
  'defaults.retry.initial_interval': { honoured: "the job activity's retry policy", test: FAIL },
  'defaults.retry.backoff': { honoured: "the job activity's retry policy", test: FAIL },
  'defaults.retry.max_interval': { honoured: "the job activity's retry policy", test: FAIL },
  'defaults.heartbeat_timeout': {
    honoured: "the job activity's heartbeat timeout",
    test: 'test/pipeline/worker-kill.test.ts::kill -9 of the launcher worker mid-stage',
  },
  'defaults.start_to_close_timeout': {
    honoured: "the job activity's startToCloseTimeout",
    test: 'test/launchers/slurm.test.ts::a job killed at its time limit',
  },
  'defaults.resources.pool': { honoured: "the stage's launcher task queue", test: RESOURCES },
  'defaults.resources.nodes': { honoured: 'nodes of a cluster job (slurm/kubernetes)', test: SLURM },
  'defaults.resources.gpus_per_node': {
    honoured:
      'GPUs and processes per node: one torchrun rank per GPU (Slurm, Kubernetes, and local, checked against the host at launch)',
    test: SLURM,
  },
  'defaults.resources.gpu_type': { honoured: "checked against the pool's GPU type", test: BAD },
  'defaults.resources.cpus_per_node': {
    honoured: 'CPU request and OMP_NUM_THREADS of the job (activities/job.ts)',
    test: 'test/activities/thread-env.test.ts::cpus_per_node sets the threads',
  },
  'defaults.resources.procs_per_node': {
    honoured:
      'processes per CPU node: torchrun --nproc-per-node (local, Slurm, Kubernetes), FSDP2 ranks over gloo',
    test: PPN + 'the local launcher starts procs_per_node ranks of a real Python job',
  },
  'defaults.resources.memory_per_node': { honoured: 'memory request of slurm/kubernetes jobs', test: SLURM },

  'pools.NAME.launcher': { honoured: 'which launcher runs the pool (workers/, src/launchers)', test: SLURM },
  'pools.NAME.task_queue': { honoured: "the pool's launcher worker task queue", test: CLI_RUN },
  'pools.NAME.gpus_per_node': { honoured: "the pool's limit on a stage's GPUs", test: RESOURCES },
  'pools.NAME.gpu_type': { honoured: "checked against a stage's gpu_type", test: BAD },
  'pools.NAME.max_nodes': { honoured: "the pool's limit on a stage's nodes", test: RESOURCES },
  'pools.NAME.slurm.partition': { honoured: 'sbatch --partition', test: SLURM },
  'pools.NAME.slurm.account': { honoured: 'sbatch --account', test: SLURM },
  'pools.NAME.slurm.qos': { honoured: 'sbatch --qos', test: SLURM },
  'pools.NAME.slurm.time_limit': {
    honoured: 'sbatch --time',
    test: 'test/launchers/slurm.test.ts::a job killed at its time limit',
  },
  'pools.NAME.slurm.container_image': { honoured: 'srun --container-image (pyxis)', test: SLURM },
  'pools.NAME.slurm.extra_sbatch_args': {
    honoured: 'sbatch arguments, verbatim',
    test: 'test/launchers/slurm.test.ts::a stage runs through Slurm end to end',
  },
  'pools.NAME.kubernetes.namespace': { honoured: 'namespace of the Job', test: K8S },
  'pools.NAME.kubernetes.image': { honoured: "the pods' container image", test: K8S },
  'pools.NAME.kubernetes.node_selector': { honoured: "the pods' nodeSelector", test: K8S },
  'pools.NAME.kubernetes.tolerations[].key': { honoured: "the pods' tolerations", test: K8S },
  'pools.NAME.kubernetes.tolerations[].operator': { honoured: "the pods' tolerations", test: K8S },
  'pools.NAME.kubernetes.tolerations[].value': { honoured: "the pods' tolerations", test: K8S },
  'pools.NAME.kubernetes.tolerations[].effect': { honoured: "the pods' tolerations", test: K8S },
  'pools.NAME.kubernetes.service_account': { honoured: "the pods' serviceAccountName", test: K8S },
  'pools.NAME.kubernetes.s3_secret': { honoured: "the pods' S3 credentials secret", test: K8S },
  'pools.NAME.kubernetes.gpu_resource': { honoured: "the pods' GPU resource limit name", test: K8S },

  'model.init.preset': {
    honoured: 'model.py preset()',
    test: 'trainer/tests/test_model.py::test_presets_sizes_and_overrides',
  },
  'model.init.overrides': {
    honoured: 'model.py preset(**overrides)',
    test: 'trainer/tests/test_model.py::test_presets_sizes_and_overrides',
  },
  'model.init.seed': {
    rejected: "not read: the first stage's train.seed decides the initial weights",
    test: BAD,
  },
  'model.init.fallback.preset': {
    honoured:
      "control.ts: a from_pipeline init's start while that pipeline has no promoted or successful run",
    test: `${PROMOTION}a retrain whose eval is worse than the promoted run is not promoted`,
  },
  'model.init.fallback.overrides': {
    honoured: 'the fallback preset stands in for model.init (model.py preset(**overrides))',
    test: `${PROMOTION}a retrain whose eval is worse than the promoted run is not promoted`,
  },
  'model.init.fallback.seed': { rejected: 'as model.init.seed: not read', test: BAD },
  'model.init.fallback.checkpoint': {
    honoured: 'control.ts: the fallback checkpoint becomes the first stage input',
    test: `${EVAL_CONFIG}a training stage still needs its train block; a fallback is a preset or a checkpoint`,
  },
  'model.init.checkpoint': {
    honoured: 'lm.py/policy.py open_checkpoint',
    test: 'test/pipeline/checkpoints.test.ts::an input checkpoint that fails verification',
  },
  'model.init.from_pipeline': {
    honoured: "activities/control.ts: the latest successful run's final checkpoint",
    test: 'test/pipeline/schedule.test.ts::a schedule triggered by hand',
  },
  'model.init.stage': {
    honoured: "activities/control.ts: which stage's final checkpoint of that run",
    test: 'test/pipeline/schedule.test.ts::a schedule triggered by hand',
  },
  'model.tokenizer.path': { honoured: 'lm.py resolve_tokenizer', test: JOB },
  'model.tokenizer.train.vocab_size': { rejected: 'nothing trains a tokenizer at set-up', test: BAD },
  'model.tokenizer.train.corpora': { rejected: 'nothing trains a tokenizer at set-up', test: BAD },
  'model.dtype': { honoured: 'lm.py autocast (bf16 on GPU; CPU runs fp32)', test: BAD },

  'stages[].name': { honoured: 'stage identity, checkpoint prefixes, manifests', test: PIPE },
  'stages[].kind': { honoured: 'which trainer stage runs (stages/__init__.py)', test: PIPE },
  'stages[].description': { metadata: 'free text for people' },
  'stages[].data.sources[].path': {
    honoured: 'data.py load_source_rows',
    test: 'trainer/tests/test_data.py::test_parquet_and_folder_sources',
  },
  'stages[].data.sources[].kind': {
    honoured: 'data.py load_stream: gold_trajectories renders SWE instances (tasks/swe/gold.py)',
    test: 'trainer/tests/test_swe_gold.py::test_the_sft_rows_of_a_gold_source_train_on_the_assistants_tokens_only',
  },
  'stages[].data.sources[].from': {
    honoured: 'workflows/pipeline.ts withCuratedTasks + stages/curate.py resolve_curated_tasks',
    test: "test/pipeline/curate-tasks.test.ts::a gold-trajectory source's from becomes the curate stage's tasks.jsonl",
  },
  'stages[].data.sources[].weight': {
    honoured: 'data.py ExampleStream mixture',
    test: 'trainer/tests/test_data.py::test_mixing_follows_weights',
  },
  'stages[].data.sources[].format': {
    honoured: 'data.py _parse_rows',
    test: 'trainer/tests/test_data.py::test_parquet_and_folder_sources',
  },
  'stages[].data.seq_len': {
    honoured: 'data.py packers',
    test: 'trainer/tests/test_data.py::test_midtrain_rows_pack_documents',
  },
  'stages[].curate.packages': { honoured: 'stages/curate.py: the releases synthesize() reads', test: CURATE },
  'stages[].curate.per_package': { honoured: 'stages/curate.py: synthesize(per_package)', test: CURATE },
  'stages[].curate.max_candidates': {
    honoured: 'stages/curate.py: synthesize(max_candidates)',
    test: CURATE,
  },
  'stages[].curate.combine': { honoured: 'stages/curate.py: synthesize(combine)', test: CURATE },
  'stages[].curate.seed': { honoured: 'stages/curate.py: synthesize(seed)', test: CURATE },
  'stages[].curate.test_requirements': {
    honoured: 'stages/curate.py: synthesize(test_requirements)',
    test: CURATE,
  },
  'stages[].curate.time_budget_s': { honoured: 'stages/curate.py: synthesize(time_budget_s)', test: CURATE },
  'stages[].curate.min_instances': {
    honoured: 'stages/curate.py: fails the stage (BadInput) below it',
    test: CURATE,
  },
  'stages[].tasks.from': {
    honoured: 'workflows/pipeline.ts withCuratedTasks + stages/curate.py resolve_curated_tasks',
    test: 'trainer/tests/test_curate_stage.py::test_tasks_from_reads_the_committed_instances',
  },
  'stages[].tasks.family': {
    honoured: 'tasks/__init__.py load_tasks',
    test: 'trainer/tests/test_tasks_demo.py::test_deterministic_in_the_seed',
  },
  'stages[].tasks.path': {
    honoured: 'tasks/__init__.py load_tasks (jsonl)',
    test: 'trainer/tests/test_tasks_demo.py::test_task_format_round_trip_and_errors',
  },
  'stages[].tasks.count': { honoured: 'tasks/__init__.py load_tasks', test: RL_RESUME },
  'stages[].tasks.seed': {
    honoured: 'tasks/demo.py demo_tasks',
    test: 'trainer/tests/test_tasks_demo.py::test_deterministic_in_the_seed',
  },
  'stages[].tasks.filters.min_stars': { honoured: 'tasks/swe/filters.py why_dropped', test: SWE_FILTERS },
  'stages[].tasks.filters.min_pr_activity': {
    honoured: 'tasks/swe/filters.py why_dropped',
    test: SWE_FILTERS,
  },
  'stages[].tasks.filters.issue_min_chars': {
    honoured: 'tasks/swe/filters.py why_dropped',
    test: SWE_FILTERS,
  },
  'stages[].tasks.filters.issue_must_match': {
    honoured: 'tasks/swe/filters.py why_dropped',
    test: SWE_FILTERS,
  },
  'stages[].tasks.filters.issue_must_not_match': {
    honoured: 'tasks/swe/filters.py why_dropped',
    test: SWE_FILTERS,
  },
  'stages[].tasks.partial_credit': {
    honoured: 'tasks/swe/grade.py _grade (through the swe_tests verifier of load_tasks)',
    test: 'trainer/tests/test_swe_grading.py::test_partial_credit_is_the_share_of_fail_to_pass_when_pass_to_pass_holds',
  },
  'stages[].train.steps': { honoured: 'train.py TrainConfig, every stage loop', test: PIPE },
  'stages[].train.batch_size': {
    honoured: 'train.py/rft.py batch (rl: must equal batch_groups × group_size)',
    test: 'trainer/tests/test_distributed.py::test_two_gloo_processes_match_one',
  },
  'stages[].train.micro_batch_size': {
    honoured: 'train.py check_layout, gradient accumulation (midtrain, sft)',
    test: 'trainer/tests/test_job.py::test_micro_batching_does_not_change_the_step',
  },
  'stages[].train.lr': { honoured: 'train.py lr_at', test: JOB },
  'stages[].train.min_lr': { honoured: 'train.py lr_at', test: RESUME },
  'stages[].train.warmup_steps': { honoured: 'train.py lr_at', test: RESUME },
  'stages[].train.weight_decay': { honoured: 'train.py build_optimizer', test: JOB },
  'stages[].train.betas': { honoured: 'train.py build_optimizer', test: JOB },
  'stages[].train.grad_clip': { honoured: 'train.py train_step, rl.py, rft.py clip_grad_norm_', test: JOB },
  'stages[].train.fsdp.mixed_precision': {
    honoured: 'train.py parallelize: FSDP2 MixedPrecisionPolicy(bf16 params, fp32 reduce)',
    test: FSDP + 'test_bf16_mixed_precision_computes_in_bf16_and_reduces_in_fp32',
  },
  'stages[].train.fsdp.activation_checkpointing': {
    honoured: 'train.py parallelize: checkpoint() on every block',
    test: FSDP + 'test_activation_checkpointing_and_cpu_offload_run_and_stay_exact',
  },
  'stages[].train.fsdp.cpu_offload': {
    honoured: 'train.py parallelize: FSDP2 CPUOffloadPolicy',
    test: FSDP + 'test_activation_checkpointing_and_cpu_offload_run_and_stay_exact',
  },
  'stages[].train.seed': { honoured: 'seed_everything, data order, the sampler seed', test: RESUME },
  'stages[].checkpoint.every': { honoured: 'commit cadence of every stage', test: FAIL },
  'stages[].checkpoint.keep_last': {
    honoured: 'checkpoint retention',
    test: 'test/pipeline/checkpoints.test.ts::retention keeps the newest K',
  },
  'stages[].resources.pool': { honoured: 'as defaults.resources.pool, per stage', test: RESOURCES },
  'stages[].resources.nodes': { honoured: 'as defaults.resources.nodes, per stage', test: RESOURCES },
  'stages[].resources.gpus_per_node': {
    honoured: 'as defaults.resources.gpus_per_node, per stage',
    test: RESOURCES,
  },
  'stages[].resources.gpu_type': { honoured: 'as defaults.resources.gpu_type, per stage', test: BAD },
  'stages[].resources.cpus_per_node': {
    honoured: 'as defaults.resources.cpus_per_node, per stage',
    test: 'test/activities/thread-env.test.ts::cpus_per_node sets the threads',
  },
  'stages[].resources.procs_per_node': {
    honoured: 'as defaults.resources.procs_per_node, per stage',
    test: PPN + 'Slurm and Kubernetes render it as the processes per node',
  },
  'stages[].resources.memory_per_node': {
    honoured: 'as defaults.resources.memory_per_node, per stage',
    test: SLURM,
  },
  'stages[].retry.max_attempts': {
    honoured: 'as defaults.retry, per stage',
    test: 'test/config/config.test.ts::a stage override wins over defaults',
  },
  'stages[].retry.initial_interval': {
    honoured: 'as defaults.retry, per stage',
    test: 'test/config/config.test.ts::a stage override wins over defaults',
  },
  'stages[].retry.backoff': {
    honoured: 'as defaults.retry, per stage',
    test: 'test/config/config.test.ts::a stage override wins over defaults',
  },
  'stages[].retry.max_interval': {
    honoured: 'as defaults.retry, per stage',
    test: 'test/config/config.test.ts::a stage override wins over defaults',
  },
  'stages[].heartbeat_timeout': {
    honoured: 'as defaults.heartbeat_timeout, per stage',
    test: 'test/config/config.test.ts::a stage override wins over defaults',
  },
  'stages[].start_to_close_timeout': {
    honoured: 'as defaults.start_to_close_timeout, per stage',
    test: 'test/config/config.test.ts::defaults are filled in one place',
  },
  'stages[].gates[].metric': {
    honoured: "stageWorkflow's gates",
    test: 'test/pipeline/failures.test.ts::bad input fails the pipeline at once',
  },
  'stages[].gates[].min': { honoured: "stageWorkflow's gates", test: PIPE },
  'stages[].gates[].max': { honoured: "stageWorkflow's gates", test: PIPE },
  'stages[].packing.mode': {
    honoured: 'data.py make_packer, rl.py/rft.py trie or flat',
    test: 'trainer/tests/test_job.py::test_trie_sft_step_equals_flat_step',
  },
  'stages[].packing.max_tokens': {
    honoured: 'trie packer token budget',
    test: 'trainer/tests/test_trie_exact.py::test_partitioning_happens_and_stays_exact',
  },
  'stages[].rollout.group_size': {
    honoured: 'rollout manager groups (src/dataplane/rollout.ts)',
    test: RL_RESUME,
  },
  'stages[].rollout.concurrency': { honoured: 'rollout manager sessions in flight', test: RL_RESUME },
  'stages[].rollout.batch_groups': { honoured: 'groups per training batch', test: RL_RESUME },
  'stages[].rollout.max_turns': {
    honoured: 'agent --max-turns',
    test: 'trainer/tests/test_agent.py::test_stops_at_max_turns',
  },
  'stages[].rollout.max_new_tokens': { honoured: 'agent --max-tokens per turn', test: RL_RESUME },
  'stages[].rollout.temperature': {
    honoured: 'agent sampling temperature',
    test: 'trainer/tests/test_agent.py::test_against_the_real_inference_server',
  },
  'stages[].rollout.top_p': {
    honoured: 'agent sampling top_p and the nucleus log-probs (the rlobjective helper wires it)',
    test: `${OBJECTIVE}test_engine_samples_only_from_the_nucleus`,
  },
  'stages[].rollout.max_staleness': { honoured: 'rollout manager admission', test: RL_RESUME },
  'stages[].rollout.session_idle_timeout': {
    honoured: 'src/rl/driver.ts sessionIdleMs',
    test: 'test/dataplane/driver.test.ts::session idle timeout',
  },
  'stages[].rollout.token_in_token_out': { rejected: 'nothing reads it', test: BAD },
  'stages[].rollout.inference.backend': {
    honoured: 'rl/rollouts.py start_engine (local, vllm; sglang rejected until implemented)',
    test: 'test/rl/vllm-pipeline.test.ts::RFT and RL on vLLM through the pipeline',
  },
  'stages[].rollout.inference.servers': {
    honoured:
      "the driver starts that many engines (src/dataplane/fleet.ts), vLLM's each on gpus_per_node / servers GPUs",
    test: 'trainer/tests/test_rl_fleet.py::test_kill9_of_one_of_two_engines_mid_stage',
  },
  'stages[].rollout.inference.colocated': {
    honoured: 'engines on train-tagged resources, taken back while the trainer trains',
    test: 'trainer/tests/test_rl_fleet.py::test_tag_scheduling_takes_colocated_engines_back_while_training',
  },
  'stages[].rollout.sandbox.timeout': {
    honoured: 'agent --timeout of each sandboxed run',
    test: 'trainer/tests/test_sandbox.py::test_an_endless_loop_is_killed_at_the_timeout',
  },
  'stages[].rollout.agent.command': {
    honoured: 'agent worker --byo: the program run per episode (trainer/trainflow_trainer/agent/byo.py)',
    test: BYO,
  },
  'stages[].rollout.agent.env': { honoured: 'the agent program environment (agent/byo.py)', test: BYO },
  'stages[].rollout.agent.timeout': {
    honoured: "the agent program's sandbox timeout (agent/byo.py)",
    test: BYO,
  },
  'stages[].rollout.sandbox.memory': { rejected: "not passed to the agent's sandbox", test: BAD },
  'stages[].rollout.sandbox.max_processes': { rejected: "not passed to the agent's sandbox", test: BAD },
  'stages[].sampling.strategy': {
    honoured: 'src/sampling/sampler.ts',
    test: `${SAMPLER}difficulty-aware sampling wastes fewer groups than uniform`,
  },
  'stages[].sampling.exploration_bonus': {
    honoured: 'src/sampling/sampler.ts weights',
    test: `${SAMPLER}weights favour middle pass rates`,
  },
  'stages[].sampling.filter_all_equal': {
    honoured: 'src/sampling/sampler.ts',
    test: `${SAMPLER}all-equal groups are dropped`,
  },
  'stages[].sampling.recheck_every': {
    honoured: 'src/sampling/sampler.ts',
    test: `${SAMPLER}all-equal groups are dropped`,
  },
  'stages[].sampling.stats_uri': {
    honoured: 'rollouts.py stats_uri',
    test: 'test/sampling/store.test.ts::a sampler carries its statistics across stages',
  },
  'stages[].algorithm.name': {
    honoured: 'the RL objective preset (src/config/algorithm.ts resolves it; rl/objective.py)',
    test: `${OBJECTIVE}test_grpo_and_dapo_presets_resolve_to_their_documented_losses`,
  },
  'stages[].algorithm.clip_low': {
    honoured: 'rl.py LossSpec eps_low',
    test: 'trainer/tests/test_trie_exact.py::test_random_batches_exercise_sharing_and_clipping',
  },
  'stages[].algorithm.clip_high': {
    honoured: 'rl.py LossSpec eps_high',
    test: 'trainer/tests/test_trie_exact.py::test_random_batches_exercise_sharing_and_clipping',
  },
  'stages[].algorithm.loss_agg': {
    honoured: 'rl.py LossSpec aggregation',
    test: 'trainer/tests/test_trie_exact.py::test_trie_equals_flat_float64',
  },
  'stages[].algorithm.kl_coef': {
    honoured: 'rl.py reference model and k3 KL',
    test: 'trainer/tests/test_trie_exact.py::test_trie_equals_flat_float64',
  },
  'stages[].algorithm.entropy_coef': {
    honoured: 'rl.py LossSpec entropy bonus',
    test: 'trainer/tests/test_trie_exact.py::test_trie_equals_flat_float64',
  },
  'stages[].algorithm.advantage_scaling': {
    honoured: 'rl/batch.py scaling',
    test: 'trainer/tests/test_rl.py::test_advantage_scaling_difficulty_and_entropy',
  },
  'stages[].algorithm.normalize_std': {
    honoured: 'rl/batch.py group advantages',
    test: 'test/sampling/advantages.test.ts::group advantages are centred',
  },
  'stages[].algorithm.decoupled': {
    honoured: 'rl/objective.py: the decoupled PPO clip (proximal policy) and behaviour weight',
    test: `${OBJECTIVE}test_every_algorithm_field_changes_the_update`,
  },
  'stages[].algorithm.behav_weight_cap': {
    honoured: 'rl/objective.py: truncation of the behaviour weight (decoupled only; rejected otherwise)',
    test: `${OBJECTIVE}test_every_algorithm_field_changes_the_update`,
  },
  'stages[].algorithm.minibatches': {
    honoured: 'rl/objective.py: optimizer steps per batch',
    test: `${OBJECTIVE}test_every_algorithm_field_changes_the_update`,
  },
  'stages[].algorithm.kl_reference': {
    honoured: 'rl/reference.py: the fixed KL reference checkpoint (rejected with kl_coef 0)',
    test: `${OBJECTIVE}test_kl_reference_changes_the_update`,
  },
  'stages[].sampling.all_equal_tolerance': {
    honoured: 'src/sampling/sampler.ts and rl/batch.py: near-equal rewards carry no signal',
    test: `${SAMPLER}rewards equal within all_equal_tolerance count as all equal`,
  },
  'stages[].eval.samples': {
    honoured: 'stages/eval.py: samples per task (the data plane group size of an eval stage)',
    test: 'trainer/tests/test_eval_stage.py::test_eval_stage_reports_pass_at_k_of_its_samples',
  },
  'stages[].eval.pass_k': {
    honoured: 'stages/eval.py: the pass@k metrics reported (unbiased estimator)',
    test: 'trainer/tests/test_eval_stage.py::test_eval_stage_reports_pass_at_k_of_its_samples',
  },
  'stages[].rft.keep': {
    honoured: 'rft.py select',
    test: 'trainer/tests/test_rl.py::test_rft_keeps_passing_or_top_rollouts',
  },
  'stages[].rft.top_fraction': {
    honoured: 'rft.py select',
    test: 'trainer/tests/test_rl.py::test_rft_keeps_passing_or_top_rollouts',
  },
  'stages[].rft.rounds': { rejected: 'RFT runs one round', test: BAD },
  'stages[].job.command': { honoured: 'the job activity runs it instead of the trainer', test: PIPE },
  'stages[].job.env': { honoured: "the job's environment", test: PIPE },

  'schedule.cron': {
    honoured: 'Temporal schedule spec (src/pipeline/schedules.ts)',
    test: 'test/pipeline/schedule.test.ts::a schedule triggered by hand',
  },
  'schedule.overlap': {
    honoured: 'Temporal schedule overlap policy',
    test: 'test/pipeline/schedule.test.ts::a schedule triggered by hand',
  },
  'schedule.pause_on_failure': {
    honoured: 'Temporal schedule pauseOnFailure',
    test: 'test/pipeline/schedule.test.ts::a schedule triggered by hand',
  },
  'schedule.timezone': { honoured: 'Temporal schedule time zone', test: BAD },

  'promotion.stage': {
    honoured: 'src/pipeline/promotion.ts: the eval stage whose metric decides a run is promoted',
    test: `${PROMOTION}a retrain whose eval is worse than the promoted run is not promoted`,
  },
  'promotion.metric': {
    honoured: 'src/pipeline/promotion.ts: the metric compared with the promoted run',
    test: `${PROMOTION}a retrain whose eval is worse than the promoted run is not promoted`,
  },
  'promotion.min_improvement': {
    honoured: 'src/pipeline/promotion.ts: by how much a run must beat the promoted one',
    test: `${PROMOTION}a retrain whose eval is worse than the promoted run is not promoted`,
  },

  'tracking.tensorboard': {
    honoured: 'tracking.py: TensorBoard event files next to the checkpoints, continued across resumes',
    test: `${TRACKING}test_resumed_attempt_continues_the_curve_without_duplicate_steps`,
  },
  'tracking.mlflow.tracking_uri': {
    honoured: 'tracking.py: the MLflow server the stages log to',
    test: `${TRACKING}test_mlflow_pipeline_run_with_stage_children`,
  },
  'tracking.mlflow.experiment': {
    honoured: 'tracking.py: the MLflow experiment of the pipeline runs',
    test: `${TRACKING}test_mlflow_pipeline_run_with_stage_children`,
  },
  'tracking.wandb.project': {
    honoured: 'tracking.py: wandb.init(project=)',
    test: `${TRACKING}test_wandb_offline_run_folder_is_written_to_storage_and_readable`,
  },
  'tracking.wandb.entity': {
    honoured: 'tracking.py: wandb.init(entity=)',
    test: `${TRACKING}test_wandb_offline`,
  },
  'tracking.wandb.mode': {
    honoured: 'tracking.py: offline runs kept in storage, online ones sent to W&B',
    test: `${TRACKING}test_wandb_offline_run_folder_is_written_to_storage_and_readable`,
  },
};
