// What the trainer's model code accepts, known here so `validate` can check `model.init` before a run:
// the presets and the fields of its ModelConfig (trainer/trainflow_trainer/model.py: `PRESETS`, `ModelConfig`)
// and the special tokens a tokenizer must hold (trainer/trainflow_trainer/tokenizer.py: `SPECIAL_TOKENS`).
// The Python definitions stay the source of truth; test/config/trainer-facts.test.ts runs the trainer's Python
// and fails when these copies and model.py/tokenizer.py disagree.

/** One HF config field of ModelConfig with the type `preset(**overrides)` expects. */
export type ModelField = 'int' | 'float' | 'bool';

/** ModelConfig's fields, in model.py's order: the keys `model.init.overrides` may set. */
export const MODEL_CONFIG_FIELDS: Record<string, ModelField> = {
  vocab_size: 'int',
  hidden_size: 'int',
  intermediate_size: 'int',
  num_hidden_layers: 'int',
  num_attention_heads: 'int',
  num_key_value_heads: 'int',
  max_position_embeddings: 'int',
  rope_theta: 'float',
  rms_norm_eps: 'float',
  tie_word_embeddings: 'bool',
  attention_bias: 'bool',
  head_dim: 'int',
  qk_norm: 'bool',
  rope_scaling_factor: 'float',
  rope_low_freq_factor: 'float',
  rope_high_freq_factor: 'float',
  rope_original_max_position_embeddings: 'int',
};

export type ModelShape = {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  max_position_embeddings: number;
  rope_theta: number;
  rms_norm_eps: number;
  tie_word_embeddings: boolean;
  attention_bias: boolean;
  head_dim: number;
  qk_norm: boolean;
  rope_scaling_factor: number;
  rope_low_freq_factor: number;
  rope_high_freq_factor: number;
  rope_original_max_position_embeddings: number;
};

const COMMON = {
  rope_theta: 10000,
  rms_norm_eps: 1e-6,
  tie_word_embeddings: true,
  attention_bias: true,
  head_dim: 0,
  qk_norm: false,
  rope_scaling_factor: 1,
  rope_low_freq_factor: 1,
  rope_high_freq_factor: 4,
  rope_original_max_position_embeddings: 8192,
};

/** model.py's PRESETS (every field, defaults included). */
export const TRAINER_PRESETS = {
  tiny: {
    ...COMMON,
    vocab_size: 4096,
    hidden_size: 128,
    intermediate_size: 384,
    num_hidden_layers: 4,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    max_position_embeddings: 2048,
  },
  small: {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 512,
    intermediate_size: 1408,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    max_position_embeddings: 4096,
  },
  '1b': {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 8192,
    rope_theta: 500000,
  },
} satisfies Record<string, ModelShape>;

/** The fields a config.json must have (model.py `ModelConfig.from_hf_dict`), and the model types it reads. */
export const HF_REQUIRED_FIELDS = [
  'vocab_size',
  'hidden_size',
  'intermediate_size',
  'num_hidden_layers',
  'num_attention_heads',
] as const;
/** model.py `ARCHITECTURES`: the families the trainer implements, model_type → config.json `architectures`. */
export const HF_ARCHITECTURES: Record<string, string> = {
  qwen2: 'Qwen2ForCausalLM',
  qwen3: 'Qwen3ForCausalLM',
  llama: 'LlamaForCausalLM',
};
/** model.py `ROPE_TYPES`: the rope_parameters / rope_scaling types it implements. */
export const HF_ROPE_TYPES = ['default', 'llama3'] as const;

/** model.py `supported_models()`: the phrase every refusal of a checkpoint's family ends with. */
export const SUPPORTED_MODELS = Object.entries(HF_ARCHITECTURES)
  .map(([type, arch]) => `${arch} (model_type ${type})`)
  .join(', ');

/** model.py `check_supported` and `_rope_from_hf`: why a config.json's family is refused, or undefined. */
export function hfFamilyProblem(cfg: Record<string, unknown>): string | undefined {
  const type = cfg.model_type ?? 'qwen2';
  if (typeof type !== 'string' || !(type in HF_ARCHITECTURES))
    return `unsupported model_type ${JSON.stringify(type)} (supported: ${SUPPORTED_MODELS})`;
  const archs = cfg.architectures;
  if (archs !== undefined && JSON.stringify(archs) !== JSON.stringify([HF_ARCHITECTURES[type]]))
    return `unsupported architectures ${JSON.stringify(archs)} (supported: ${SUPPORTED_MODELS})`;
  const layerTypes = Array.isArray(cfg.layer_types) ? (cfg.layer_types as unknown[]) : [];
  const refused: [string, boolean, string][] = [
    ['hidden_act', (cfg.hidden_act ?? 'silu') !== 'silu', 'only silu (SwiGLU) is implemented'],
    [
      'attention_bias',
      type !== 'qwen2' && Boolean(cfg.attention_bias),
      `${type} with a q/k/v/o bias is not implemented`,
    ],
    ['mlp_bias', Boolean(cfg.mlp_bias), 'an MLP bias is not implemented'],
    [
      'use_sliding_window',
      Boolean(cfg.use_sliding_window) || layerTypes.includes('sliding_attention'),
      'sliding-window attention is not implemented',
    ],
  ];
  for (const [field, bad, why] of refused) if (bad) return `${field}: ${why}`;
  const rope = (cfg.rope_parameters ?? cfg.rope_scaling ?? {}) as Record<string, unknown>;
  const ropeType = rope.rope_type ?? rope.type ?? 'default';
  if (!(HF_ROPE_TYPES as readonly unknown[]).includes(ropeType))
    return `rope type ${JSON.stringify(ropeType)} is not implemented (supported: ${HF_ROPE_TYPES.join(', ')})`;
  return undefined;
}
/** max_position_embeddings when a config.json does not say (model.py `from_hf_dict`). */
export const HF_DEFAULT_MAX_POSITIONS = 4096;

/** tokenizer.py's SPECIAL_TOKENS: `Tokenizer(...)` refuses a tokenizer that lacks one. */
export const SPECIAL_TOKENS = [
  '<|endoftext|>',
  '<|im_start|>',
  '<|im_end|>',
  '<tool_call>',
  '</tool_call>',
  '<tool_response>',
  '</tool_response>',
  '<|pad|>',
] as const;

/** ModelConfig.__post_init__'s checks: the reasons a shape is refused, empty when it is fine. */
export function shapeProblems(
  s: Pick<ModelShape, 'hidden_size' | 'num_attention_heads' | 'num_key_value_heads'> &
    Partial<
      Pick<
        ModelShape,
        | 'head_dim'
        | 'qk_norm'
        | 'attention_bias'
        | 'rope_scaling_factor'
        | 'rope_low_freq_factor'
        | 'rope_high_freq_factor'
      >
    >,
) {
  const out: string[] = [];
  const headDim = s.head_dim ?? 0;
  if (headDim === 0 && s.hidden_size % s.num_attention_heads !== 0)
    out.push(
      `hidden_size ${s.hidden_size} is not a multiple of num_attention_heads ${s.num_attention_heads}`,
    );
  else if ((headDim || s.hidden_size / s.num_attention_heads) % 2 !== 0)
    out.push('head_dim must be even for rotary embeddings');
  if (s.qk_norm === true && s.attention_bias === true)
    out.push('qk_norm (Qwen3) with attention_bias is not a supported family: set one of them');
  if ((s.rope_scaling_factor ?? 1) !== 1 && (s.rope_high_freq_factor ?? 4) <= (s.rope_low_freq_factor ?? 1))
    out.push('rope_high_freq_factor must exceed rope_low_freq_factor');
  if (s.num_attention_heads % s.num_key_value_heads !== 0)
    out.push(
      `num_attention_heads ${s.num_attention_heads} is not a multiple of num_key_value_heads ${s.num_key_value_heads}`,
    );
  return out;
}
