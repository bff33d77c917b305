/**
 * Router configuration: a discriminated union on `type`, the shared defaults, and validation.
 *
 * Shape letters: T tokens, D model width, E routed experts, K slots per token, G expert groups.
 */
import { checkInt, checkNumber, checkOneOf, invalidArgument } from '@switchyard/tensor';

/** Every router kind {@link createRouter} builds. */
export type RouterType =
  | 'topk'
  | 'switch'
  | 'gshard'
  | 'sigmoid'
  | 'expert-choice'
  | 'hierarchical'
  | 'balanced';

/**
 * All router kinds, in documentation order.
 *
 * When to use: to list or validate router names (CLI flags, config files).
 *
 * @example
 * ```ts
 * ROUTER_TYPES.includes('sigmoid'); // true
 * ```
 */
export const ROUTER_TYPES: readonly RouterType[] = [
  'topk',
  'switch',
  'gshard',
  'sigmoid',
  'expert-choice',
  'hierarchical',
  'balanced',
];

/**
 * Which assignments win when an expert is over capacity: `position` (earlier tokens in batch order
 * win; uses no information from later tokens) or `probs` (highest router score wins).
 */
export type DropPolicy = 'position' | 'probs';

/**
 * How a router routes at evaluation (training: false): `batch` decides as in training (expert choice:
 * each expert picks its tokens among the whole batch, later positions included); `causal` routes
 * each token from its own scores alone, so no position sees the future (expert choice: each token
 * takes its top round(c) experts by probability, c the evaluation capacity factor; token-choice
 * routers already route per token and are unchanged).
 */
export type EvalRouting = 'batch' | 'causal';

/**
 * Router weight initialisation: `normal` (normal with `initStd`), `switch` (truncated normal,
 * sigma = sqrt(initScale / D), Switch Transformer's 0.1 scale) or `zeros` (uniform routing at step 0).
 */
export type RouterInit = 'normal' | 'switch' | 'zeros';

/** Group-limited (node-limited) selection: keep the `groupTopK` best of `numGroups` groups, then pick top-K inside them. */
export interface GroupLimitedConfig {
  /** Number of expert groups G; must divide numExperts. Expert e belongs to group floor(e / (E / G)). */
  readonly numGroups: number;
  /** Groups kept per token, in [1, numGroups]. */
  readonly groupTopK: number;
}

/** Fields every router config shares. */
export interface RouterConfigBase {
  /** Number of routed experts E. */
  readonly numExperts: number;
  /** Model width D of the router input. */
  readonly dModel: number;
  /** Experts per token K (Switch: 1, GShard: 2; ignored by expert choice). Default 2. */
  readonly k?: number;
  /** Training capacity factor; undefined or 0 means dropless. For expert choice: c, tokens per expert = T*c/E (default 2). */
  readonly capacityFactor?: number;
  /** Capacity factor at evaluation (training: false); defaults to `capacityFactor`. 0 means dropless. */
  readonly evalCapacityFactor?: number;
  /** Which assignments survive when an expert overflows. Default `position`. */
  readonly dropPolicy?: DropPolicy;
  /** Routing at evaluation: `batch` (as in training, the default) or `causal` (see {@link EvalRouting}). */
  readonly evalRouting?: EvalRouting;
  /** Multiplicative input jitter U(1 - eps, 1 + eps) in training; 0 turns it off (Switch used 1e-2). Default 0. */
  readonly jitterEps?: number;
  /** Fraction of `totalSteps` routed uniformly at random in training before learned routing (GShard used ~0.1). Default 0. */
  readonly randomRoutingWarmup?: number;
  /** Weight initialisation. Default `normal` (`switch` for the Switch router). */
  readonly init?: RouterInit;
  /** Standard deviation of the `normal` init. Default 0.02. */
  readonly initStd?: number;
  /** Scale s of the `switch` init, sigma = sqrt(s / D). Default 0.1. */
  readonly initScale?: number;
  /** Seed of the weight initialisation. Default 0. */
  readonly seed?: number;
  /** Renormalise the K selected scores to sum to 1 (default: on for K > 1, off for Switch). */
  readonly normTopK?: boolean;
  /** Factor applied to the combine weights after normalisation (DeepSeek-V3 uses 2.5). Default 1. */
  readonly routeScale?: number;
  /** Prefix of the router's variable names (variables are otherwise named automatically). */
  readonly name?: string;
  /**
   * Where the integer decisions (top-k, capacity, drops) are made: `host` (default; the scores are
   * read once per call) or `device` (no read: top-k, positions and drops as tensor ops, for GPU
   * backends; topk, switch, gshard and sigmoid routers). See {@link DecideOn}.
   */
  readonly decideOn?: DecideOn;
}

/**
 * Where a router makes its integer decisions. `host`: the scores are read to the host once per call
 * and top-k, capacity and drops run in JavaScript (cheapest on wasm and cpu, whose tensors live in
 * host memory). `device`: they run as tensor ops (top-k, a cumulative sum of one-hot selections for
 * each assignment's position in its expert, capacity as a comparison), so a GPU backend never waits
 * for a read in the middle of a forward; the plan's host arrays are read on first access only.
 * Both give the same selections, drops and combine weights (ties to the lower expert index).
 */
export type DecideOn = 'host' | 'device';

/** The router types that can decide on the device ({@link DecideOn}). */
export const DEVICE_ROUTER_TYPES = ['topk', 'switch', 'gshard', 'sigmoid'] as const;

/** Softmax over all E, top-K, renormalised over the K chosen (Mixtral, Qwen-MoE). */
export interface TopKRouterConfig extends RouterConfigBase {
  readonly type: 'topk';
  /** Group-limited selection on top of the softmax scores. */
  readonly groupLimited?: GroupLimitedConfig;
}

/** Switch Transformer top-1: softmax, argmax, combine weight = raw probability. */
export interface SwitchRouterConfig extends RouterConfigBase {
  readonly type: 'switch';
  /** Group-limited selection on top of the softmax scores. */
  readonly groupLimited?: GroupLimitedConfig;
}

/** GShard top-2 with random routing of the second expert. */
export interface GShardRouterConfig extends RouterConfigBase {
  readonly type: 'gshard';
  /** Group-limited selection on top of the softmax scores. */
  readonly groupLimited?: GroupLimitedConfig;
  /**
   * At evaluation the second expert is kept when its normalised gate g2 >= this threshold
   * (0 keeps it always, the default; training always uses random routing, 2*g2 > U(0,1)).
   */
  readonly evalSecondExpertThreshold?: number;
}

/** Sigmoid scores, selection on scores + a selection-only bias, normalised weights times routeScale (DeepSeek-V3). */
export interface SigmoidRouterConfig extends RouterConfigBase {
  readonly type: 'sigmoid';
  /** Group-limited selection (DeepSeek-V3: 8 groups, keep 4). */
  readonly groupLimited?: GroupLimitedConfig;
}

/** Expert choice: each expert takes its top k = T*c/E tokens (Zhou 2022). Leaks future tokens in causal models. */
export interface ExpertChoiceRouterConfig extends RouterConfigBase {
  readonly type: 'expert-choice';
}

/** Two-level routing: softmax over G group prototypes, then over the experts of the chosen group(s). */
export interface HierarchicalRouterConfig extends RouterConfigBase {
  readonly type: 'hierarchical';
  /** Number of groups G (must divide numExperts); expert e belongs to group floor(e / (E / G)). */
  readonly numGroups: number;
  /** Groups chosen per token (k_p). Default 1. */
  readonly groupK?: number;
}

/** How the forced-balanced debug router assigns experts. */
export type BalancedAssignment = 'round-robin' | 'hash';

/** Forced-balanced debug router: no learned scores; round-robin or hash of the token id; weight 1/K. */
export interface BalancedRouterConfig extends RouterConfigBase {
  readonly type: 'balanced';
  /** `round-robin` over the batch order (default) or `hash` of `RouteOptions.tokenIds`. */
  readonly assignment?: BalancedAssignment;
}

/** Configuration of any router; `type` picks the kind. */
export type RouterConfig =
  | TopKRouterConfig
  | SwitchRouterConfig
  | GShardRouterConfig
  | SigmoidRouterConfig
  | ExpertChoiceRouterConfig
  | HierarchicalRouterConfig
  | BalancedRouterConfig;

/**
 * Defaults of the fields every router shares (per-type exceptions: Switch `k` 1 and `init` `switch`,
 * GShard `k` 2, expert choice `capacityFactor` 2, `normTopK` on for K > 1 except Switch).
 *
 * When to use: to see or spread the defaults into a config of your own.
 *
 * @example
 * ```ts
 * const router = createRouter({ ...defaultRouterConfig, type: 'topk', numExperts: 8, dModel: 64 });
 * ```
 */
export const defaultRouterConfig = {
  k: 2,
  capacityFactor: 0,
  dropPolicy: 'position',
  jitterEps: 0,
  randomRoutingWarmup: 0,
  init: 'normal',
  initStd: 0.02,
  initScale: 0.1,
  seed: 0,
  routeScale: 1,
  evalSecondExpertThreshold: 0,
  groupK: 1,
  assignment: 'round-robin',
  expertChoiceCapacityFactor: 2,
  decideOn: 'host',
  evalRouting: 'batch',
} as const satisfies Record<string, unknown>;

/** A router config with every default filled in and every field validated. */
export interface ResolvedRouterConfig {
  readonly type: RouterType;
  readonly numExperts: number;
  readonly dModel: number;
  readonly k: number;
  /** Training capacity factor, or null for dropless. */
  readonly capacityFactor: number | null;
  /** Evaluation capacity factor, or null for dropless. */
  readonly evalCapacityFactor: number | null;
  readonly dropPolicy: DropPolicy;
  readonly evalRouting: EvalRouting;
  readonly jitterEps: number;
  readonly randomRoutingWarmup: number;
  readonly init: RouterInit;
  readonly initStd: number;
  readonly initScale: number;
  readonly seed: number;
  readonly normTopK: boolean;
  readonly routeScale: number;
  readonly name: string | undefined;
  /** Group-limited selection, or null. */
  readonly groupLimited: GroupLimitedConfig | null;
  /** Hierarchical: number of groups G (else 1). */
  readonly numGroups: number;
  /** Hierarchical: groups per token (else 1). */
  readonly groupK: number;
  readonly evalSecondExpertThreshold: number;
  readonly assignment: BalancedAssignment;
  /** Where the integer decisions are made. */
  readonly decideOn: DecideOn;
}

const FN = 'createRouter';

function factor(arg: string, v: number | undefined): number | null {
  if (v === undefined) return null;
  checkNumber(FN, arg, v, { min: 0 });
  return v === 0 ? null : v;
}

/**
 * Fills in defaults and validates a router config; throws a SwitchyardError naming the field, the
 * expected range and the value received.
 *
 * When to use: to check a config (e.g. from a file) before building a model, or to read the
 * effective values (`k`, capacity factors) a router will use.
 *
 * @example
 * ```ts
 * resolveRouterConfig({ type: 'switch', numExperts: 8, dModel: 16 }).k; // 1
 * ```
 */
export function resolveRouterConfig(config: RouterConfig): ResolvedRouterConfig {
  if (config === null || typeof config !== 'object')
    throw invalidArgument(FN, 'config', 'a RouterConfig object', config);
  const type = checkOneOf(FN, 'type', config.type, ROUTER_TYPES);
  const E = checkInt(FN, 'numExperts', config.numExperts, { min: 1 });
  const D = checkInt(FN, 'dModel', config.dModel, { min: 1 });
  const defaultK = type === 'switch' ? 1 : defaultRouterConfig.k;
  let k = config.k ?? defaultK;
  if (type === 'switch' && k !== 1) throw invalidArgument(FN, 'k', '1 for a Switch router', k);
  if (type === 'gshard') {
    if (E < 2) throw invalidArgument(FN, 'numExperts', 'an integer >= 2 for a GShard router', E);
    if (k !== 2) throw invalidArgument(FN, 'k', '2 for a GShard router', k);
  }
  // Expert choice: the plan lists every expert per token (K = E); `k` is ignored.
  if (type === 'expert-choice') k = E;
  checkInt(FN, 'k', k, { min: 1, max: E });

  let capacityFactor = factor('capacityFactor', config.capacityFactor);
  let evalCapacityFactor =
    config.evalCapacityFactor === undefined
      ? capacityFactor
      : factor('evalCapacityFactor', config.evalCapacityFactor);
  if (type === 'expert-choice') {
    // Expert choice always has a capacity: c defaults to 2.
    capacityFactor ??= defaultRouterConfig.expertChoiceCapacityFactor;
    evalCapacityFactor ??= capacityFactor;
  }
  const dropPolicy = checkOneOf(FN, 'dropPolicy', config.dropPolicy ?? defaultRouterConfig.dropPolicy, [
    'position',
    'probs',
  ] as const);
  const evalRouting = checkOneOf(FN, 'evalRouting', config.evalRouting ?? defaultRouterConfig.evalRouting, [
    'batch',
    'causal',
  ] as const);
  const jitterEps = checkNumber(FN, 'jitterEps', config.jitterEps ?? defaultRouterConfig.jitterEps, {
    min: 0,
    max: 0.999,
  });
  const randomRoutingWarmup = checkNumber(
    FN,
    'randomRoutingWarmup',
    config.randomRoutingWarmup ?? defaultRouterConfig.randomRoutingWarmup,
    { min: 0, max: 1 },
  );
  if (randomRoutingWarmup > 0 && (type === 'expert-choice' || type === 'balanced')) {
    throw invalidArgument(FN, 'randomRoutingWarmup', `0 for a ${type} router`, randomRoutingWarmup);
  }
  const init = checkOneOf(
    FN,
    'init',
    config.init ?? (type === 'switch' ? 'switch' : defaultRouterConfig.init),
    ['normal', 'switch', 'zeros'] as const,
  );
  const initStd = checkNumber(FN, 'initStd', config.initStd ?? defaultRouterConfig.initStd, {
    min: 0,
    minExclusive: true,
  });
  const initScale = checkNumber(FN, 'initScale', config.initScale ?? defaultRouterConfig.initScale, {
    min: 0,
    minExclusive: true,
  });
  const seed = checkInt(FN, 'seed', config.seed ?? defaultRouterConfig.seed);
  const normTopK = config.normTopK ?? (type !== 'switch' && (k > 1 || type === 'hierarchical'));
  if (typeof normTopK !== 'boolean') throw invalidArgument(FN, 'normTopK', 'a boolean', normTopK);
  const routeScale = checkNumber(FN, 'routeScale', config.routeScale ?? defaultRouterConfig.routeScale, {
    min: 0,
    minExclusive: true,
  });
  if (config.name !== undefined && (typeof config.name !== 'string' || config.name === '')) {
    throw invalidArgument(FN, 'name', 'a non-empty string', config.name);
  }

  let groupLimited: GroupLimitedConfig | null = null;
  const gl = 'groupLimited' in config ? config.groupLimited : undefined;
  if (gl !== undefined) {
    if (type === 'expert-choice' || type === 'hierarchical' || type === 'balanced') {
      throw invalidArgument(FN, 'groupLimited', `undefined for a ${type} router`, gl);
    }
    if (gl === null || typeof gl !== 'object')
      throw invalidArgument(FN, 'groupLimited', '{ numGroups, groupTopK }', gl);
    const G = checkInt(FN, 'groupLimited.numGroups', gl.numGroups, { min: 1, max: E });
    if (E % G !== 0) throw invalidArgument(FN, 'groupLimited.numGroups', `a divisor of numExperts (${E})`, G);
    const groupTopK = checkInt(FN, 'groupLimited.groupTopK', gl.groupTopK, { min: 1, max: G });
    if (k > groupTopK * (E / G)) {
      throw invalidArgument(
        FN,
        'k',
        `<= groupTopK * numExperts / numGroups (${groupTopK * (E / G)}) so the kept groups hold K experts`,
        k,
      );
    }
    groupLimited = { numGroups: G, groupTopK };
  }

  let numGroups = 1;
  let groupK = 1;
  if (type === 'hierarchical') {
    const hc = config as HierarchicalRouterConfig;
    numGroups = checkInt(FN, 'numGroups', hc.numGroups, { min: 1, max: E });
    if (E % numGroups !== 0)
      throw invalidArgument(FN, 'numGroups', `a divisor of numExperts (${E})`, numGroups);
    groupK = checkInt(FN, 'groupK', hc.groupK ?? defaultRouterConfig.groupK, { min: 1, max: numGroups });
    if (k > groupK * (E / numGroups)) {
      throw invalidArgument(FN, 'k', `<= groupK * numExperts / numGroups (${groupK * (E / numGroups)})`, k);
    }
  }
  const evalSecondExpertThreshold = checkNumber(
    FN,
    'evalSecondExpertThreshold',
    (config as GShardRouterConfig).evalSecondExpertThreshold ?? defaultRouterConfig.evalSecondExpertThreshold,
    { min: 0, max: 0.5 },
  );
  const assignment = checkOneOf(
    FN,
    'assignment',
    (config as BalancedRouterConfig).assignment ?? defaultRouterConfig.assignment,
    ['round-robin', 'hash'] as const,
  );

  const decideOn = checkOneOf(FN, 'decideOn', config.decideOn ?? defaultRouterConfig.decideOn, [
    'host',
    'device',
  ] as const);
  if (decideOn === 'device' && !(DEVICE_ROUTER_TYPES as readonly string[]).includes(type)) {
    throw invalidArgument(
      FN,
      'decideOn',
      `'host' for a ${type} router ('device' is supported by the ${DEVICE_ROUTER_TYPES.join(', ')} routers)`,
      decideOn,
    );
  }

  return {
    type,
    numExperts: E,
    dModel: D,
    k,
    capacityFactor,
    evalCapacityFactor,
    dropPolicy,
    evalRouting,
    jitterEps,
    randomRoutingWarmup,
    init,
    initStd,
    initScale,
    seed,
    normTopK,
    routeScale,
    name: config.name,
    groupLimited,
    numGroups,
    groupK,
    evalSecondExpertThreshold,
    assignment,
    decideOn,
  };
}
