/**
 * Helpers shared by the balance losses: argument checks, the mean-score vector P on the tape, and
 * the canonical weighted sum `sum_i w_i P_i`.
 *
 * Shape letters: T tokens, E routed experts, K slots per token, B sequences, S tokens per sequence.
 */
import { checkDtype, checkShape, invalidArgument, SwitchyardError, tf } from '@switchyard/tensor';

/** A value, or a promise of it (collectives may be synchronous or not). */
export type MaybePromise<T> = T | Promise<T>;

/** True when `v` is a promise (or any thenable). */
export function isPromiseLike<T>(v: MaybePromise<T>): v is Promise<T> {
  return typeof (v as { then?: unknown } | null)?.then === 'function';
}

/**
 * Checks an E-vector of counts (or, with `layout`, a flat array of `numExperts` counts laid out as
 * described): the right length, finite, >= 0. Returns it as a Float64Array.
 */
export function checkCountsE(
  fn: string,
  arg: string,
  countsE: ArrayLike<number>,
  numExperts: number,
  layout?: string,
): Float64Array {
  if (countsE === null || typeof countsE !== 'object' || typeof countsE.length !== 'number') {
    throw invalidArgument(fn, arg, `an array of ${numExperts} counts`, countsE);
  }
  if (countsE.length !== numExperts) {
    const expected = layout ? `${numExperts} counts (${layout})` : `one count per expert (${numExperts})`;
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`${arg}\` passed to ${fn}() must hold ${expected}, got ${countsE.length}`,
    );
  }
  const out = new Float64Array(numExperts);
  for (let i = 0; i < numExperts; i++) {
    const v = countsE[i]!;
    if (!Number.isFinite(v) || v < 0) throw invalidArgument(fn, `${arg}[${i}]`, 'a finite count >= 0', v);
    out[i] = v;
  }
  return out;
}

/** Checks that a score or logit tensor is float32 [T, E] and returns [T, E]. */
export function checkScores(
  fn: string,
  probsTE: tf.Tensor,
  numExperts?: number,
  arg = 'plan.probsTE',
): [number, number] {
  checkShape(fn, arg, probsTE, [null, numExperts ?? null], 'TE');
  checkDtype(fn, arg, probsTE, ['float32']);
  return [probsTE.shape[0]!, probsTE.shape[1]!];
}

/**
 * Per-token scores made to sum to 1 when `normalise` is set (DeepSeek-V3's s' = s / sum_j s_j, which
 * leaves softmax scores unchanged), in float32. On the tape.
 */
export function normalisedScores(probsTE: tf.Tensor2D, normalise: boolean): tf.Tensor2D {
  const p32 = probsTE.toFloat();
  return normalise ? (tf.div(p32, tf.sum(p32, 1, true)) as tf.Tensor2D) : p32;
}

/** P_i = mean over tokens of the (normalised) score of expert i: [E], on the tape. */
export function meanScoresE(probsTE: tf.Tensor2D, normalise: boolean): tf.Tensor1D {
  return tf.mean(normalisedScores(probsTE, normalise), 0) as tf.Tensor1D;
}

/** `sum_i w_i P_i` with host weights (constants: no gradient flows into them). */
export function weightedSum(pE: tf.Tensor, weightsE: ArrayLike<number>): tf.Scalar {
  const w = tf.tensor(Float32Array.from(weightsE), pE.shape, 'float32');
  return tf.sum(tf.mul(pE, w)) as tf.Scalar;
}

/** Canonical balance weights `alpha * E * f_i` with `f_i = c_i / sum_j c_j`; zeros when nothing was counted. */
export function balanceWeightsE(countsE: ArrayLike<number>, alpha: number): Float64Array {
  const E = countsE.length;
  let total = 0;
  for (let i = 0; i < E; i++) total += countsE[i]!;
  const out = new Float64Array(E);
  if (total <= 0) return out;
  const scale = (alpha * E) / total;
  for (let i = 0; i < E; i++) out[i] = countsE[i]! * scale;
  return out;
}

/** Checks a micro-batch key (number or string) used to make calls idempotent under recomputation. */
export function checkKey(fn: string, key: unknown): string | undefined {
  if (key === undefined) return undefined;
  if (typeof key === 'number' && Number.isFinite(key)) return `#${key}`;
  if (typeof key === 'string') return `$${key}`;
  throw invalidArgument(fn, 'key', 'a finite number or a string', key);
}

/** Checks a coefficient: a finite number >= 0. */
export function checkCoef(fn: string, arg: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw invalidArgument(fn, arg, 'a finite number >= 0', v);
  }
  return v;
}

/** Checks a boolean option. */
export function checkBool(fn: string, arg: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw invalidArgument(fn, arg, 'a boolean', v);
  return v;
}
