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
import type { ExpertBank } from './bank';
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

/** Options of the {@link MoELayer} constructor. */
export interface MoELayerOptions {
  /**
   * The routed experts to use instead of new local ones (the layer then owns it); its E and D must
   * match the config.
   */
  readonly experts?: ExpertBank;
}

/**
 * One Mixture-of-Experts layer: a router (any of @switchyard/routing), E routed experts held by an
 * {@link ExpertBank} (by default {@link RoutedExperts}: stacked weights computed grouped per expert),
 * and optional shared experts. Variables are named
 * `router.<name>` (e.g. `router.weight` [D, E]), `experts.w1` [E, D, F], `experts.w3` [E, D, F]
 * (SwiGLU), `experts.w2` [E, F, D], `shared.w1` [D, Fs], `shared.w3`, `shared.w2` [Fs, D], `shared.gate` [D, 1].
 *
 * When to use: as the FFN of a transformer block; feed `plan` to the balance losses. Strategies that
 * change where experts compute (expert parallelism, compression) swap the bank with {@link setExperts}.
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
  readonly shared: SharedExperts | undefined;
  private bank: ExpertBank;
  private disposed = false;

  constructor(config: MoELayerConfig, rng: Rng, options: MoELayerOptions = {}) {
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
      if (options.experts !== undefined) checkBank(FN, 'options.experts', options.experts, experts);
      this.bank = options.experts ?? new RoutedExperts(experts, rng.fork('experts'));
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
  }

  /** The bank holding the routed experts. */
  get experts(): ExpertBank {
    return this.bank;
  }

  /**
   * Every trainable variable of the layer, by name: `router.*`, `experts.*` (the bank's, so after
   * {@link setExperts} the new bank's) and `shared.*`.
   */
  get variables(): Readonly<Record<string, tf.Variable>> {
    const vars: Record<string, tf.Variable> = {};
    for (const [name, v] of Object.entries(this.router.variables)) vars[`router.${name}`] = v;
    for (const [name, v] of Object.entries(this.bank.variables)) vars[`experts.${name}`] = v;
    if (this.shared)
      for (const [name, v] of Object.entries(this.shared.variables)) vars[`shared.${name}`] = v;
    return vars;
  }

  /**
   * Installs `bank` as the layer's routed experts and returns the bank it replaces (now the
   * caller's: dispose it, keep it, or install it again). Its E, D, F and activation must match.
   *
   * When to use: to apply a strategy from outside (expert parallelism, replicas, compression)
   * through the layer's seam instead of patching it.
   *
   * @example
   * ```ts
   * const local = layer.setExperts(new ExpertParallelBank(layer.experts, comm));
   * local.dispose();
   * ```
   */
  setExperts(bank: ExpertBank): ExpertBank {
    if (this.disposed)
      throw new SwitchyardError('STATE_INVALID', 'MoELayer was disposed; it cannot take new experts');
    checkBank(`${FN}.setExperts`, 'bank', bank, this.bank);
    const old = this.bank;
    this.bank = bank;
    return old;
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
    // An empty batch still goes through the bank: a bank that exchanges rows with other ranks must
    // join every exchange, with nothing to send.
    const plan = xTD.shape[0] === 0 ? this.emptyPlan(options) : this.router.route(xTD, options);
    try {
      let computeMode: ResolvedComputeMode = 'dropless';
      const yTD = tf.tidy(() => {
        const routed =
          plan.decidedOn === 'device'
            ? this.deviceBank().forwardOnDevice(xTD, plan)
            : this.bank.forwardWithDispatch(xTD, plan, buildDispatch(plan), this.computeMode);
        computeMode = routed.computeMode;
        return this.shared ? (tf.add(routed.yTD, this.shared.forward(xTD)) as Tensor2D) : routed.yTD;
      });
      return { yTD, plan, computeMode };
    } catch (e) {
      disposeAll(Object.values(plan));
      throw e;
    }
  }

  /** The bank for plans decided on the device: the layer's own stacked experts. */
  private deviceBank(): RoutedExperts {
    if (this.bank instanceof RoutedExperts) return this.bank;
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `MoELayer.forward(): a router with decideOn 'device' needs the layer's own RoutedExperts bank, got a ${this.bank.constructor.name} installed with setExperts(); use decideOn 'host' with it`,
    );
  }

  /** Total weights: router, all routed experts and shared experts. */
  numParams(): number {
    return this.router.numParams() + this.bank.numParams() + (this.shared?.numParams() ?? 0);
  }

  /** Weights one token uses: router, K routed experts (the router's expected K) and shared experts. */
  activeParamsPerToken(): number {
    return (
      this.router.numParams() + this.router.k * this.bank.paramsPerExpert() + (this.shared?.numParams() ?? 0)
    );
  }

  /** Matrix-multiply FLOPs (2 per multiply-add) of one token's forward pass: router, K experts, shared experts. */
  flopsPerToken(): number {
    return (
      this.router.flopsPerToken() +
      this.router.k * this.bank.flopsPerAssignment() +
      (this.shared?.flopsPerToken() ?? 0)
    );
  }

  /** Releases every variable of the layer. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.router.dispose();
    this.bank.dispose();
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

/** Throws unless `bank` is an ExpertBank with the E, D, F and activation of `like`. */
function checkBank(
  fn: string,
  arg: string,
  bank: ExpertBank,
  like: Pick<ExpertBank, 'numExperts' | 'dModel' | 'dFF' | 'activation'>,
): void {
  if (bank === null || typeof bank !== 'object' || typeof bank.forwardWithDispatch !== 'function')
    throw invalidArgument(fn, arg, 'an ExpertBank', bank);
  for (const key of ['numExperts', 'dModel', 'dFF', 'activation'] as const) {
    if (bank[key] !== like[key])
      throw invalidArgument(
        fn,
        `${arg}.${key}`,
        `${JSON.stringify(like[key])} like the layer's experts`,
        bank[key],
      );
  }
}
