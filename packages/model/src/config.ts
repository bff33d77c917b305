/**
 * Model configuration: the typed config with its defaults, validation (zod at file boundaries),
 * the per-layer MoE/dense pattern and the analytic cost (parameters, active parameters, FLOPs).
 *
 * Shape letters: V vocabulary, D model width, H query heads, G key/value heads, A head width,
 * F hidden width of a dense FFN or an expert, E routed experts, K experts per token, S sequence length.
 */
import type { RouterConfig } from '@switchyard/routing';
import { ROUTER_TYPES, resolveRouterConfig } from '@switchyard/routing';
import { describeValue, isSwitchyardError, SwitchyardError } from '@switchyard/tensor';
import { z } from 'zod';
import { formatZodError } from './internal/zod';

/** Activation of a feed-forward block: `swiglu` (gate w1, up w3, down w2; Llama/Mixtral), `gelu` or `relu` (two matrices). */
export type FFNActivation = 'swiglu' | 'gelu' | 'relu';

/** A router config without the fields the model fills in (`numExperts` from the experts, `dModel` from the model). */
export type ModelRouterConfig = RouterConfig extends infer R
  ? R extends unknown
    ? Omit<R, 'numExperts' | 'dModel'>
    : never
  : never;

/** Routed experts of every MoE layer. */
export interface ModelExpertsConfig {
  /** Number of routed experts E per MoE layer. */
  readonly numExperts: number;
  /** Hidden width F of each expert. */
  readonly dFF: number;
  /** Expert activation. */
  readonly activation: FFNActivation;
}

/** Always-on shared experts (DeepSeekMoE / Qwen-MoE style) added to the routed output. */
export interface ModelSharedExpertsConfig {
  /** Number of shared experts (merged into one FFN of width count * dFF). */
  readonly count: number;
  /** Hidden width of each shared expert. */
  readonly dFF: number;
  /** Scale the shared output by sigmoid(x w_gate) (Qwen-MoE) instead of adding it as is. */
  readonly gate: boolean;
}

/** Where MoE layers go and what they contain. */
export interface ModelMoEConfig {
  /** Layer i is an MoE layer when i >= firstDense and (i - firstDense) % every === 0 (1: every layer after the dense ones). */
  readonly every: number;
  /** Number of leading dense layers (DeepSeek's first_k_dense_replace); numLayers makes a dense model. */
  readonly firstDense: number;
  /** The router of every MoE layer (`numExperts` and `dModel` are filled in). */
  readonly router: ModelRouterConfig;
  /** The routed experts. */
  readonly experts: ModelExpertsConfig;
  /** Optional shared experts. */
  readonly shared?: ModelSharedExpertsConfig;
  /** Expert compute strategy passed to the MoE layer. */
  readonly computeMode?: 'dropless' | 'padded' | 'auto';
}

/** Configuration of a {@link MoETransformerLM}. */
export interface ModelConfig {
  /** Vocabulary size V (token ids in [0, V)). */
  readonly vocabSize: number;
  /** Model width D. */
  readonly dModel: number;
  /** Number of transformer blocks. */
  readonly numLayers: number;
  /** Query heads H; must divide dModel (head width dModel / numHeads, even for rotary embeddings). */
  readonly numHeads: number;
  /** Key/value heads G (grouped-query attention); must divide numHeads. numHeads gives plain multi-head attention. */
  readonly numKvHeads: number;
  /** Hidden width of the dense FFN in non-MoE layers. */
  readonly dFF: number;
  /** Activation of the dense FFN. */
  readonly activation: FFNActivation;
  /** Longest sequence (prompt + generated tokens) the model runs on. */
  readonly maxSeqLen: number;
  /** Rotary embedding base theta (inv_freq_i = theta^(-2i / headDim)). */
  readonly ropeTheta: number;
  /** Epsilon added to the mean square inside RMSNorm's square root. */
  readonly rmsNormEps: number;
  /** Share the token embedding with the LM head. */
  readonly tieEmbeddings: boolean;
  /** MoE layer placement and contents. */
  readonly moe: ModelMoEConfig;
  /** Standard deviation of the normal initialisation of embeddings and projections. */
  readonly initStd: number;
}

/** A partial {@link ModelConfig}: every field optional, nested objects merged over the defaults. */
export type ModelConfigInput = Partial<Omit<ModelConfig, 'moe'>> & {
  readonly moe?: Partial<Omit<ModelMoEConfig, 'router' | 'experts'>> & {
    readonly router?: Partial<ModelRouterConfig>;
    readonly experts?: Partial<ModelExpertsConfig>;
  };
};

/**
 * Default model configuration: the `small` preset (4 layers, width 128, 8 SwiGLU experts top-2).
 *
 * When to use: as the base of {@link defineModelConfig}, or to read a default.
 *
 * @example
 * ```ts
 * const cfg = { ...defaultModelConfig, numLayers: 6 };
 * ```
 */
export const defaultModelConfig: ModelConfig = {
  vocabSize: 4096,
  dModel: 128,
  numLayers: 4,
  numHeads: 4,
  numKvHeads: 2,
  dFF: 512,
  activation: 'swiglu',
  maxSeqLen: 128,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  tieEmbeddings: true,
  moe: {
    every: 1,
    firstDense: 0,
    router: { type: 'topk', k: 2 },
    experts: { numExperts: 8, dFF: 256, activation: 'swiglu' },
  },
  initStd: 0.02,
};

const int = (min: number) => z.number().int().min(min);
const positive = z.number().positive();
const activation = z.enum(['swiglu', 'gelu', 'relu']);

const routerSchema = z.strictObject({
  type: z.enum(ROUTER_TYPES as readonly string[] as [string, ...string[]]),
  k: int(1).optional(),
  capacityFactor: z.number().min(0).optional(),
  evalCapacityFactor: z.number().min(0).optional(),
  dropPolicy: z.enum(['position', 'probs']).optional(),
  evalRouting: z.enum(['batch', 'causal']).optional(),
  jitterEps: z.number().min(0).max(0.999).optional(),
  randomRoutingWarmup: z.number().min(0).max(1).optional(),
  init: z.enum(['normal', 'switch', 'zeros']).optional(),
  initStd: positive.optional(),
  initScale: positive.optional(),
  seed: z.number().int().optional(),
  normTopK: z.boolean().optional(),
  routeScale: positive.optional(),
  name: z.string().min(1).optional(),
  groupLimited: z.strictObject({ numGroups: int(1), groupTopK: int(1) }).optional(),
  evalSecondExpertThreshold: z.number().min(0).max(0.5).optional(),
  numGroups: int(1).optional(),
  groupK: int(1).optional(),
  assignment: z.enum(['round-robin', 'hash']).optional(),
  decideOn: z.enum(['host', 'device']).optional(),
});

/** The zod schema of a complete {@link ModelConfig} (unknown keys are errors). */
export const modelConfigSchema = z.strictObject({
  vocabSize: int(2),
  dModel: int(2),
  numLayers: int(1),
  numHeads: int(1),
  numKvHeads: int(1),
  dFF: int(1),
  activation,
  maxSeqLen: int(1),
  ropeTheta: positive,
  rmsNormEps: positive,
  tieEmbeddings: z.boolean(),
  moe: z.strictObject({
    every: int(1),
    firstDense: int(0),
    router: routerSchema,
    experts: z.strictObject({ numExperts: int(1), dFF: int(1), activation }),
    shared: z.strictObject({ count: int(1), dFF: int(1), gate: z.boolean() }).optional(),
    computeMode: z.enum(['dropless', 'padded', 'auto']).optional(),
  }),
  initStd: positive,
});

function configError(source: string, lines: string): SwitchyardError {
  return new SwitchyardError('CONFIG_INVALID', `${source} is not a valid model config:\n${lines}`);
}

/**
 * Validates a complete model config (e.g. parsed from config.json) and returns it typed. Reports
 * every problem as "path.to.key: expected ..., received ...", including cross-field rules
 * (heads divide the width, the router config is valid for the expert count).
 *
 * When to use: at every file or CLI boundary before building a model.
 *
 * @example
 * ```ts
 * const cfg = validateModelConfig(JSON.parse(text).switchyard.model, 'config.json');
 * ```
 */
export function validateModelConfig(raw: unknown, source = 'model config'): ModelConfig {
  const parsed = modelConfigSchema.safeParse(raw);
  if (!parsed.success) throw configError(source, formatZodError(parsed.error, raw));
  const c = parsed.data as unknown as ModelConfig;
  const problems: string[] = [];
  const bad = (path: string, expected: string, got: unknown) =>
    problems.push(`  ${path}: expected ${expected}, received ${describeValue(got)}`);
  if (c.dModel % c.numHeads !== 0) bad('numHeads', `a divisor of dModel (${c.dModel})`, c.numHeads);
  else if ((c.dModel / c.numHeads) % 2 !== 0)
    bad(
      'numHeads',
      `a value giving an even head width (dModel / numHeads) for rotary embeddings`,
      c.numHeads,
    );
  if (c.numHeads % c.numKvHeads !== 0)
    bad('numKvHeads', `a divisor of numHeads (${c.numHeads})`, c.numKvHeads);
  if (c.moe.firstDense > c.numLayers)
    bad('moe.firstDense', `an integer in [0, numLayers=${c.numLayers}]`, c.moe.firstDense);
  try {
    resolveRouterConfig({
      ...c.moe.router,
      numExperts: c.moe.experts.numExperts,
      dModel: c.dModel,
    } as RouterConfig);
  } catch (e) {
    if (!isSwitchyardError(e)) throw e;
    problems.push(`  moe.router: ${e.message}`);
  }
  if (problems.length > 0) throw configError(source, problems.join('\n'));
  return c;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Builds a complete, validated config from a partial one merged over {@link defaultModelConfig}
 * (or over `base`). Nested `moe`, `moe.router` and `moe.experts` objects are merged field by field;
 * a router with a different `type` replaces the base router.
 *
 * When to use: to write a config by naming only what differs from a default or a preset.
 *
 * @example
 * ```ts
 * const cfg = defineModelConfig({ numLayers: 2, moe: { experts: { numExperts: 4 } } });
 * ```
 */
export function defineModelConfig(
  input: ModelConfigInput = {},
  base: ModelConfig = defaultModelConfig,
): ModelConfig {
  if (!isPlainObject(input))
    throw configError(
      'defineModelConfig() input',
      `  (root): expected an object, received ${describeValue(input)}`,
    );
  const moeIn = (input.moe ?? {}) as Record<string, unknown>;
  const routerIn = (moeIn.router ?? {}) as Record<string, unknown>;
  const router =
    routerIn.type !== undefined && routerIn.type !== base.moe.router.type
      ? routerIn
      : { ...base.moe.router, ...routerIn };
  const merged = {
    ...base,
    ...input,
    moe: {
      ...base.moe,
      ...moeIn,
      router,
      experts: { ...base.moe.experts, ...((moeIn.experts ?? {}) as object) },
    },
  };
  return validateModelConfig(merged, 'defineModelConfig() input');
}

/**
 * True when layer `layer` (0-based) holds an MoE layer rather than a dense FFN.
 *
 * @example
 * ```ts
 * isMoELayer(cfg, 0); // false when cfg.moe.firstDense >= 1
 * ```
 */
export function isMoELayer(config: ModelConfig, layer: number): boolean {
  const { firstDense, every } = config.moe;
  return layer >= firstDense && (layer - firstDense) % every === 0;
}

/** Parameters and compute of a model config, from its shapes alone. */
export interface ModelCost {
  /** Every trainable parameter (the tied embedding counted once). */
  readonly numParams: number;
  /** Parameters a token uses: everything but the routed experts, plus K of them per MoE layer. */
  readonly activeParamsPerToken: number;
  /** Forward FLOPs per token (2 per multiply-add) at the given sequence length. */
  readonly flopsPerToken: number;
  /** Training FLOPs per token: forward + backward = 3 x forward. */
  readonly trainFlopsPerToken: number;
  /** Number of MoE layers. */
  readonly numMoELayers: number;
  /** Sequence length the attention FLOPs assume. */
  readonly seqLen: number;
}

function ffnMatrices(activation: FFNActivation): number {
  return activation === 'swiglu' ? 3 : 2;
}

/**
 * Parameters, active parameters and FLOPs per token of a config, without building the model.
 * Attention scores count the full S x S product (what the implementation computes); norms,
 * softmax and elementwise work are left out. The router counts D x E weights.
 *
 * When to use: to size a model before training (the presets report these figures).
 *
 * @example
 * ```ts
 * modelCost(presets.small).trainFlopsPerToken;
 * ```
 */
export function modelCost(config: ModelConfig, seqLen = config.maxSeqLen): ModelCost {
  const c = config;
  const A = c.dModel / c.numHeads;
  const D = c.dModel;
  const attn = D * c.numHeads * A * 2 + D * c.numKvHeads * A * 2;
  const attnScoreFlops = 4 * c.numHeads * A * seqLen;
  const norms = 2 * D;
  const dense = ffnMatrices(c.activation) * D * c.dFF;
  const { numExperts: E, dFF: F, activation } = c.moe.experts;
  const k = resolveRouterConfig({ ...c.moe.router, numExperts: E, dModel: D } as RouterConfig).k;
  const expert = ffnMatrices(activation) * D * F;
  const router = D * E;
  const shared = c.moe.shared
    ? ffnMatrices(activation) * D * c.moe.shared.count * c.moe.shared.dFF + (c.moe.shared.gate ? D : 0)
    : 0;
  let numParams = c.vocabSize * D * (c.tieEmbeddings ? 1 : 2) + D;
  let active = numParams;
  let flops = 2 * c.vocabSize * D;
  let numMoELayers = 0;
  for (let l = 0; l < c.numLayers; l++) {
    numParams += attn + norms;
    active += attn + norms;
    flops += 2 * attn + attnScoreFlops;
    if (isMoELayer(c, l)) {
      numMoELayers++;
      numParams += router + E * expert + shared;
      active += router + k * expert + shared;
      flops += 2 * (router + k * expert + shared);
    } else {
      numParams += dense;
      active += dense;
      flops += 2 * dense;
    }
  }
  return {
    numParams,
    activeParamsPerToken: active,
    flopsPerToken: flops,
    trainFlopsPerToken: 3 * flops,
    numMoELayers,
    seqLen,
  };
}
