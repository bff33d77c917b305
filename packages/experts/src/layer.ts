/**
 * One MoE layer: router -> dispatch -> grouped expert compute -> combine, plus shared experts.
 *
 * Shape letters: T tokens, D model width, E routed experts, K slots per token.
 */
import {
  createRouter,
  type ResolvedRouterConfig,
  type RouteOptions,
  type Router,
  type RoutingPlan,
} from '@switchyard/routing';
import {
  checkOneOf,
  disposeAll,
  invalidArgument,
  type Rng,
  SwitchyardError,
  type Tensor2D,
  tf,
} from '@switchyard/tensor';
import {
  COMPUTE_MODES,
  type ComputeMode,
  type MoELayerConfig,
  type ResolvedExpertsConfig,
  resolveExpertsConfig,
  resolveSharedConfig,
  type SharedExpertsConfig,
} from './config';
import { buildDispatch } from './dispatch';
import { RoutedExperts } from './experts';
import { checkTokens, SharedExperts } from './ffn';
import type { ResolvedComputeMode } from './grouped';

const FN = 'MoELayer';

/** What {@link MoELayer.forward} returns. */
export interface MoEForwardResult {
  /** Layer output [T, D]: routed experts' weighted sum plus shared experts. */
  readonly yTD: Tensor2D;
  /**
   * The routing plan: logits and probabilities (on the tape, for balance losses), selections, kept
   * mask, per-expert counts, capacity and drop rate. Dispose with `disposeRoutingPlan` or a tidy.
   */
  readonly plan: RoutingPlan;
  /** Which grouped-compute path ran. */
  readonly computeMode: ResolvedComputeMode;
}

/**
 * One Mixture-of-Experts layer: a router (any of @switchyard/routing), E routed experts with stacked
 * weights computed grouped per expert, and optional shared experts. Variables are named
 * `router.<name>` (e.g. `router.weight` [D, E]), `experts.w1` [E, D, F], `experts.w3` [E, D, F]
 * (SwiGLU), `experts.w2` [E, F, D], `shared.w1` [D, Fs], `shared.w3`, `shared.w2` [Fs, D], `shared.gate` [D, 1].
 *
 * When to use: as the FFN of a transformer block; feed `plan` to the balance losses.
 *
 * @example
 * ```ts
 * const layer = new MoELayer(
 *   {
 *     dModel: 64,
 *     router: { type: 'topk', numExperts: 8, k: 2, dModel: 64 },
 *     experts: { numExperts: 8, dModel: 64, dFF: 128, activation: 'swiglu' },
 *     shared: { count: 1, dFF: 128, gate: true },
 *   },
 *   new Rng(0),
 * );
 * const { yTD, plan } = layer.forward(xTD, { training: true });
 * disposeRoutingPlan(plan);
 * ```
 */
export class MoELayer {
  readonly dModel: number;
  readonly computeMode: ComputeMode;
  readonly router: Router & { readonly config: ResolvedRouterConfig };
  readonly experts: RoutedExperts;
  readonly shared: SharedExperts | undefined;
  /** Every trainable variable of the layer, by name. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private disposed = false;

  constructor(config: MoELayerConfig, rng: Rng) {
    if (config === null || typeof config !== 'object')
      throw invalidArgument(FN, 'config', 'a MoELayerConfig object', config);
    const D = config.dModel;
    if (!Number.isInteger(D) || D < 1) throw invalidArgument(FN, 'dModel', 'an integer >= 1', D);
    const experts: ResolvedExpertsConfig = resolveExpertsConfig(FN, config.experts, 'experts.');
    if (experts.dModel !== D)
      throw invalidArgument(FN, 'experts.dModel', `equal to dModel (${D})`, experts.dModel);
    const routerCfg = config.router;
    if (routerCfg === null || typeof routerCfg !== 'object') {
      throw invalidArgument(FN, 'router', 'a RouterConfig object', routerCfg);
    }
    if (routerCfg.dModel !== D)
      throw invalidArgument(FN, 'router.dModel', `equal to dModel (${D})`, routerCfg.dModel);
    if (routerCfg.numExperts !== experts.numExperts) {
      throw invalidArgument(
        FN,
        'router.numExperts',
        `equal to experts.numExperts (${experts.numExperts})`,
        routerCfg.numExperts,
      );
    }
    let shared: SharedExpertsConfig | undefined;
    if (config.shared !== undefined) shared = resolveSharedConfig(FN, config.shared, 'shared.');
    this.computeMode = checkOneOf(FN, 'computeMode', config.computeMode ?? 'auto', COMPUTE_MODES);
    this.dModel = D;

    const seed = routerCfg.seed ?? rng.fork('router').nextUint32();
    this.router = createRouter({ ...routerCfg, seed });
    try {
      this.experts = new RoutedExperts(experts, rng.fork('experts'));
      this.shared =
        shared && shared.count > 0
          ? new SharedExperts(
              { ...shared, dModel: D, activation: experts.activation, initStd: experts.initStd },
              rng.fork('shared'),
            )
          : undefined;
    } catch (e) {
      this.router.dispose();
      throw e;
    }
    const vars: Record<string, tf.Variable> = {};
    for (const [name, v] of Object.entries(this.router.variables)) vars[`router.${name}`] = v;
    for (const [name, v] of Object.entries(this.experts.variables)) vars[`experts.${name}`] = v;
    if (this.shared)
      for (const [name, v] of Object.entries(this.shared.variables)) vars[`shared.${name}`] = v;
    this.variables = vars;
  }

  /**
   * Routes the batch, runs the routed experts grouped per expert, combines them back in token order
   * and adds the shared experts. An empty batch (T = 0) returns an empty [0, D] output and an empty plan.
   */
  forward(xTD: Tensor2D, options: RouteOptions): MoEForwardResult {
    if (this.disposed)
      throw new SwitchyardError('STATE_INVALID', 'MoELayer was disposed; it cannot run forward()');
    checkTokens('MoELayer.forward', xTD, this.dModel);
    if (options === null || typeof options !== 'object' || typeof options.training !== 'boolean') {
      throw invalidArgument(
        'MoELayer.forward',
        'options',
        'a RouteOptions object ({ training: boolean })',
        options,
      );
    }
    if (xTD.shape[0] === 0) {
      return {
        yTD: tf.zeros([0, this.dModel]) as Tensor2D,
        plan: this.emptyPlan(options),
        computeMode: 'dropless',
      };
    }
    const plan = this.router.route(xTD, options);
    try {
      const d = buildDispatch(plan);
      let computeMode: ResolvedComputeMode = 'dropless';
      const yTD = tf.tidy(() => {
        const routed = this.experts.forwardWithDispatch(xTD, plan, d, this.computeMode);
        computeMode = routed.computeMode;
        return this.shared ? (tf.add(routed.yTD, this.shared.forward(xTD)) as Tensor2D) : routed.yTD;
      });
      return { yTD, plan, computeMode };
    } catch (e) {
      disposeAll(Object.values(plan));
      throw e;
    }
  }

  /** Total weights: router, all routed experts and shared experts. */
  numParams(): number {
    return this.router.numParams() + this.experts.numParams() + (this.shared?.numParams() ?? 0);
  }

  /** Weights one token uses: router, K routed experts (the router's expected K) and shared experts. */
  activeParamsPerToken(): number {
    return (
      this.router.numParams() +
      this.router.k * this.experts.paramsPerExpert() +
      (this.shared?.numParams() ?? 0)
    );
  }

  /** Matrix-multiply FLOPs (2 per multiply-add) of one token's forward pass: router, K experts, shared experts. */
  flopsPerToken(): number {
    return (
      this.router.flopsPerToken() +
      this.router.k * this.experts.flopsPerAssignment() +
      (this.shared?.flopsPerToken() ?? 0)
    );
  }

  /** Releases every variable of the layer. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.router.dispose();
    this.experts.dispose();
    this.shared?.dispose();
  }

  private emptyPlan(options: RouteOptions): RoutingPlan {
    const cfg = this.router.config;
    const E = cfg.numExperts;
    const K = cfg.k; // E for expert choice
    const factor = options.training ? cfg.capacityFactor : cfg.evalCapacityFactor;
    return {
      logitsTE: tf.zeros([0, E]) as Tensor2D,
      probsTE: tf.zeros([0, E]) as Tensor2D,
      topkIdxTK: tf.zeros([0, K], 'int32') as Tensor2D,
      topkWeightTK: tf.zeros([0, K]) as Tensor2D,
      keptMaskTK: tf.zeros([0, K]) as Tensor2D,
      expertIdx: new Int32Array(0),
      kept: new Uint8Array(0),
      countsE: new Int32Array(E),
      keptCountsE: new Int32Array(E),
      capacity: factor === null ? null : 0,
      numTokens: 0,
      numExperts: E,
      k: K,
      dropRate: 0,
      router: cfg.type,
      capacityFactor: factor,
    };
  }
}
