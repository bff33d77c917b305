/**
 * Hand-built routing plans for tests: a RoutingPlan from router logits and chosen experts, without a
 * router. Not part of the public API.
 *
 * Shape letters: T tokens, E routed experts, K slots per token.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { scoped, sigmoid, softmax, takeAlongLastAxis, tf } from '@switchyard/tensor';

/** Options of {@link planFromLogits}. */
export interface PlanFixtureOptions {
  /** Score function applied to the logits. */
  readonly score?: 'softmax' | 'sigmoid';
  /** 1 kept / 0 dropped per (token, slot), row-major [T * K]; all kept by default. */
  readonly kept?: ArrayLike<number>;
  /** Capacity to report (null: dropless). */
  readonly capacity?: number | null;
}

/** A RoutingPlan whose scores come from `logitsTE` and whose selections are `expertIdx` [T][K]. */
export function planFromLogits(
  logitsTE: tf.Tensor2D,
  expertIdx: readonly (readonly number[])[],
  options: PlanFixtureOptions = {},
): RoutingPlan {
  const [T, E] = logitsTE.shape;
  const K = expertIdx[0]?.length ?? 1;
  const flat = Int32Array.from(expertIdx.flat());
  if (expertIdx.length !== T || flat.length !== T * K) throw new Error('expertIdx must be [T][K]');
  const kept = Uint8Array.from(options.kept ?? new Array<number>(T * K).fill(1));
  const countsE = new Int32Array(E);
  const keptCountsE = new Int32Array(E);
  flat.forEach((e, j) => {
    countsE[e]! += 1;
    keptCountsE[e]! += kept[j]!;
  });
  const tensors = scoped(() => {
    const logits = logitsTE.toFloat() as tf.Tensor2D;
    const probsTE = (options.score === 'sigmoid' ? sigmoid(logits) : softmax(logits)) as tf.Tensor2D;
    const topkIdxTK = tf.tensor2d(flat, [T, K], 'int32');
    const keptMaskTK = tf.tensor2d(Float32Array.from(kept), [T, K], 'float32');
    const chosen = takeAlongLastAxis(probsTE, topkIdxTK);
    const topkWeightTK = tf.mul(tf.div(chosen, tf.sum(chosen, 1, true)), keptMaskTK) as tf.Tensor2D;
    return { logitsTE: logits, probsTE, topkIdxTK, keptMaskTK, topkWeightTK };
  });
  const dropped = kept.reduce((a, v) => a + (v ? 0 : 1), 0);
  return {
    ...tensors,
    expertIdx: flat,
    kept,
    countsE,
    keptCountsE,
    capacity: options.capacity ?? null,
    numTokens: T,
    numExperts: E,
    k: K,
    dropRate: T * K > 0 ? dropped / (T * K) : 0,
    router: options.score === 'sigmoid' ? 'sigmoid' : 'topk',
  };
}

/** Top-K experts of each row of host scores [T * E] (ties to the lower index). */
export function topKRows(scoresTE: ArrayLike<number>, T: number, E: number, K: number): number[][] {
  const out: number[][] = [];
  for (let t = 0; t < T; t++) {
    const order = Array.from({ length: E }, (_, i) => i).sort(
      (a, b) => scoresTE[t * E + b]! - scoresTE[t * E + a]! || a - b,
    );
    out.push(order.slice(0, K));
  }
  return out;
}

/** Counts per expert of [T][K] selections. */
export function countsOf(expertIdx: readonly (readonly number[])[], E: number): Int32Array {
  const c = new Int32Array(E);
  for (const row of expertIdx) for (const e of row) c[e]! += 1;
  return c;
}
