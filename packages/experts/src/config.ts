/**
 * Configuration of expert FFNs, shared experts, the dense baseline and the MoE layer, with defaults
 * and validation.
 *
 * Shape letters: D model width, E routed experts, F expert hidden width, K experts per token.
 */
import type { RouterConfig } from '@switchyard/routing';
import { checkInt, checkNumber, checkOneOf, invalidArgument } from '@switchyard/tensor';

/**
 * Expert FFN kind. `swiglu`: `(silu(x W1) * (x W3)) W2` (Mixtral: w1 gate, w3 up, w2 down);
 * `gelu`: `gelu(x W1) W2` (exact erf GELU); `relu`: `relu(x W1) W2`.
 */
export type ExpertActivation = 'swiglu' | 'gelu' | 'relu';

/** Every activation, in documentation order. */
export const EXPERT_ACTIVATIONS: readonly ExpertActivation[] = ['swiglu', 'gelu', 'relu'];

/**
 * How routed experts are computed. `dropless`: each expert's contiguous rows go through its own
 * products, no padding. `padded`: rows are laid out [E, C, D] with C rows per expert (the
 * capacity, or the largest count when routing is dropless) and each weight is one batched product.
 * `auto`: the faster of the two on the current backend (see {@link resolveComputeMode}).
 */
export type ComputeMode = 'dropless' | 'padded' | 'auto';

/** Every compute mode. */
export const COMPUTE_MODES: readonly ComputeMode[] = ['dropless', 'padded', 'auto'];

/** Routed experts: E FFNs whose weights are stacked per layer ([E, D, F] and [E, F, D]). */
export interface ExpertsConfig {
  /** Number of routed experts E (>= 1). */
  readonly numExperts: number;
  /** Model width D. */
  readonly dModel: number;
  /** Hidden width F of each expert; fine-grained experts (DeepSeekMoE) use a smaller F, see {@link fineGrainedExperts}. */
  readonly dFF: number;
  /** FFN kind. */
  readonly activation: ExpertActivation;
  /** Standard deviation of the normal weight initialisation. Default 0.02. */
  readonly initStd?: number;
}

/** Shared experts: always active for every token, added to the routed output (DeepSeekMoE, Qwen-MoE). */
export interface SharedExpertsConfig {
  /** Number of shared experts (0 disables them); they are computed as one FFN of hidden width count * dFF. */
  readonly count: number;
  /** Hidden width of each shared expert. */
  readonly dFF: number;
  /** Multiply the shared output by sigmoid(x Wg), Wg [D, 1] (Qwen-MoE's shared-expert gate). */
  readonly gate: boolean;
}

/** A dense FFN with the experts' interface, used as a baseline. */
export interface DenseFFNConfig {
  /** Model width D. */
  readonly dModel: number;
  /** Hidden width F. */
  readonly dFF: number;
  /** FFN kind. */
  readonly activation: ExpertActivation;
  /** Standard deviation of the normal weight initialisation. Default 0.02. */
  readonly initStd?: number;
}

/** One MoE layer: a router, routed experts and optional shared experts. */
export interface MoELayerConfig {
  /** Model width D; the router and the experts must use the same. */
  readonly dModel: number;
  /** Router config (see @switchyard/routing `createRouter`); its `seed` defaults to one drawn from the layer's Rng. */
  readonly router: RouterConfig;
  /** Routed experts; `numExperts` must equal the router's. */
  readonly experts: ExpertsConfig;
  /** Shared experts, none when absent. Their activation is the routed experts'. */
  readonly shared?: SharedExpertsConfig;
  /** How routed experts are computed. Default `auto`. */
  readonly computeMode?: ComputeMode;
}

/**
 * A small Mixtral-style expert set: 8 SwiGLU experts of width 512 on a 256-wide model.
 *
 * When to use: as a base to spread and override.
 *
 * @example
 * ```ts
 * const experts = new RoutedExperts({ ...defaultExpertsConfig, numExperts: 16 }, new Rng(0));
 * ```
 */
export const defaultExpertsConfig = {
  numExperts: 8,
  dModel: 256,
  dFF: 512,
  activation: 'swiglu',
  initStd: 0.02,
} as const satisfies ExpertsConfig;

/**
 * One ungated shared expert of width 512 (DeepSeekMoE style); set `gate: true` for Qwen-MoE's gate.
 *
 * @example
 * ```ts
 * const shared = { ...defaultSharedExpertsConfig, count: 2, dFF: 256 };
 * ```
 */
export const defaultSharedExpertsConfig = {
  count: 1,
  dFF: 512,
  gate: false,
} as const satisfies SharedExpertsConfig;

/**
 * A dense SwiGLU FFN with hidden 1024: the same active FLOPs as the default experts at K = 2.
 *
 * @example
 * ```ts
 * const ffn = new DenseFFN(defaultDenseFFNConfig, new Rng(0));
 * ```
 */
export const defaultDenseFFNConfig = {
  dModel: 256,
  dFF: 1024,
  activation: 'swiglu',
  initStd: 0.02,
} as const satisfies DenseFFNConfig;

/**
 * A Mixtral-style layer: softmax top-2 router over the default experts, dropless, no shared experts.
 *
 * @example
 * ```ts
 * const layer = new MoELayer(defaultMoELayerConfig, new Rng(0));
 * ```
 */
export const defaultMoELayerConfig = {
  dModel: 256,
  router: { type: 'topk', numExperts: 8, dModel: 256, k: 2 },
  experts: defaultExpertsConfig,
  computeMode: 'auto',
} as const satisfies MoELayerConfig;

/** A dense FFN config with defaults filled in. */
export type ResolvedDenseFFNConfig = Required<DenseFFNConfig>;

/** Validates a dense FFN config; throws a SwitchyardError naming the bad field. */
export function resolveDenseConfig(fn: string, config: DenseFFNConfig, prefix = ''): ResolvedDenseFFNConfig {
  if (config === null || typeof config !== 'object') {
    throw invalidArgument(fn, prefix ? prefix.slice(0, -1) : 'config', 'a config object', config);
  }
  return {
    dModel: checkInt(fn, `${prefix}dModel`, config.dModel, { min: 1 }),
    dFF: checkInt(fn, `${prefix}dFF`, config.dFF, { min: 1 }),
    activation: checkOneOf(fn, `${prefix}activation`, config.activation, EXPERT_ACTIVATIONS),
    initStd: checkNumber(fn, `${prefix}initStd`, config.initStd ?? defaultExpertsConfig.initStd, {
      min: 0,
      minExclusive: true,
    }),
  };
}

/** An expert config with defaults filled in. */
export type ResolvedExpertsConfig = Required<ExpertsConfig>;

/** Validates an experts config; throws a SwitchyardError naming the bad field. */
export function resolveExpertsConfig(fn: string, config: ExpertsConfig, prefix = ''): ResolvedExpertsConfig {
  if (config === null || typeof config !== 'object') {
    throw invalidArgument(fn, prefix ? prefix.slice(0, -1) : 'config', 'an ExpertsConfig object', config);
  }
  const numExperts = checkInt(fn, `${prefix}numExperts`, config.numExperts, { min: 1 });
  return { numExperts, ...resolveDenseConfig(fn, config, prefix) };
}

/** Validates a shared-experts config. */
export function resolveSharedConfig(
  fn: string,
  config: SharedExpertsConfig,
  prefix = 'shared.',
): SharedExpertsConfig {
  if (config === null || typeof config !== 'object') {
    throw invalidArgument(fn, prefix.slice(0, -1), 'a SharedExpertsConfig object', config);
  }
  const count = checkInt(fn, `${prefix}count`, config.count, { min: 0 });
  const dFF = checkInt(fn, `${prefix}dFF`, config.dFF, { min: 1 });
  if (typeof config.gate !== 'boolean') throw invalidArgument(fn, `${prefix}gate`, 'a boolean', config.gate);
  return { count, dFF, gate: config.gate };
}

/** Number of weight matrices of one FFN of this kind (3 for SwiGLU, else 2). */
export function matricesOf(activation: ExpertActivation): number {
  return activation === 'swiglu' ? 3 : 2;
}

/** Fine-grained segmentation of a coarse expert layout. */
export interface FineGrainedExperts {
  /** m * E experts. */
  readonly numExperts: number;
  /** F / m hidden units each. */
  readonly dFF: number;
  /** m * K experts per token. */
  readonly k: number;
}

/**
 * DeepSeekMoE fine-grained expert segmentation: splits each of E experts of width F into `m`
 * experts of width F / m and routes to m * K of them, keeping total and active parameters and
 * FLOPs per token while giving the router many more expert combinations.
 *
 * When to use: to derive the router `k` and the experts' `numExperts` and `dFF` from a coarse layout.
 *
 * @example
 * ```ts
 * fineGrainedExperts({ numExperts: 8, dFF: 1024, k: 2 }, 4); // { numExperts: 32, dFF: 256, k: 8 }
 * ```
 */
export function fineGrainedExperts(base: FineGrainedExperts, m: number): FineGrainedExperts {
  const fn = 'fineGrainedExperts';
  const E = checkInt(fn, 'base.numExperts', base?.numExperts, { min: 1 });
  const F = checkInt(fn, 'base.dFF', base?.dFF, { min: 1 });
  const K = checkInt(fn, 'base.k', base?.k, { min: 1, max: E });
  checkInt(fn, 'm', m, { min: 1 });
  if (F % m !== 0) throw invalidArgument(fn, 'm', `a divisor of base.dFF (${F})`, m);
  return { numExperts: E * m, dFF: F / m, k: K * m };
}
