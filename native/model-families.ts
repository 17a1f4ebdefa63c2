/**
 * The model families a checkpoint folder may hold, told apart by `config.json`'s `architectures`
 * and `model_type`, and what each changes in the Llama 3 forward pass:
 * - `llama` (LlamaForCausalLM; Llama 3.x, 3.2 with tied embeddings and `llama3` RoPE scaling);
 * - `mistral` (MistralForCausalLM): the Llama forward pass with its own config; a sliding window
 *   shorter than the context is refused (`sliding_window` null is the common case);
 * - `qwen2` (Qwen2ForCausalLM; Qwen2 and Qwen2.5): q/k/v projections carry biases;
 * - `qwen3` (Qwen3ForCausalLM): RMSNorm of each q and k head before RoPE (`q_norm`, `k_norm`),
 *   no biases; `head_dim` independent of hidden / heads.
 * The family fields are checked with a zod schema; an error is BAD_CONFIG naming the field.
 */
import { z } from 'zod';
import { MicroserveError } from '../common/errors.ts';

/** A supported family (the `model_type` of its config). */
export type ModelFamily = 'llama' | 'mistral' | 'qwen2' | 'qwen3';

/** What a family changes in the forward pass (ModelConfig fields). */
export interface FamilyTraits {
  family: ModelFamily;
  /** q/k/v projections have biases (`self_attn.{q,k,v}_proj.bias`). */
  qkvBias: boolean;
  /** Per-head RMSNorm of q and k before RoPE (`self_attn.{q,k}_norm.weight`, (headDim,)). */
  qkNorm: boolean;
}

const ARCHITECTURES: Record<string, ModelFamily> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};
const FAMILIES = Object.values(ARCHITECTURES);

const falseOnly = (why: string) => z.boolean().optional().refine((v) => v !== true, why);

/** The family-specific fields of config.json (everything else: config.ts). */
const FamilyFields = z.object({
  architectures: z.array(z.string()).min(1).optional(),
  model_type: z.string().optional(),
  hidden_act: z.literal('silu', { message: "is not supported (only 'silu')" }).optional(),
  mlp_bias: falseOnly('true is not supported'),
  attention_bias: z.boolean().optional(),
  sliding_window: z.number().int().positive().nullable().optional(),
  use_sliding_window: z.boolean().optional(),
  max_position_embeddings: z.unknown().optional(),
});

function bad(field: string, why: string): never {
  throw new MicroserveError('BAD_CONFIG', `config.json: ${field} ${why}`, { field });
}

/** The family of a parsed config.json object and its traits; BAD_CONFIG naming the field otherwise. */
export function familyOf(c: Record<string, unknown>): FamilyTraits {
  const r = FamilyFields.safeParse(c);
  if (!r.success) {
    const issue = r.error.issues[0];
    bad(issue.path.join('.') || '(root)', issue.message);
  }
  const f = r.data;
  const known = Object.keys(ARCHITECTURES).join(', ');
  const arch = f.architectures?.find((a) => a in ARCHITECTURES);
  if (f.architectures && !arch) bad('architectures', `${JSON.stringify(f.architectures)} names no supported architecture (supported: ${known})`);
  const byArch = arch ? ARCHITECTURES[arch] : undefined;
  const type = f.model_type;
  if (type !== undefined && !FAMILIES.includes(type as ModelFamily)) {
    bad('model_type', `'${type}' is not supported (supported: ${FAMILIES.join(', ')}; architectures ${known})`);
  }
  if (byArch && type !== undefined && type !== byArch) bad('model_type', `'${type}' does not match architectures ${arch} (model_type '${byArch}')`);
  const family = byArch ?? (type as ModelFamily | undefined) ?? 'llama';

  // A sliding window no shorter than the context attends like full attention: accepted.
  const maxPos = typeof f.max_position_embeddings === 'number' ? f.max_position_embeddings : Infinity;
  const window = f.sliding_window ?? null;
  const windowUsed = family === 'qwen2' || family === 'qwen3' ? f.use_sliding_window === true : family === 'mistral';
  if (windowUsed && window !== null && window < maxPos) {
    bad('sliding_window', `${window} is shorter than max_position_embeddings (${maxPos}): sliding-window attention is not supported`);
  }
  if (windowUsed && window === null && (family === 'qwen2' || family === 'qwen3')) bad('use_sliding_window', 'true without sliding_window');
  // Llama, Mistral and Qwen3 put attention_bias on o_proj too; Qwen2 has q/k/v biases always.
  if (family !== 'qwen2' && f.attention_bias === true) bad('attention_bias', `true is not supported for ${family}`);
  return { family, qkvBias: family === 'qwen2', qkNorm: family === 'qwen3' };
}
