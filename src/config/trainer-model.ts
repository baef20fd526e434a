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
};

const COMMON = { rope_theta: 10000, rms_norm_eps: 1e-6, tie_word_embeddings: true, attention_bias: true };

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
export const HF_MODEL_TYPES = ['qwen2', 'llama'] as const;
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
  s: Pick<ModelShape, 'hidden_size' | 'num_attention_heads' | 'num_key_value_heads'>,
) {
  const out: string[] = [];
  if (s.hidden_size % s.num_attention_heads !== 0)
    out.push(
      `hidden_size ${s.hidden_size} is not a multiple of num_attention_heads ${s.num_attention_heads}`,
    );
  else if ((s.hidden_size / s.num_attention_heads) % 2 !== 0)
    out.push('head_dim (hidden_size / num_attention_heads) must be even for rotary embeddings');
  if (s.num_attention_heads % s.num_key_value_heads !== 0)
    out.push(
      `num_attention_heads ${s.num_attention_heads} is not a multiple of num_key_value_heads ${s.num_key_value_heads}`,
    );
  return out;
}
