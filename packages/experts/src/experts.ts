/**
 * Routed experts: E expert FFNs with weights stacked per layer, applied to a batch through a
 * routing plan (dispatch -> grouped compute -> combine).
 *
 * Shape letters: T tokens, D model width, E experts, F expert hidden width, K slots per token,
 * S kept assignments.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { type Rng, SwitchyardError, type Tensor2D, type Tensor3D, tf } from '@switchyard/tensor';
import {
  type ComputeMode,
  type ExpertActivation,
  type ExpertsConfig,
  matricesOf,
  resolveExpertsConfig,
} from './config';
import { buildDispatch, combine, type DispatchPlan, dispatch } from './dispatch';
import { checkTokens } from './ffn';
import { type ExpertWeights, groupedExperts, type ResolvedComputeMode, resolveComputeMode } from './grouped';

/**
 * E expert FFNs (SwiGLU, GELU or ReLU) with stacked weights: variables `w1` [E, D, F],
 * `w3` [E, D, F] (SwiGLU only) and `w2` [E, F, D].
 *
 * When to use: to run experts behind a router of your own; {@link MoELayer} composes it with a
 * router and shared experts.
 *
 * @example
 * ```ts
 * const experts = new RoutedExperts({ numExperts: 8, dModel: 64, dFF: 128, activation: 'swiglu' }, new Rng(0));
 * const plan = router.route(xTD, { training: true });
 * const yTD = experts.forward(xTD, plan); // sum_k weight_tk * expert_{idx_tk}(x_t) over kept slots
 * ```
 */
export class RoutedExperts {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dFF: number;
  readonly activation: ExpertActivation;
  /** Trainable weights: `w1`, `w3` (SwiGLU only), `w2`. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private disposed = false;

  constructor(config: ExpertsConfig, rng: Rng) {
    const cfg = resolveExpertsConfig('RoutedExperts', config);
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.dFF = cfg.dFF;
    this.activation = cfg.activation;
    const { numExperts: E, dModel: D, dFF: F, initStd } = cfg;
    const make = (name: string, shape: number[]): tf.Variable => {
      const init = rng.fork(name).normalTensor(shape, 0, initStd);
      const v = tf.variable(init, true, undefined, 'float32');
      init.dispose();
      return v;
    };
    const vars: Record<string, tf.Variable> = { w1: make('w1', [E, D, F]) };
    if (cfg.activation === 'swiglu') vars.w3 = make('w3', [E, D, F]);
    vars.w2 = make('w2', [E, F, D]);
    this.variables = vars;
  }

  /** The stacked weights as {@link groupedExperts} takes them. */
  weights(): ExpertWeights {
    const v = this.variables;
    const w: { w1EDF: Tensor3D; w3EDF?: Tensor3D; w2EFD: Tensor3D } = {
      w1EDF: v.w1 as unknown as Tensor3D,
      w2EFD: v.w2 as unknown as Tensor3D,
    };
    if (v.w3) w.w3EDF = v.w3 as unknown as Tensor3D;
    return w;
  }

  /**
   * Applies the experts to a routed batch: `y_t = sum over kept slots k of topkWeightTK[t, k] *
   * expert_{topkIdxTK[t, k]}(x_t)`; dropped assignments add nothing. Differentiable in `xTD`, the
   * plan's combine weights and every expert weight.
   */
  forward(xTD: Tensor2D, plan: RoutingPlan, computeMode: ComputeMode = 'auto'): Tensor2D {
    return this.forwardWithDispatch(xTD, plan, buildDispatch(plan), computeMode).yTD;
  }

  /** {@link RoutedExperts.forward} with a dispatch plan built by the caller; also says which compute path ran. */
  forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    d: DispatchPlan,
    computeMode: ComputeMode = 'auto',
  ): { yTD: Tensor2D; computeMode: ResolvedComputeMode } {
    if (this.disposed)
      throw new SwitchyardError('STATE_INVALID', 'RoutedExperts was disposed; it cannot run forward()');
    checkTokens('RoutedExperts.forward', xTD, this.dModel);
    if (plan.numExperts !== this.numExperts) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `\`plan\` passed to RoutedExperts.forward() must route to numExperts (${this.numExperts}) experts, got ${plan.numExperts}`,
      );
    }
    if (plan.numTokens !== xTD.shape[0]) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `\`plan\` passed to RoutedExperts.forward() must cover the ${xTD.shape[0]} tokens of xTD, got ${plan.numTokens}`,
      );
    }
    const mode = resolveComputeMode(computeMode, d.capacity);
    const yTD = tf.tidy(() => {
      const xSD = dispatch(xTD, d);
      const ySD = groupedExperts(xSD, d, this.weights(), this.activation, mode);
      return combine(ySD, plan.topkWeightTK, d);
    });
    return { yTD, computeMode: mode };
  }

  /** Weights of one expert. */
  paramsPerExpert(): number {
    return matricesOf(this.activation) * this.dModel * this.dFF;
  }

  /** Weights of all E experts. */
  numParams(): number {
    return this.numExperts * this.paramsPerExpert();
  }

  /** Matrix-multiply FLOPs (2 per multiply-add) of one (token, expert) assignment's forward pass. */
  flopsPerAssignment(): number {
    return 2 * this.paramsPerExpert();
  }

  /** Releases the variables. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of Object.values(this.variables)) v.dispose();
  }
}
