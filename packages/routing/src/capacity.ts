/**
 * Expert capacity and dropping, on host arrays (integer work, outside the gradient tape).
 *
 * Shape letters: T tokens, E routed experts, K slots per token. Assignment a = t * K + j is slot j
 * of token t; arrays of assignments are row-major [T * K].
 */
import { checkInt, checkNumber, invalidArgument, oneHot, tf } from '@switchyard/tensor';
import type { DropPolicy } from './config';

/**
 * Per-expert capacity C = ceil(T * K / E * factor), or null (dropless) when `factor` is undefined or 0.
 * A relative tolerance of 1e-9 keeps products like 10 * 2 / 4 * 1.2 from rounding up past 6.
 *
 * When to use: to size expert buffers, or to report the capacity a router will apply.
 *
 * @example
 * ```ts
 * computeCapacity(4096, 2, 8, 1.25); // 1280
 * computeCapacity(4096, 2, 8, 0);    // null (dropless)
 * ```
 */
export function computeCapacity(
  T: number,
  K: number,
  E: number,
  factor: number | undefined | null,
): number | null {
  checkInt('computeCapacity', 'T', T, { min: 0 });
  checkInt('computeCapacity', 'K', K, { min: 1 });
  checkInt('computeCapacity', 'E', E, { min: 1 });
  if (factor === undefined || factor === null) return null;
  checkNumber('computeCapacity', 'factor', factor, { min: 0 });
  if (factor === 0) return null;
  const exact = ((T * K) / E) * factor;
  return Math.ceil(exact * (1 - 1e-9));
}

/** Result of {@link dropByCapacity}. */
export interface CapacityResult {
  /** 1 where assignment t*K+j is kept, 0 where dropped (or inactive). [T * K]. */
  readonly kept: Uint8Array;
  /** Active assignments per expert before dropping. */
  readonly countsE: Int32Array;
  /** Kept assignments per expert. */
  readonly keptCountsE: Int32Array;
  /** Active assignments dropped by capacity. */
  readonly dropped: number;
}

/** Options of {@link dropByCapacity}. */
export interface DropOptions {
  /** Assignments taking part (1) or not (0); inactive ones use no capacity and are never kept. Default all active. */
  readonly active?: Uint8Array;
  /**
   * `token` (default): with the position policy, token t's slots all come before token t+1's.
   * `slot`: every token's first choice comes before any second choice (GShard Algorithm 1).
   */
  readonly order?: 'token' | 'slot';
}

/**
 * Applies per-expert capacity to a routing decision. `position`: assignments are taken in batch
 * order (earlier tokens win); `probs`: each expert keeps its `capacity` highest-scoring assignments
 * (ties go to the earlier token). `capacity` null keeps every active assignment.
 *
 * When to use: to apply capacity to a decision made elsewhere (custom routers, tests).
 *
 * @example
 * ```ts
 * // 4 tokens, top-1, experts [0, 0, 1, 1], capacity 1: position keeps tokens 0 and 2
 * dropByCapacity(Int32Array.of(0, 0, 1, 1), Float32Array.of(0.4, 0.9, 0.5, 0.3), 4, 1, 2, 1, 'position').kept;
 * ```
 */
export function dropByCapacity(
  expertIdx: Int32Array,
  scores: Float32Array | Float64Array,
  T: number,
  K: number,
  E: number,
  capacity: number | null,
  policy: DropPolicy,
  options: DropOptions = {},
): CapacityResult {
  const fn = 'dropByCapacity';
  const n = T * K;
  if (expertIdx.length !== n)
    throw invalidArgument(fn, 'expertIdx', `an Int32Array of length T*K (${n})`, expertIdx.length);
  if (scores.length !== n)
    throw invalidArgument(fn, 'scores', `an array of length T*K (${n})`, scores.length);
  if (capacity !== null) checkInt(fn, 'capacity', capacity, { min: 0 });
  const active = options.active;
  if (active !== undefined && active.length !== n) {
    throw invalidArgument(fn, 'options.active', `a Uint8Array of length T*K (${n})`, active.length);
  }
  const kept = new Uint8Array(n);
  const countsE = new Int32Array(E);
  const keptCountsE = new Int32Array(E);
  for (let a = 0; a < n; a++) {
    const e = expertIdx[a]!;
    if (e < 0 || e >= E || !Number.isInteger(e))
      throw invalidArgument(fn, `expertIdx[${a}]`, `an integer in [0, ${E - 1}]`, e);
    if (active === undefined || active[a]) countsE[e]! += 1;
  }
  let dropped = 0;
  if (capacity === null) {
    for (let a = 0; a < n; a++) {
      if (active === undefined || active[a]) {
        kept[a] = 1;
        keptCountsE[expertIdx[a]!]! += 1;
      }
    }
    return { kept, countsE, keptCountsE, dropped };
  }
  const take = (a: number): void => {
    if (active !== undefined && !active[a]) return;
    const e = expertIdx[a]!;
    if (keptCountsE[e]! < capacity) {
      kept[a] = 1;
      keptCountsE[e]! += 1;
    } else {
      dropped++;
    }
  };
  if (policy === 'position') {
    if ((options.order ?? 'token') === 'token') {
      for (let a = 0; a < n; a++) take(a);
    } else {
      for (let j = 0; j < K; j++) for (let t = 0; t < T; t++) take(t * K + j);
    }
    return { kept, countsE, keptCountsE, dropped };
  }
  // probs: per expert, highest score first; ties to the earlier assignment.
  const order = new Int32Array(n);
  for (let a = 0; a < n; a++) order[a] = a;
  order.sort((a, b) => {
    const d = scores[b]! - scores[a]!;
    return d !== 0 ? d : a - b;
  });
  for (let i = 0; i < n; i++) take(order[i]!);
  return { kept, countsE, keptCountsE, dropped };
}

/**
 * Each assignment's position among the assignments of its expert that come before it, as tensor
 * ops: `out[n] = #{m < n : idxN[m] == idxN[n] and maskN[m] > 0}` (an exclusive cumulative sum of
 * one-hot selections). Assignments with mask 0 take no place.
 *
 * When to use: to lay out routed rows per expert on the device (a padded [E, C, D] dispatch puts
 * assignment n at row `idxN[n] * C + out[n]`), or to apply capacity without reading to the host.
 *
 * @example
 * ```ts
 * positionsInExperts(tf.tensor1d([2, 0, 2, 2], 'int32'), tf.tensor1d([1, 1, 0, 1]), 3); // [0, 0, 1, 1]
 * ```
 */
export function positionsInExperts(idxN: tf.Tensor1D, maskN: tf.Tensor1D, numExperts: number): tf.Tensor1D {
  return tf.tidy(() => {
    const N = idxN.shape[0];
    const selectedNE = tf.mul(oneHot(idxN, numExperts), maskN.reshape([N, 1]));
    // Cumulative sums run along the last axis: [E, N], exclusive (earlier assignments only).
    const beforeEN = tf.cumsum(selectedNE.transpose(), 1, true);
    return tf.sum(tf.mul(oneHot(idxN, numExperts), beforeEN.transpose()), 1);
  });
}
