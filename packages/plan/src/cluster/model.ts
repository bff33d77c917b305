/**
 * Model shapes for the cluster simulator, read as plain JSON (no @switchyard/model import): a
 * Switchyard model config, or a Hugging Face config.json of Mixtral, Qwen-MoE (qwen2_moe) or
 * DeepSeek-V3 (deepseek_v3, MLA attention); and their parameter counts and FLOPs per token.
 *
 * Letters: D model width, V vocabulary, L layers, H query heads, G key/value heads, d head width,
 * E routed experts, K experts per token, F expert hidden width, I dense FFN hidden width, S sequence.
 * MLA (DeepSeek): q_lora rq, kv_lora rkv, per-head dims nope, rope, v.
 *
 * FLOPs are per token, forward, matrix multiplies only (2 per multiply-add): a linear of p weights
 * costs 2p; causal attention scores and values cost 2·H·(d_qk + d_v)·S/2 (each token attends to S/2
 * keys on average). Backward costs twice the forward: half input gradients (Bi), half weight
 * gradients (W); attention's core backward is all Bi.
 */
import { invalidArgument, PlanError } from '../errors';

/** Attention shape: grouped-query (Mixtral, Qwen, Switchyard) or multi-head latent (DeepSeek). */
export type AttentionSpec =
  | {
      readonly kind: 'gqa';
      /** H query heads. */
      readonly heads: number;
      /** G key/value heads. */
      readonly kvHeads: number;
      /** d head width. */
      readonly headDim: number;
    }
  | {
      readonly kind: 'mla';
      readonly heads: number;
      /** rq: query low-rank width (0: no query compression). */
      readonly qLoraRank: number;
      /** rkv: key/value latent width. */
      readonly kvLoraRank: number;
      readonly qkNopeHeadDim: number;
      readonly qkRopeHeadDim: number;
      readonly vHeadDim: number;
    };

/** A model as the simulator sees it. */
export interface ModelSpec {
  /** Name for reports. */
  readonly name: string;
  /** L transformer layers. */
  readonly layers: number;
  /** Leading dense layers (DeepSeek's first_k_dense_replace); the rest are MoE layers. */
  readonly denseLayers: number;
  /** D. */
  readonly hidden: number;
  /** V. */
  readonly vocab: number;
  /** Input embedding and output head share weights. */
  readonly tiedEmbeddings: boolean;
  readonly attention: AttentionSpec;
  /** I: hidden width of the dense layers' SwiGLU FFN. */
  readonly denseIntermediate: number;
  /** E routed experts per MoE layer. */
  readonly experts: number;
  /** K routed experts per token. */
  readonly topK: number;
  /** F: hidden width of one routed expert (SwiGLU). */
  readonly expertIntermediate: number;
  /** Total hidden width of the always-on shared experts (0: none). */
  readonly sharedIntermediate: number;
  /** Node-limited routing: a token reaches experts on at most this many nodes (0: unlimited). */
  readonly maxNodesPerToken: number;
  /** Multi-token-prediction modules (DeepSeek-V3: 1): one extra MoE block, a 2D x D projection and the head each. */
  readonly mtpDepth: number;
}

/**
 * DeepSeek-V3 (arXiv 2412.19437, HF deepseek-ai/DeepSeek-V3 config.json): 61 layers (3 dense),
 * D 7168, MLA, 256 routed experts of width 2048, top-8 plus 1 shared, node-limited to 4 nodes,
 * vocabulary 129280, one MTP module.
 */
export const DEEPSEEK_V3: ModelSpec = {
  name: 'deepseek-v3',
  layers: 61,
  denseLayers: 3,
  hidden: 7168,
  vocab: 129280,
  tiedEmbeddings: false,
  attention: {
    kind: 'mla',
    heads: 128,
    qLoraRank: 1536,
    kvLoraRank: 512,
    qkNopeHeadDim: 128,
    qkRopeHeadDim: 64,
    vHeadDim: 128,
  },
  denseIntermediate: 18432,
  experts: 256,
  topK: 8,
  expertIntermediate: 2048,
  sharedIntermediate: 2048,
  maxNodesPerToken: 4,
  mtpDepth: 1,
};

/** Mixtral 8x7B (HF mistralai/Mixtral-8x7B-v0.1 config.json): 32 layers, D 4096, GQA 32/8, 8 experts of width 14336, top-2. */
export const MIXTRAL_8X7B: ModelSpec = {
  name: 'mixtral-8x7b',
  layers: 32,
  denseLayers: 0,
  hidden: 4096,
  vocab: 32000,
  tiedEmbeddings: false,
  attention: { kind: 'gqa', heads: 32, kvHeads: 8, headDim: 128 },
  denseIntermediate: 14336,
  experts: 8,
  topK: 2,
  expertIntermediate: 14336,
  sharedIntermediate: 0,
  maxNodesPerToken: 0,
  mtpDepth: 0,
};

/** The built-in model presets, by the name `--model` takes. */
export const MODEL_PRESETS: Readonly<Record<string, ModelSpec>> = {
  'deepseek-v3': DEEPSEEK_V3,
  'mixtral-8x7b': MIXTRAL_8X7B,
};

type Json = Record<string, unknown>;

function num(fn: string, json: Json, key: string, fallback?: number): number {
  const value = json[key] ?? fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw invalidArgument(fn, `config.${key}`, 'an integer >= 0', value);
  }
  return value;
}

/**
 * Reads a model config as JSON data: a Hugging Face config.json (`model_type` mixtral, qwen2_moe or
 * deepseek_v3) or a Switchyard model config (`dModel`, `numLayers`, `moe`, ...: a `ModelConfig` of
 * @switchyard/model, or a preset file holding one under `config`).
 *
 * When to use: for `switchyard-plan simulate --model config.json`; built-in names are in
 * {@link MODEL_PRESETS}.
 *
 * @example
 * ```ts
 * const spec = parseModelConfig({ model_type: 'mixtral', hidden_size: 4096, num_hidden_layers: 32,
 *   num_attention_heads: 32, num_key_value_heads: 8, intermediate_size: 14336, vocab_size: 32000,
 *   num_local_experts: 8, num_experts_per_tok: 2 });
 * spec.experts; // 8
 * ```
 */
export function parseModelConfig(json: unknown, name = 'model'): ModelSpec {
  const fn = 'parseModelConfig';
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw invalidArgument(fn, 'config', 'a JSON object', json);
  }
  // A Switchyard preset file (`presets/small.json`): { description, config: { dModel, ... } }.
  const wrapped = (json as Json).config;
  const c = (
    typeof wrapped === 'object' && wrapped !== null && typeof (wrapped as Json).dModel === 'number'
      ? wrapped
      : json
  ) as Json;
  const type = c.model_type;
  if (type === 'mixtral' || type === 'qwen2_moe') return fromHfGqa(fn, c, name, type);
  if (type === 'deepseek_v3' || type === 'deepseek_v2') return fromHfDeepSeek(fn, c, name);
  if (typeof c.dModel === 'number') return fromSwitchyard(fn, c, name);
  throw invalidArgument(
    fn,
    'config.model_type',
    'mixtral, qwen2_moe or deepseek_v3 (or a Switchyard config with dModel)',
    type,
  );
}

function fromHfGqa(fn: string, c: Json, name: string, type: 'mixtral' | 'qwen2_moe'): ModelSpec {
  const hidden = num(fn, c, 'hidden_size');
  const heads = num(fn, c, 'num_attention_heads');
  const qwen = type === 'qwen2_moe';
  const experts = num(fn, c, qwen ? 'num_experts' : 'num_local_experts');
  const sparseStep = qwen ? num(fn, c, 'decoder_sparse_step', 1) : 1;
  if (sparseStep !== 1)
    throw invalidArgument(fn, 'config.decoder_sparse_step', '1 (every layer MoE)', sparseStep);
  return {
    name,
    layers: num(fn, c, 'num_hidden_layers'),
    denseLayers: 0,
    hidden,
    vocab: num(fn, c, 'vocab_size'),
    tiedEmbeddings: c.tie_word_embeddings === true,
    attention: {
      kind: 'gqa',
      heads,
      kvHeads: num(fn, c, 'num_key_value_heads', heads),
      headDim: num(fn, c, 'head_dim', hidden / heads),
    },
    denseIntermediate: num(fn, c, 'intermediate_size'),
    experts,
    topK: num(fn, c, 'num_experts_per_tok'),
    expertIntermediate: num(fn, c, qwen ? 'moe_intermediate_size' : 'intermediate_size'),
    sharedIntermediate: qwen ? num(fn, c, 'shared_expert_intermediate_size', 0) : 0,
    maxNodesPerToken: 0,
    mtpDepth: 0,
  };
}

function fromHfDeepSeek(fn: string, c: Json, name: string): ModelSpec {
  const moeF = num(fn, c, 'moe_intermediate_size');
  const nGroup = num(fn, c, 'n_group', 1);
  const topkGroup = num(fn, c, 'topk_group', nGroup);
  return {
    name,
    layers: num(fn, c, 'num_hidden_layers'),
    denseLayers: num(fn, c, 'first_k_dense_replace', 0),
    hidden: num(fn, c, 'hidden_size'),
    vocab: num(fn, c, 'vocab_size'),
    tiedEmbeddings: c.tie_word_embeddings === true,
    attention: {
      kind: 'mla',
      heads: num(fn, c, 'num_attention_heads'),
      qLoraRank: c.q_lora_rank === null ? 0 : num(fn, c, 'q_lora_rank', 0),
      kvLoraRank: num(fn, c, 'kv_lora_rank'),
      qkNopeHeadDim: num(fn, c, 'qk_nope_head_dim'),
      qkRopeHeadDim: num(fn, c, 'qk_rope_head_dim'),
      vHeadDim: num(fn, c, 'v_head_dim'),
    },
    denseIntermediate: num(fn, c, 'intermediate_size'),
    experts: num(fn, c, 'n_routed_experts'),
    topK: num(fn, c, 'num_experts_per_tok'),
    expertIntermediate: moeF,
    sharedIntermediate: num(fn, c, 'n_shared_experts', 0) * moeF,
    // Group-limited routing: groups are placed one per node (DeepSeek-V3: 8 groups on 8 nodes), so
    // topk_group groups is a limit of topk_group nodes.
    maxNodesPerToken: nGroup > 1 ? topkGroup : 0,
    mtpDepth: num(fn, c, 'num_nextn_predict_layers', 0),
  };
}

function fromSwitchyard(fn: string, c: Json, name: string): ModelSpec {
  const moe = (c.moe ?? {}) as Json;
  const experts = (moe.experts ?? {}) as Json;
  const router = (moe.router ?? {}) as Json;
  const shared = moe.shared as Json | undefined;
  const every = num(fn, moe, 'every', 1);
  if (every !== 1)
    throw invalidArgument(fn, 'config.moe.every', '1 (every layer after the dense ones)', every);
  const hidden = num(fn, c, 'dModel');
  const heads = num(fn, c, 'numHeads');
  const groupLimited = router.groupLimited as Json | undefined;
  return {
    name,
    layers: num(fn, c, 'numLayers'),
    denseLayers: num(fn, moe, 'firstDense', 0),
    hidden,
    vocab: num(fn, c, 'vocabSize'),
    tiedEmbeddings: c.tieEmbeddings === true,
    attention: { kind: 'gqa', heads, kvHeads: num(fn, c, 'numKvHeads', heads), headDim: hidden / heads },
    denseIntermediate: num(fn, c, 'dFF'),
    experts: num(fn, experts, 'numExperts'),
    topK: num(fn, router, 'k', 1),
    expertIntermediate: num(fn, experts, 'dFF'),
    sharedIntermediate: shared === undefined ? 0 : num(fn, shared, 'count') * num(fn, shared, 'dFF'),
    maxNodesPerToken: groupLimited === undefined ? 0 : num(fn, groupLimited, 'groupTopK'),
    mtpDepth: 0,
  };
}

/**
 * Resolves `--model`: a preset name from {@link MODEL_PRESETS}, else throws (the CLI reads files).
 *
 * When to use: to turn a model name into a {@link ModelSpec}.
 *
 * @example
 * ```ts
 * modelPreset('deepseek-v3').experts; // 256
 * ```
 */
export function modelPreset(name: string): ModelSpec {
  const spec = MODEL_PRESETS[name];
  if (spec === undefined) {
    throw new PlanError(
      'INVALID_ARGUMENT',
      `\`model\` passed to modelPreset() must be one of ${Object.keys(MODEL_PRESETS).join(', ')} or a config.json path, got ${JSON.stringify(name)}`,
    );
  }
  return spec;
}

// ---------------------------------------------------------------------------------------------------
// Parameters and FLOPs

/** Weights of one layer's parts. */
export interface LayerParams {
  /** Attention projections (and norms inside attention). */
  readonly attention: number;
  /** Dense FFN (dense layers only). */
  readonly dense: number;
  /** Router (MoE layers). */
  readonly router: number;
  /** All routed experts of the layer. */
  readonly experts: number;
  /** Shared experts. */
  readonly shared: number;
  /** RMSNorm gains (2D). */
  readonly norms: number;
}

/** Attention projection weights (the norms inside MLA counted too). */
export function attentionParams(m: ModelSpec): number {
  const D = m.hidden;
  const a = m.attention;
  if (a.kind === 'gqa') return D * a.heads * a.headDim * 2 + D * a.kvHeads * a.headDim * 2;
  const dQk = a.qkNopeHeadDim + a.qkRopeHeadDim;
  const q = a.qLoraRank > 0 ? D * a.qLoraRank + a.qLoraRank + a.qLoraRank * a.heads * dQk : D * a.heads * dQk;
  const kvA = D * (a.kvLoraRank + a.qkRopeHeadDim) + a.kvLoraRank;
  const kvB = a.kvLoraRank * a.heads * (a.qkNopeHeadDim + a.vHeadDim);
  const o = a.heads * a.vHeadDim * D;
  return q + kvA + kvB + o;
}

/**
 * Weights of one layer by part (a dense layer when `moe` is false).
 *
 * When to use: for memory and gradient-sync sizes per stage, and in parameter counts.
 *
 * @example
 * ```ts
 * layerParams(MIXTRAL_8X7B, true).experts; // 8 * 3 * 4096 * 14336
 * ```
 */
export function layerParams(m: ModelSpec, moe: boolean): LayerParams {
  const D = m.hidden;
  return {
    attention: attentionParams(m),
    dense: moe ? 0 : 3 * D * m.denseIntermediate,
    router: moe ? D * m.experts : 0,
    experts: moe ? m.experts * 3 * D * m.expertIntermediate : 0,
    shared: moe ? 3 * D * m.sharedIntermediate : 0,
    norms: 2 * D,
  };
}

/** Total and per-token activated parameter counts. */
export interface ParamCounts {
  /** Every weight (embedding and head once each unless tied), MTP modules excluded. */
  readonly total: number;
  /** Weights one token uses: routed experts counted K of E, embedding and head included. */
  readonly active: number;
}

/**
 * Total and activated parameters (the main model; MTP modules excluded, as DeepSeek's 671B/37B).
 *
 * When to use: to check a config against its paper (DeepSeek-V3 671B/37B, Mixtral 46.7B/12.9B).
 *
 * @example
 * ```ts
 * paramCounts(DEEPSEEK_V3).total; // ~6.71e11
 * ```
 */
export function paramCounts(m: ModelSpec): ParamCounts {
  const moeLayers = m.layers - m.denseLayers;
  const dense = layerParams(m, false);
  const moe = layerParams(m, true);
  const sum = (p: LayerParams) => p.attention + p.dense + p.router + p.experts + p.shared + p.norms;
  const embed = m.vocab * m.hidden * (m.tiedEmbeddings ? 1 : 2) + m.hidden;
  const total = m.denseLayers * sum(dense) + moeLayers * sum(moe) + embed;
  const activeMoe = sum(moe) - moe.experts + (moe.experts * m.topK) / m.experts;
  const active = m.denseLayers * sum(dense) + moeLayers * activeMoe + embed;
  return { total, active };
}

/** Forward FLOPs per token of one layer's parts; `linear*` are GEMMs (FP8-eligible), `core` is attention's QK^T and AV. */
export interface LayerFlops {
  /** Attention projections. */
  readonly attnLinear: number;
  /** Causal attention scores and values (BF16). */
  readonly core: number;
  /** Router GEMM (kept in BF16, as DeepSeek-V3 keeps its gating). */
  readonly router: number;
  /** Dense FFN, or shared experts of an MoE layer. */
  readonly mlp: number;
  /** Routed experts (K per token). */
  readonly experts: number;
}

/**
 * Forward FLOPs per token of one layer at sequence length `seq` (see the file header).
 *
 * When to use: the simulator's per-op compute; `flopsPerToken` sums it over the model.
 *
 * @example
 * ```ts
 * layerFlops(MIXTRAL_8X7B, true, 4096).experts; // 2 * 2 * 3 * 4096 * 14336
 * ```
 */
export function layerFlops(m: ModelSpec, moe: boolean, seq: number): LayerFlops {
  const p = layerParams(m, moe);
  const a = m.attention;
  const perHead = a.kind === 'gqa' ? 2 * a.headDim : a.qkNopeHeadDim + a.qkRopeHeadDim + a.vHeadDim;
  return {
    attnLinear: 2 * p.attention,
    core: 2 * a.heads * perHead * (seq / 2),
    router: 2 * p.router,
    mlp: 2 * (p.dense + p.shared),
    experts: moe ? 2 * m.topK * 3 * m.hidden * m.expertIntermediate : 0,
  };
}

/** FLOPs of the output head (and of each MTP module's projection) per token, forward. */
export function headFlops(m: ModelSpec): number {
  return 2 * m.vocab * m.hidden;
}

/**
 * Model FLOPs per token for one training step (forward + backward = 3x forward), attention
 * included, MTP modules included, no recomputation.
 *
 * When to use: for MFU and GPU-hours per token.
 *
 * @example
 * ```ts
 * trainingFlopsPerToken(DEEPSEEK_V3, 4096); // ~2.6e11
 * ```
 */
export function trainingFlopsPerToken(m: ModelSpec, seq: number): number {
  const sum = (f: LayerFlops) => f.attnLinear + f.core + f.router + f.mlp + f.experts;
  const moeLayers = m.layers - m.denseLayers;
  const mtp = m.mtpDepth * (sum(layerFlops(m, true, seq)) + 2 * 2 * m.hidden * m.hidden + headFlops(m));
  const forward =
    m.denseLayers * sum(layerFlops(m, false, seq)) +
    moeLayers * sum(layerFlops(m, true, seq)) +
    headFlops(m) +
    mtp;
  return 3 * forward;
}
