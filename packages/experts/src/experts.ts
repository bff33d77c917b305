/**
 * Routed experts: E expert FFNs with weights stacked per layer, applied to a batch through a
 * routing plan (dispatch -> grouped compute -> combine).
 *
 * Shape letters: T tokens, D model width, E experts, F expert hidden width, K slots per token,
 * S kept assignments.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { invalidArgument, Rng, type Tensor2D, type Tensor3D, tf } from '@switchyard/tensor';
import { type BankOutput, checkBankInput, StackedExpertBank } from './bank';
import { type ComputeMode, type ExpertsConfig, resolveExpertsConfig } from './config';
import { deviceRoutedExperts } from './device';
import { buildDispatch, combine, type DispatchPlan, dispatch } from './dispatch';
import { checkTokens } from './ffn';
import { type ExpertWeights, groupedExperts, resolveComputeMode } from './grouped';

/** Names of the stacked expert weights: `w1` [E, D, F], `w3` [E, D, F] (SwiGLU only), `w2` [E, F, D]. */
export type ExpertWeightName = 'w1' | 'w3' | 'w2';

/**
 * Stacked expert weights held as variables named `w1`, `w3` (SwiGLU only) and `w2`, as
 * {@link groupedExperts} takes them. Throws when a weight is missing or not 3-D.
 *
 * When to use: in a bank of your own that keeps stacked weights (all experts, or one rank's shard).
 *
 * @example
 * ```ts
 * const ySD = groupedExperts(xSD, d, expertWeightsOf(bank.variables), 'swiglu', 'dropless');
 * ```
 */
export function expertWeightsOf(vars: Readonly<Record<string, tf.Variable>>): ExpertWeights {
  const fn = 'expertWeightsOf';
  const get = (name: ExpertWeightName): Tensor3D => {
    const v = vars[name];
    if (!(v instanceof tf.Variable) || v.rank !== 3)
      throw invalidArgument(fn, `vars.${name}`, 'a 3-D variable of stacked expert weights', v);
    return v as tf.Variable<tf.Rank.R3>;
  };
  return { w1EDF: get('w1'), w2EFD: get('w2'), ...(vars.w3 ? { w3EDF: get('w3') } : {}) };
}

/**
 * E expert FFNs (SwiGLU, GELU or ReLU) with stacked weights: variables `w1` [E, D, F],
 * `w3` [E, D, F] (SwiGLU only) and `w2` [E, F, D].
 *
 * When to use: to run experts behind a router of your own; {@link MoELayer} composes it with a
 * router and shared experts. It is the layer's default {@link ExpertBank}: all E experts, local.
 *
 * @example
 * ```ts
 * const experts = new RoutedExperts({ numExperts: 8, dModel: 64, dFF: 128, activation: 'swiglu' }, new Rng(0));
 * const plan = router.route(xTD, { training: true });
 * const yTD = experts.forward(xTD, plan); // sum_k weight_tk * expert_{idx_tk}(x_t) over kept slots
 * ```
 */
export class RoutedExperts extends StackedExpertBank {
  /**
   * New experts from `config`: initialised from `init` (a seeded generator: normal with the config's
   * `initStd`), or holding copies of given stacked weights (`w1EDF`, `w3EDF` for SwiGLU, `w2EFD`,
   * shaped as the config says; the caller keeps ownership of the tensors passed in).
   */
  constructor(config: ExpertsConfig, init: Rng | ExpertWeights) {
    const fn = 'RoutedExperts';
    const cfg = resolveExpertsConfig(fn, config);
    const { numExperts: E, dModel: D, dFF: F, initStd } = cfg;
    const make = (name: keyof ExpertWeights, shape: number[]): tf.Variable => {
      if (init instanceof Rng) {
        const t = init.fork(name.slice(0, 2)).normalTensor(shape, 0, initStd);
        const v = tf.variable(t, true, undefined, 'float32');
        t.dispose();
        return v;
      }
      const t = init?.[name];
      if (!(t instanceof tf.Tensor) || t.shape.join() !== shape.join())
        throw invalidArgument(fn, `init.${name}`, `a tensor [${shape.join(', ')}]`, t?.shape ?? t);
      return tf.variable(t, true, undefined, 'float32');
    };
    const vars: Record<string, tf.Variable> = { w1: make('w1EDF', [E, D, F]) };
    if (cfg.activation === 'swiglu') vars.w3 = make('w3EDF', [E, D, F]);
    vars.w2 = make('w2EFD', [E, F, D]);
    super(cfg, vars);
  }

  /** The stacked weights as {@link groupedExperts} takes them. */
  weights(): ExpertWeights {
    return expertWeightsOf(this.variables);
  }

  /**
   * Applies the experts to a routed batch: `y_t = sum over kept slots k of topkWeightTK[t, k] *
   * expert_{topkIdxTK[t, k]}(x_t)`; dropped assignments add nothing. Differentiable in `xTD`, the
   * plan's combine weights and every expert weight.
   */
  forward(xTD: Tensor2D, plan: RoutingPlan, computeMode: ComputeMode = 'auto'): Tensor2D {
    if (plan.decidedOn === 'device') return this.forwardOnDevice(xTD, plan).yTD;
    return this.forwardWithDispatch(xTD, plan, buildDispatch(plan), computeMode).yTD;
  }

  /**
   * The forward of a plan decided on the device (`decideOn: 'device'`): a padded [E, C, D] layout
   * built from the plan's tensors (C: the capacity, or T when dropless), no read to the host.
   */
  forwardOnDevice(xTD: Tensor2D, plan: RoutingPlan): BankOutput {
    this.assertLive('RoutedExperts', 'forward');
    checkTokens('RoutedExperts.forwardOnDevice', xTD, this.dModel);
    if (plan.numExperts !== this.numExperts) {
      throw invalidArgument(
        'RoutedExperts.forwardOnDevice',
        'plan.numExperts',
        `the bank's numExperts (${this.numExperts})`,
        plan.numExperts,
      );
    }
    return { yTD: deviceRoutedExperts(xTD, plan, this.weights(), this.activation), computeMode: 'padded' };
  }

  /** {@link RoutedExperts.forward} with a dispatch plan built by the caller; also says which compute path ran. */
  forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    d: DispatchPlan,
    computeMode: ComputeMode = 'auto',
  ): BankOutput {
    this.assertLive('RoutedExperts', 'forward');
    checkBankInput('RoutedExperts.forward', this, xTD, plan, d);
    const mode = resolveComputeMode(computeMode, d.capacity);
    const yTD = tf.tidy(() => {
      const xSD = dispatch(xTD, d);
      const ySD = groupedExperts(xSD, d, this.weights(), this.activation, mode);
      return combine(ySD, plan.topkWeightTK, d);
    });
    return { yTD, computeMode: mode };
  }
}
