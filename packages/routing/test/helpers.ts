// Test helpers: routers whose logits equal their input (weight = identity), and plan readers.
import { type Tensor2D, tf } from '@switchyard/tensor';
import { createRouter, type RouterConfig, type RoutingPlan } from '../src/index';

/** A router with D = E and weight = I, so its logits are exactly the rows of x. */
export function identityRouter(config: RouterConfig) {
  const r = createRouter(config);
  const w = r.variables.weight;
  if (w === undefined) throw new Error('identityRouter needs a router with a `weight` variable');
  tf.tidy(() => w.assign(tf.eye(config.numExperts)));
  return r;
}

/** Rows of log-probabilities: softmax of each row gives back the probabilities. */
export function logRows(rows: number[][]): Tensor2D {
  return tf.tensor2d(rows.map((r) => r.map((p) => Math.log(p))));
}

/** Reads the plan's tensors to nested arrays. */
export function readPlan(plan: RoutingPlan) {
  return {
    idx: plan.topkIdxTK.arraySync() as number[][],
    w: plan.topkWeightTK.arraySync() as number[][],
    kept: plan.keptMaskTK.arraySync() as number[][],
    probs: plan.probsTE.arraySync() as number[][],
  };
}

/** Rounds nested numbers for exact comparisons of float32 results. */
export function round(a: number[][], digits = 5): number[][] {
  const f = 10 ** digits;
  return a.map((r) => r.map((v) => Math.round(v * f) / f + 0));
}
