/**
 * Dispatch, expert compute and combine for a routing plan decided on the device (`decideOn:
 * 'device'`), with no read to the host: every kept assignment goes to a row of a padded [E, C, D]
 * layout computed from the plan's tensors, the experts run as batched products over it, and the
 * rows come back to their tokens weighted by the combine weights.
 *
 * The row of an assignment is its expert's block, then its place among that expert's kept
 * assignments in token order: the host dispatch's order, so each expert sees the same rows.
 *
 * C is static (the layout cannot depend on counts that would have to be read): the plan's capacity,
 * or T for dropless routing (an expert can receive every token once). Dropless then computes E * T
 * rows for T * K assignments, E / K times the work of the host path: set a capacity factor.
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token, N = T * K assignments,
 * C rows per expert, R = E * C padded rows, F expert hidden width.
 */
import { positionsInExperts, type RoutingPlan } from '@switchyard/routing';
import {
  invalidArgument,
  SwitchyardError,
  segmentSum,
  type Tensor2D,
  type Tensor3D,
  tf,
} from '@switchyard/tensor';
import type { ExpertActivation } from './config';
import { type ExpertWeights, paddedExpertFFN } from './grouped';

/**
 * Rows per expert of the device layout: the plan's capacity, or T when routing is dropless.
 *
 * When to use: to size or report what a device-decided layer computes (E * C rows).
 *
 * @example
 * ```ts
 * deviceCapacity(plan); // plan.capacity ?? plan.numTokens
 * ```
 */
export function deviceCapacity(plan: Pick<RoutingPlan, 'capacity' | 'numTokens'>): number {
  return plan.capacity ?? plan.numTokens;
}

/**
 * The routed output [T, D] of a plan decided on the device: `y_t = sum over kept slots k of
 * topkWeightTK[t, k] * expert_{topkIdxTK[t, k]}(x_t)`, computed without reading the plan to the
 * host. Differentiable in `xTD`, the combine weights and the expert weights.
 *
 * When to use: {@link RoutedExperts} calls it for plans with `decidedOn: 'device'`; call it for your
 * own stacked weights.
 *
 * @example
 * ```ts
 * const plan = router.route(xTD, { training: true }); // router created with decideOn: 'device'
 * const yTD = deviceRoutedExperts(xTD, plan, experts.weights(), 'swiglu');
 * ```
 */
export function deviceRoutedExperts(
  xTD: Tensor2D,
  plan: RoutingPlan,
  weights: ExpertWeights,
  activation: ExpertActivation,
): Tensor2D {
  const { numTokens: T, numExperts: E, k: K } = plan;
  const D = xTD.shape[1];
  if (xTD.shape[0] !== T) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`xTD\` passed to deviceRoutedExperts() must have the plan's ${T} rows, got [${xTD.shape.join(', ')}]`,
    );
  }
  if ((activation === 'swiglu') !== (weights.w3EDF !== undefined)) {
    throw invalidArgument(
      'deviceRoutedExperts',
      'weights.w3EDF',
      activation === 'swiglu'
        ? 'an [E, D, F] tensor for SwiGLU experts'
        : `undefined for ${activation} experts`,
      weights.w3EDF,
    );
  }
  const C = deviceCapacity(plan);
  const N = T * K;
  const R = E * C;
  return tf.tidy(() => {
    const idxN = plan.topkIdxTK.reshape([N]) as tf.Tensor1D;
    const keptN = plan.keptMaskTK.reshape([N]) as tf.Tensor1D;
    // Padded row of each assignment; a dropped one goes to the spare row R (zero on the way back).
    const posN = positionsInExperts(idxN, keptN, E);
    const rowN = tf
      .where(tf.greater(keptN, 0), tf.add(tf.mul(idxN.toFloat(), C), posN), tf.fill([N], R))
      .toInt() as tf.Tensor1D;
    // Token of each padded row, plus one (0: an empty row), as a segment sum over the rows.
    const tokenPlus1N = tf
      .range(1, T + 1)
      .reshape([T, 1])
      .tile([1, K])
      .reshape([N]);
    const rowTokenR = segmentSum(tokenPlus1N, rowN, R + 1)
      .slice(0, R)
      .toInt() as tf.Tensor1D;
    const xPadTD = tf.concat([tf.zeros([1, D]), xTD], 0); // row 0: the empty row
    const xECD = tf.gather(xPadTD, rowTokenR).reshape([E, C, D]) as Tensor3D; // [R, D] -> [E, C, D]
    const yECD = paddedExpertFFN(xECD, weights, activation);
    const yPadRD = tf.concat([yECD.reshape([R, D]), tf.zeros([1, D])], 0); // [E, C, D] -> [R + 1, D]
    const yND = tf.gather(yPadRD, rowN);
    const weightedNKD = tf.mul(yND, plan.topkWeightTK.reshape([N, 1])).reshape([T, K, D]);
    return tf.sum(weightedNKD, 1) as Tensor2D;
  });
}
