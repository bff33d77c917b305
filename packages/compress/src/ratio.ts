/**
 * The compression ratio of shared-basis low-rank experts. K experts of shape d_in x d_out hold
 * K d_in d_out weights; compressed they hold one basis (d_in d_out) and K pairs of rank-r factors
 * (K r (d_in + d_out)), so the ratio is `K / (1 + K r (1/d_in + 1/d_out))`.
 */
import { checkInt } from '@switchyard/tensor';

/** The shape a ratio is computed for. */
export interface RatioShape {
  /** K: experts sharing one basis (the group size). */
  readonly groupSize: number;
  readonly dIn: number;
  readonly dOut: number;
  /** r: rank of each expert's residual. */
  readonly rank: number;
}

/**
 * `K / (1 + K r (1/d_in + 1/d_out))`: weights of K full experts over the weights of one basis and K
 * rank-r residuals. At d_in = d_out = 4096, K = 8, r = 16 this is 8 / 1.0625 = 7.529...
 *
 * When to use: to size G (hence K = E / G) and r before compressing; the measured ratio of a
 * compressed model (parameters before / after) equals it for equal-size groups.
 *
 * @example
 * ```ts
 * compressionRatio({ groupSize: 8, dIn: 4096, dOut: 4096, rank: 16 }); // 7.529411764705882
 * ```
 */
export function compressionRatio(shape: RatioShape): number {
  const fn = 'compressionRatio';
  const K = checkInt(fn, 'groupSize', shape?.groupSize, { min: 1 });
  const dIn = checkInt(fn, 'dIn', shape.dIn, { min: 1 });
  const dOut = checkInt(fn, 'dOut', shape.dOut, { min: 1 });
  const r = checkInt(fn, 'rank', shape.rank, { min: 0, max: Math.min(dIn, dOut) });
  return K / (1 + K * r * (1 / dIn + 1 / dOut));
}
