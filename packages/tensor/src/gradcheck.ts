/**
 * Finite-difference gradient checks, used by every package's gradient tests.
 *
 * The function under test is reduced to a scalar with fixed random weights (so every output element
 * matters), analytic gradients come from `tf.grads`, numeric ones from central differences in
 * float32 on a random sample of coordinates.
 */
import * as tf from '@tensorflow/tfjs';
import { SwitchyardError } from './errors';
import { Rng } from './rng';

/** Options for {@link checkGradients}. */
export interface GradCheckOptions {
  /** Step of the central difference. */
  readonly eps?: number;
  /** Allowed |analytic - numeric| <= atol + rtol * |numeric|. */
  readonly atol?: number;
  readonly rtol?: number;
  /** Coordinates checked per input (sampled); all when the input is smaller. */
  readonly maxChecksPerInput?: number;
  /** Indices of inputs to check (default all). */
  readonly wrt?: readonly number[];
  readonly seed?: number;
}

/** One coordinate that failed, or the worst one seen. */
export interface GradCheckEntry {
  readonly input: number;
  readonly index: number;
  readonly analytic: number;
  readonly numeric: number;
}

/** Result of {@link checkGradients}. */
export interface GradCheckResult {
  readonly checked: number;
  readonly maxAbsError: number;
  readonly worst: GradCheckEntry | undefined;
  readonly failures: readonly GradCheckEntry[];
}

/**
 * Compares analytic gradients of `f(...inputs)` with central differences. Throws GRADIENT_MISMATCH
 * listing the first failures; returns the statistics otherwise. Leaves no tensors behind.
 *
 * @example
 * ```ts
 * checkGradients((x) => softmax(x), [tf.randomNormal([3, 5])]);
 * ```
 */
export function checkGradients(
  f: (...inputs: tf.Tensor[]) => tf.Tensor,
  inputs: readonly tf.Tensor[],
  options: GradCheckOptions = {},
): GradCheckResult {
  const eps = options.eps ?? 1e-2;
  const atol = options.atol ?? 2e-3;
  const rtol = options.rtol ?? 2e-2;
  const maxChecks = options.maxChecksPerInput ?? 24;
  const wrt = options.wrt ?? inputs.map((_, i) => i);
  const rng = new Rng(options.seed ?? 1234);

  // Fixed output weights make the scalar sensitive to every output element.
  const probe = tf.tidy(() => f(...inputs));
  const weights = rng.uniformTensor(probe.shape, -1, 1);
  probe.dispose();
  const scalarF = (...xs: tf.Tensor[]): tf.Scalar =>
    tf.tidy(() => tf.sum(tf.mul(f(...xs).toFloat(), weights)) as tf.Scalar);

  const analytic = tf.tidy(() => {
    const gradFn = tf.grads((...xs: tf.Tensor[]) => scalarF(...xs));
    return gradFn(inputs as tf.Tensor[]).map((g) => g.dataSync().slice());
  });

  const failures: GradCheckEntry[] = [];
  let worst: GradCheckEntry | undefined;
  let maxAbsError = 0;
  let checked = 0;
  for (const i of wrt) {
    const x = inputs[i]!;
    if (x.dtype !== 'float32') continue;
    const base = x.dataSync().slice() as Float32Array;
    const n = base.length;
    const coords =
      n <= maxChecks
        ? Array.from({ length: n }, (_, j) => j)
        : Array.from(rng.permutation(n).slice(0, maxChecks));
    for (const j of coords) {
      const evalAt = (delta: number): number =>
        tf.tidy(() => {
          const data = base.slice();
          data[j] = base[j]! + delta;
          const xs = inputs.map((t, k) => (k === i ? tf.tensor(data, t.shape, 'float32') : t));
          return scalarF(...xs).dataSync()[0]!;
        });
      const numeric = (evalAt(eps) - evalAt(-eps)) / (2 * eps);
      const a = analytic[i]![j]!;
      const err = Math.abs(a - numeric);
      const entry = { input: i, index: j, analytic: a, numeric };
      checked++;
      if (err > maxAbsError || !Number.isFinite(err)) {
        maxAbsError = Number.isFinite(err) ? err : Number.POSITIVE_INFINITY;
        worst = entry;
      }
      if (!(err <= atol + rtol * Math.abs(numeric))) failures.push(entry);
    }
  }
  weights.dispose();
  if (failures.length > 0) {
    const lines = failures
      .slice(0, 5)
      .map(
        (e) =>
          `input ${e.input}[${e.index}]: analytic ${e.analytic.toPrecision(6)} vs numeric ${e.numeric.toPrecision(6)}`,
      );
    throw new SwitchyardError(
      'GRADIENT_MISMATCH',
      `gradient check failed at ${failures.length} of ${checked} coordinates (atol ${atol}, rtol ${rtol}):\n  ${lines.join('\n  ')}`,
      { details: { failures: failures.slice(0, 20) } },
    );
  }
  return { checked, maxAbsError, worst, failures };
}
