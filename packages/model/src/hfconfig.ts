/**
 * config.json: the model config written with Hugging Face Mixtral's field names where they apply,
 * plus documented fields for what Mixtral lacks (dense layers, shared experts, other routers).
 */
import type { RouterConfig } from '@switchyard/routing';
import { resolveRouterConfig } from '@switchyard/routing';
import { describeValue, SwitchyardError } from '@switchyard/tensor';
import { z } from 'zod';
import { type FFNActivation, type ModelConfig, validateModelConfig } from './config';
import { formatZodError } from './internal/zod';

/** Version of the config.json / checkpoint layout this library writes. */
export const CHECKPOINT_FORMAT_VERSION = 1;

/**
 * Why a config is not exactly Hugging Face's Mixtral architecture (empty when it is): Mixtral is
 * a softmax top-k router renormalised over the K chosen, dropless, SwiGLU experts, an MoE layer in
 * every block, no shared experts and no selection bias.
 *
 * When to use: to know whether a checkpoint will load in transformers' MixtralForCausalLM.
 *
 * @example
 * ```ts
 * mixtralIncompatibilities(presets.small); // []
 * ```
 */
export function mixtralIncompatibilities(config: ModelConfig): string[] {
  const c = config;
  const out: string[] = [];
  const r = resolveRouterConfig({
    ...c.moe.router,
    numExperts: c.moe.experts.numExperts,
    dModel: c.dModel,
  } as RouterConfig);
  if (r.type !== 'topk') out.push(`router type is "${r.type}", Mixtral uses "topk"`);
  if (r.type === 'topk' && !r.normTopK) out.push('normTopK is off; Mixtral renormalises the top-k weights');
  if (r.groupLimited) out.push('group-limited routing');
  if (r.capacityFactor !== null || r.evalCapacityFactor !== null)
    out.push('a capacity factor (Mixtral is dropless)');
  if (r.routeScale !== 1) out.push(`routeScale ${r.routeScale} (Mixtral: 1)`);
  if (c.moe.experts.activation !== 'swiglu')
    out.push(`expert activation "${c.moe.experts.activation}" (Mixtral: swiglu)`);
  if (c.moe.shared && c.moe.shared.count > 0) out.push('shared experts');
  if (c.moe.firstDense !== 0 || c.moe.every !== 1)
    out.push('dense layers (Mixtral has an MoE layer in every block)');
  return out;
}

function hiddenAct(a: FFNActivation): string {
  return a === 'swiglu' ? 'silu' : a;
}

/**
 * The config.json object for a model config. `extras` marks what the checkpoint holds beyond the
 * config (selection biases make it non-Mixtral) and the tokenizer's end-of-text id.
 */
export function toHfConfig(
  config: ModelConfig,
  extras: { readonly hasSelectionBias: boolean; readonly eosTokenId: number | null },
): Record<string, unknown> {
  const c = config;
  const E = c.moe.experts.numExperts;
  const r = resolveRouterConfig({ ...c.moe.router, numExperts: E, dModel: c.dModel } as RouterConfig);
  const mixtral = mixtralIncompatibilities(c).length === 0 && !extras.hasSelectionBias;
  return {
    architectures: [mixtral ? 'MixtralForCausalLM' : 'SwitchyardMoEForCausalLM'],
    model_type: mixtral ? 'mixtral' : 'switchyard_moe',
    vocab_size: c.vocabSize,
    hidden_size: c.dModel,
    intermediate_size: c.moe.experts.dFF,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.dModel / c.numHeads,
    hidden_act: hiddenAct(c.moe.experts.activation),
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: c.tieEmbeddings,
    num_local_experts: E,
    num_experts_per_tok: r.k,
    router_jitter_noise: r.jitterEps,
    sliding_window: null,
    attention_dropout: 0,
    initializer_range: c.initStd,
    torch_dtype: 'float32',
    bos_token_id: null,
    eos_token_id: extras.eosTokenId,
    pad_token_id: null,
    use_cache: true,
    output_router_logits: false,
    switchyard_format_version: CHECKPOINT_FORMAT_VERSION,
    switchyard_router: c.moe.router,
    expert_activation: c.moe.experts.activation,
    first_k_dense_replace: c.moe.firstDense,
    moe_layer_freq: c.moe.every,
    dense_intermediate_size: c.dFF,
    dense_activation: c.activation,
    n_shared_experts: c.moe.shared?.count ?? 0,
    shared_expert_intermediate_size: c.moe.shared?.dFF ?? 0,
    shared_expert_gate: c.moe.shared?.gate ?? false,
    moe_compute_mode: c.moe.computeMode ?? null,
  };
}

const activation = z.enum(['swiglu', 'gelu', 'relu']);
const hfConfigSchema = z.strictObject({
  architectures: z.array(z.string()).optional(),
  model_type: z.string().optional(),
  vocab_size: z.number(),
  hidden_size: z.number(),
  intermediate_size: z.number(),
  num_hidden_layers: z.number(),
  num_attention_heads: z.number(),
  num_key_value_heads: z.number(),
  head_dim: z.number().nullable().optional(),
  hidden_act: z.string(),
  max_position_embeddings: z.number(),
  rms_norm_eps: z.number(),
  rope_theta: z.number(),
  rope_scaling: z.null().optional(),
  rope_parameters: z.unknown().optional(),
  tie_word_embeddings: z.boolean(),
  num_local_experts: z.number(),
  num_experts_per_tok: z.number(),
  router_jitter_noise: z.number().optional(),
  router_aux_loss_coef: z.number().optional(),
  sliding_window: z.null().optional(),
  attention_dropout: z.number().optional(),
  initializer_range: z.number(),
  torch_dtype: z.string().optional(),
  dtype: z.string().optional(),
  transformers_version: z.string().optional(),
  _name_or_path: z.string().optional(),
  bos_token_id: z.number().int().nullable().optional(),
  eos_token_id: z
    .union([z.number().int(), z.array(z.number().int())])
    .nullable()
    .optional(),
  pad_token_id: z.number().int().nullable().optional(),
  use_cache: z.boolean().optional(),
  output_router_logits: z.boolean().optional(),
  switchyard_format_version: z.literal(CHECKPOINT_FORMAT_VERSION),
  switchyard_router: z.record(z.string(), z.unknown()),
  expert_activation: activation,
  first_k_dense_replace: z.number(),
  moe_layer_freq: z.number(),
  dense_intermediate_size: z.number(),
  dense_activation: activation,
  n_shared_experts: z.number(),
  shared_expert_intermediate_size: z.number(),
  shared_expert_gate: z.boolean(),
  moe_compute_mode: z.enum(['dropless', 'padded', 'auto']).nullable(),
});

/**
 * Reads a model config from a config.json object written by {@link toHfConfig}, validating every
 * field; `source` names the file in error messages.
 */
export function fromHfConfig(raw: unknown, source = 'config.json'): ModelConfig {
  const parsed = hfConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `${source} is not a Switchyard model config:\n${formatZodError(parsed.error, raw)}`,
    );
  }
  const j = parsed.data;
  const shared =
    j.n_shared_experts > 0
      ? {
          shared: {
            count: j.n_shared_experts,
            dFF: j.shared_expert_intermediate_size,
            gate: j.shared_expert_gate,
          },
        }
      : {};
  const config = {
    vocabSize: j.vocab_size,
    dModel: j.hidden_size,
    numLayers: j.num_hidden_layers,
    numHeads: j.num_attention_heads,
    numKvHeads: j.num_key_value_heads,
    dFF: j.dense_intermediate_size,
    activation: j.dense_activation,
    maxSeqLen: j.max_position_embeddings,
    ropeTheta: j.rope_theta,
    rmsNormEps: j.rms_norm_eps,
    tieEmbeddings: j.tie_word_embeddings,
    moe: {
      every: j.moe_layer_freq,
      firstDense: j.first_k_dense_replace,
      router: j.switchyard_router,
      experts: { numExperts: j.num_local_experts, dFF: j.intermediate_size, activation: j.expert_activation },
      ...shared,
      ...(j.moe_compute_mode ? { computeMode: j.moe_compute_mode } : {}),
    },
    initStd: j.initializer_range,
  };
  const c = validateModelConfig(config, source);
  const problems: string[] = [];
  const expectField = (key: string, expected: unknown, got: unknown) => {
    if (got !== undefined && got !== null && got !== expected) {
      problems.push(
        `  ${key}: expected ${describeValue(expected)} (derived from the other fields), received ${describeValue(got)}`,
      );
    }
  };
  const r = resolveRouterConfig({
    ...c.moe.router,
    numExperts: c.moe.experts.numExperts,
    dModel: c.dModel,
  } as RouterConfig);
  expectField('num_experts_per_tok', r.k, j.num_experts_per_tok);
  expectField('head_dim', c.dModel / c.numHeads, j.head_dim);
  expectField('hidden_act', hiddenAct(c.moe.experts.activation), j.hidden_act);
  if (problems.length > 0) {
    throw new SwitchyardError('CONFIG_INVALID', `${source} is inconsistent:\n${problems.join('\n')}`);
  }
  return c;
}
