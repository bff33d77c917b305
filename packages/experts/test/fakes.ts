// Test fakes and references: a fixed router that builds a RoutingPlan from given indices and
// weights, and a naive MoE written as a plain loop over experts with index-add.
//
// Shape letters: T tokens, D model width, E experts, F hidden width, K slots per token.
import type { RoutingPlan } from '@switchyard/routing';
import {
  gatherRows,
  gelu,
  indexAdd,
  matMul,
  type Rng,
  relu,
  silu,
  type Tensor2D,
  tf,
} from '@switchyard/tensor';
import type { ExpertActivation } from '../src/config';

export interface FixedRouting {
  /** Experts per token [T][K]. */
  readonly idx: readonly (readonly number[])[];
  /** 1 kept, 0 dropped, per (token, slot); default all kept. */
  readonly kept?: readonly (readonly number[])[];
  readonly numExperts: number;
  readonly capacity?: number | null;
}

/**
 * A plan as a router would return it, from fixed indices; `topkWeightTK` is the caller's tensor
 * (so gradients can be taken with respect to it). Dropped slots keep their weight here: the
 * experts must ignore them through `kept`, which is what the tests check.
 */
export function fixedPlan(r: FixedRouting, topkWeightTK: Tensor2D): RoutingPlan {
  const T = r.idx.length;
  const K = T > 0 ? r.idx[0]!.length : topkWeightTK.shape[1];
  const E = r.numExperts;
  const expertIdx = new Int32Array(T * K);
  const kept = new Uint8Array(T * K);
  const countsE = new Int32Array(E);
  const keptCountsE = new Int32Array(E);
  r.idx.forEach((row, t) => {
    row.forEach((e, k) => {
      expertIdx[t * K + k] = e;
      const keep = r.kept ? r.kept[t]![k]! : 1;
      kept[t * K + k] = keep;
      countsE[e]!++;
      if (keep) keptCountsE[e]!++;
    });
  });
  const dropped = kept.reduce((n, v) => n + (v ? 0 : 1), 0);
  return {
    logitsTE: tf.zeros([T, E]) as Tensor2D,
    probsTE: tf.fill([T, E], 1 / E) as Tensor2D,
    topkIdxTK: tf.tensor2d(expertIdx, [T, K], 'int32'),
    topkWeightTK,
    keptMaskTK: tf.tensor2d(Float32Array.from(kept), [T, K]),
    expertIdx,
    kept,
    countsE,
    keptCountsE,
    capacity: r.capacity ?? null,
    numTokens: T,
    numExperts: E,
    k: K,
    dropRate: T * K > 0 ? dropped / (T * K) : 0,
    router: 'fixed',
  };
}

/** Random distinct experts per token. */
export function randomRouting(rng: Rng, T: number, K: number, E: number, dropShare = 0): FixedRouting {
  const idx: number[][] = [];
  const kept: number[][] = [];
  for (let t = 0; t < T; t++) {
    idx.push(Array.from(rng.permutation(E).slice(0, K)));
    kept.push(Array.from({ length: K }, () => (rng.float() < dropShare ? 0 : 1)));
  }
  return { idx, kept, numExperts: E };
}

/** The plan's tensors other than the caller's weight tensor. */
export function disposePlanExceptWeights(plan: RoutingPlan): void {
  tf.dispose([plan.logitsTE, plan.probsTE, plan.topkIdxTK, plan.keptMaskTK]);
}

/** One FFN on rows, written directly. */
export function referenceFFN(
  xND: tf.Tensor,
  w1: tf.Tensor,
  w3: tf.Tensor | undefined,
  w2: tf.Tensor,
  activation: ExpertActivation,
): tf.Tensor {
  const h1 = matMul(xND, w1);
  const a =
    activation === 'swiglu'
      ? tf.mul(silu(h1), matMul(xND, w3!))
      : activation === 'gelu'
        ? gelu(h1)
        : relu(h1);
  return matMul(a, w2);
}

/**
 * The naive MoE: for each expert, gather its kept tokens, run its FFN (weights sliced from the
 * stacks), scale by the combine weights and index-add into a zero buffer.
 */
export function naiveMoE(
  xTD: Tensor2D,
  plan: RoutingPlan,
  w1EDF: tf.Tensor,
  w3EDF: tf.Tensor | undefined,
  w2EFD: tf.Tensor,
  activation: ExpertActivation,
): Tensor2D {
  const [T, D] = xTD.shape;
  const K = plan.k;
  const weightFlat = plan.topkWeightTK.reshape([T * K, 1]);
  let out: tf.Tensor = tf.zeros([T, D]);
  const sliceOf = (w: tf.Tensor, e: number) => tf.squeeze(tf.slice(w, [e, 0, 0], [1, -1, -1]), [0]);
  for (let e = 0; e < plan.numExperts; e++) {
    const tokens: number[] = [];
    const slots: number[] = [];
    for (let a = 0; a < T * K; a++) {
      if (plan.kept[a] && plan.expertIdx[a] === e) {
        tokens.push(Math.floor(a / K));
        slots.push(a);
      }
    }
    if (tokens.length === 0) continue;
    const y = referenceFFN(
      gatherRows(xTD, tokens),
      sliceOf(w1EDF, e),
      w3EDF ? sliceOf(w3EDF, e) : undefined,
      sliceOf(w2EFD, e),
      activation,
    );
    out = indexAdd(out, tokens, tf.mul(y, gatherRows(weightFlat, slots)));
  }
  return out as Tensor2D;
}

/** Largest absolute difference between two tensors of the same shape. */
export function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

/** Largest absolute value. */
export function maxAbs(a: tf.Tensor): number {
  return tf.tidy(() => (a.size === 0 ? 0 : tf.max(tf.abs(a)).dataSync()[0]!));
}
