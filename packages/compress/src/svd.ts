/**
 * Singular value decomposition of a dense matrix, from ml-matrix (the JAMA algorithm: Householder
 * bidiagonalisation and implicit-shift QR, in float64), and its truncation to rank r.
 *
 * Shape letters: M rows, N columns, P = min(M, N), R kept rank.
 */
import { checkInt, invalidArgument } from '@switchyard/tensor';
import { Matrix, SingularValueDecomposition } from 'ml-matrix';

/** A thin SVD `A = U diag(s) V^T` of an M x N matrix, singular values descending. */
export interface Svd {
  readonly rows: number;
  readonly cols: number;
  /** Left singular vectors, M x R row-major (column j is u_j). */
  readonly uMR: Float64Array;
  /** Singular values, descending [R]. */
  readonly s: Float64Array;
  /** Right singular vectors, N x R row-major (column j is v_j). */
  readonly vNR: Float64Array;
  /** R: the number of singular triplets kept. */
  readonly rank: number;
}

function checkMatrix(fn: string, a: ArrayLike<number>, rows: number, cols: number): void {
  checkInt(fn, 'rows', rows, { min: 1 });
  checkInt(fn, 'cols', cols, { min: 1 });
  if (a === null || typeof a !== 'object' || a.length !== rows * cols)
    throw invalidArgument(fn, 'a', `${rows * cols} values (rows x cols, row-major)`, a?.length ?? a);
  for (let i = 0; i < a.length; i++)
    if (!Number.isFinite(a[i]!)) throw invalidArgument(fn, `a[${i}]`, 'a finite number', a[i]);
}

/**
 * The SVD of an M x N matrix given row-major, truncated to its `rank` largest singular values
 * (default all min(M, N)): the best rank-R approximation in Frobenius norm is `U diag(s) V^T`.
 *
 * When to use: to initialise low-rank factors from a residual, or to inspect a matrix's spectrum.
 *
 * @example
 * ```ts
 * const { uMR, s, vNR } = svd(Float64Array.from([3, 0, 0, 2]), 2, 2); // s = [3, 2]
 * ```
 */
export function svd(a: ArrayLike<number>, rows: number, cols: number, rank = Math.min(rows, cols)): Svd {
  const fn = 'svd';
  checkMatrix(fn, a, rows, cols);
  const P = Math.min(rows, cols);
  if (!Number.isInteger(rank) || rank < 1 || rank > P)
    throw invalidArgument(
      fn,
      'rank',
      `an integer in [1, min(rows, cols)] = [1, ${P}] for a ${rows} x ${cols} matrix`,
      rank,
    );
  const m = new Matrix(rows, cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) m.set(i, j, a[i * cols + j]!);
  const dec = new SingularValueDecomposition(m, { autoTranspose: true });
  const sAll = dec.diagonal;
  const U = dec.leftSingularVectors;
  const V = dec.rightSingularVectors;
  // Sort descending (the algorithm returns them sorted; this keeps the contract explicit).
  const order = Array.from({ length: P }, (_, i) => i).sort((x, y) => sAll[y]! - sAll[x]!);
  const uMR = new Float64Array(rows * rank);
  const vNR = new Float64Array(cols * rank);
  const s = new Float64Array(rank);
  for (let k = 0; k < rank; k++) {
    const j = order[k]!;
    s[k] = Math.max(0, sAll[j]!);
    for (let i = 0; i < rows; i++) uMR[i * rank + k] = U.get(i, j);
    for (let i = 0; i < cols; i++) vNR[i * rank + k] = V.get(i, j);
  }
  return { rows, cols, uMR, s, vNR, rank };
}

/**
 * `U diag(s) V^T` of an SVD, row-major M x N.
 *
 * @example
 * ```ts
 * const back = reconstruct(svd(a, 4, 3)); // equals a up to rounding
 * ```
 */
export function reconstruct(d: Svd): Float64Array {
  const { rows, cols, uMR, s, vNR, rank } = d;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let k = 0; k < rank; k++) {
      const us = uMR[i * rank + k]! * s[k]!;
      if (us === 0) continue;
      for (let j = 0; j < cols; j++) out[i * cols + j]! += us * vNR[j * rank + k]!;
    }
  return out;
}
