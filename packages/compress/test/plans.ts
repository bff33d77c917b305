/**
 * Test helpers: routing plans with fixed assignments (a fake router), and tensor comparisons.
 *
 * Shape letters: T tokens, K slots per token, E experts.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { Rng, type Tensor2D, tf } from '@switchyard/tensor';

/** A routing plan sending token t to experts `idx[t]` (all kept) with the given combine weights [T, K]. */
export function fixedPlan(
  idx: readonly (readonly number[])[],
  E: number,
  topkWeightTK: Tensor2D,
): RoutingPlan {
  const T = idx.length;
  const K = idx[0]?.length ?? topkWeightTK.shape[1];
  const expertIdx = Int32Array.from(idx.flat());
  const kept = new Uint8Array(T * K).fill(1);
  const countsE = new Int32Array(E);
  for (const e of expertIdx) countsE[e]!++;
  return {
    logitsTE: tf.zeros([T, E]) as Tensor2D,
    probsTE: tf.fill([T, E], 1 / E) as Tensor2D,
    topkIdxTK: tf.tensor2d(expertIdx, [T, K], 'int32'),
    topkWeightTK,
    keptMaskTK: tf.ones([T, K]) as Tensor2D,
    expertIdx,
    kept,
    countsE,
    keptCountsE: countsE.slice(),
    capacity: null,
    numTokens: T,
    numExperts: E,
    k: K,
    dropRate: 0,
    router: 'fixed',
  };
}

/** T tokens each routed to K distinct random experts of `allowed`. */
export function randomIdx(rng: Rng, T: number, K: number, allowed: readonly number[]): number[][] {
  return Array.from({ length: T }, () => {
    const order = [...allowed];
    rng.shuffle(order);
    return order.slice(0, K);
  });
}

/** Releases a plan's tensors except its combine weights (the test owns those). */
export function disposePlan(plan: RoutingPlan): void {
  tf.dispose([plan.logitsTE, plan.probsTE, plan.topkIdxTK, plan.keptMaskTK]);
}

/** max |a - b| over all elements. */
export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

/** max |a| over all elements. */
export function maxAbs(a: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(a)).dataSync()[0]!);
}

export { Rng };
