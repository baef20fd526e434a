// The token-level records across the seam:
//   - the inference server's extensions to OpenAI responses (trainer/trainflow_trainer/serve/, read by the
//     proxy in src/dataplane/record.ts): per choice `token_ids` and `policy_versions`, at top level
//     `prompt_token_ids`. vLLM/SGLang send some of them (ADAPTERS.md), so every field is optional and the
//     proxy falls back (tokens from the log-probs' `token_id:N`, the versions it knows);
//   - the trajectory the proxy records per session (its token tree), and the group record the rollout manager
//     writes to the ledger and hands the trainer in a batch (src/dataplane/sessions.ts, rollout.ts).
import { z } from 'zod';

const tokenIds = () => z.array(z.number().int().nonnegative());

/**
 * The token fields of one choice (whole response or one SSE chunk), beside the OpenAI ones. The log-probs
 * are OpenAI's shape (logprobs.content[].token / token_logprobs, tokens written `token_id:N`).
 */
export const choiceTokensSchema = z
  .strictObject({
    token_ids: tokenIds().optional().describe('The generated token ids (of this chunk, when streamed).'),
    policy_versions: z
      .array(z.number().int().nonnegative())
      .optional()
      .describe('The policy version that sampled each generated token (one per token id).'),
  })
  .describe("The inference server's token extensions of one response choice.");
export type ChoiceTokens = z.output<typeof choiceTokensSchema>;

export const responseTokensSchema = z
  .strictObject({
    prompt_token_ids: tokenIds().optional().describe('The prompt as the server tokenised it.'),
  })
  .describe("The inference server's token extension of a response (or of its last SSE chunk).");
export type ResponseTokens = z.output<typeof responseTokensSchema>;

export interface TokenTreeNode {
  tokens: number[];
  logprobs: (number | null)[];
  versions: (number | null)[];
  children: TokenTreeNode[];
  turns: string[];
}

export const tokenTreeSchema: z.ZodType<TokenTreeNode> = z
  .strictObject({
    tokens: tokenIds(),
    logprobs: z.array(z.number().nullable()).describe('Behaviour log-prob per token (null: prompt token).'),
    versions: z.array(z.number().int().nullable()).describe('Policy version per token (null: prompt token).'),
    get children() {
      return z.array(tokenTreeSchema);
    },
    turns: z.array(z.string()).describe('Ids of the turns whose sequence ends exactly here.'),
  })
  .describe(
    "A session's token tree: its turns' sequences merged along shared prefixes (src/dataplane/tree.ts).",
  );

export const trajectorySchema = z
  .strictObject({
    trajectory_id: z.string(),
    session_id: z.string(),
    task_id: z.string(),
    group_id: z.string().nullable(),
    reward: z.number(),
    tests: z
      .record(z.string(), z.string())
      .optional()
      .describe(
        "The verifier's per-test outcomes (swe tasks: test id → passed | failed | …), when it ran named tests.",
      ),
    tree: tokenTreeSchema,
    turns: z.array(
      z.strictObject({
        id: z.string(),
        parent: z.string().nullable(),
        drift: z.boolean(),
        fixed: z.boolean(),
        finish_reason: z.string().nullable(),
      }),
    ),
    versions: z
      .strictObject({ min: z.number().int(), max: z.number().int() })
      .nullable()
      .describe('The policy versions that sampled its tokens.'),
    drift: z.strictObject({ detected: z.number().int(), fixed: z.number().int() }),
    meta: z.record(z.string(), z.unknown()),
    finished_at: z.string(),
  })
  .describe('One finished agent session as the proxy recorded it.');

export const groupRecordSchema = z
  .strictObject({
    kind: z.literal('group'),
    group_id: z.string(),
    task_id: z.string(),
    launch_version: z.number().int().nonnegative(),
    trajectories: z.array(trajectorySchema),
    filtered: z
      .string()
      .optional()
      .describe('Why the sampler filtered the group out: recorded, never trained.'),
  })
  .describe('One group of trajectories of one task (a ledger record).');
