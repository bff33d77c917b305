import { Rng } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { reconstruct, svd } from './svd';

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** A = U diag(s) V^T from orthonormal U, V (Givens rotations of the identity) and chosen s. */
function known(rows: number, cols: number, s: number[]): Float64Array {
  const rot = (n: number, seed: number): Float64Array => {
    const q = new Float64Array(n * n);
    for (let i = 0; i < n; i++) q[i * n + i] = 1;
    const rng = new Rng(seed);
    for (let r = 0; r < 3 * n; r++) {
      const [i, j] = [Math.floor(rng.float() * n), Math.floor(rng.float() * n)];
      if (i === j) continue;
      const t = rng.float() * Math.PI;
      const [c, sn] = [Math.cos(t), Math.sin(t)];
      for (let k = 0; k < n; k++) {
        const [a, b] = [q[k * n + i]!, q[k * n + j]!];
        q[k * n + i] = c * a - sn * b;
        q[k * n + j] = sn * a + c * b;
      }
    }
    return q;
  };
  const U = rot(rows, 1);
  const V = rot(cols, 2);
  const out = new Float64Array(rows * cols);
  s.forEach((sv, k) => {
    for (let i = 0; i < rows; i++)
      for (let j = 0; j < cols; j++) out[i * cols + j]! += U[i * rows + k]! * sv * V[j * cols + k]!;
  });
  return out;
}

describe('svd', () => {
  it('finds known singular values and reconstructs the matrix (tall and wide)', () => {
    for (const [rows, cols] of [
      [5, 3],
      [3, 6],
    ] as const) {
      const s = [4, 2.5, 0.5];
      const a = known(rows, cols, s);
      const d = svd(a, rows, cols);
      expect(Array.from(d.s)).toEqual(s.map((v) => expect.closeTo(v, 10)));
      expect(maxDiff(reconstruct(d), a)).toBeLessThan(1e-12);
      // orthonormal columns
      for (let x = 0; x < 3; x++)
        for (let y = 0; y < 3; y++) {
          let uu = 0;
          let vv = 0;
          for (let i = 0; i < rows; i++) uu += d.uMR[i * 3 + x]! * d.uMR[i * 3 + y]!;
          for (let i = 0; i < cols; i++) vv += d.vNR[i * 3 + x]! * d.vNR[i * 3 + y]!;
          expect(uu).toBeCloseTo(x === y ? 1 : 0, 10);
          expect(vv).toBeCloseTo(x === y ? 1 : 0, 10);
        }
    }
  });

  it('the rank-r truncation is the best approximation: its error is the dropped singular values', () => {
    const a = known(6, 4, [3, 2, 1, 0.25]);
    const d = svd(a, 6, 4, 2);
    expect(d.rank).toBe(2);
    const approx = reconstruct(d);
    let err = 0;
    for (let i = 0; i < a.length; i++) err += (a[i]! - approx[i]!) ** 2;
    expect(Math.sqrt(err)).toBeCloseTo(Math.hypot(1, 0.25), 10);
  });

  it('a diagonal and a rank-one matrix', () => {
    const d = svd([0, 0, 0, 0, 2, 0], 2, 3);
    expect(Array.from(d.s)).toEqual([2, 0]);
    const r1 = svd([1, 2, 2, 4], 2, 2);
    expect(r1.s[0]).toBeCloseTo(5, 12);
    expect(r1.s[1]).toBeCloseTo(0, 12);
  });

  it('rejects a rank the matrix cannot have, and malformed input', () => {
    expect(() => svd(new Float64Array(6), 2, 3, 3)).toThrow(
      /`rank` passed to svd\(\) must be an integer in \[1, min\(rows, cols\)\] = \[1, 2\] for a 2 x 3 matrix, got 3/,
    );
    expect(() => svd(new Float64Array(5), 2, 3)).toThrow(/`a` passed to svd\(\) must be 6 values/);
    expect(() => svd([1, Number.NaN], 1, 2)).toThrow(/a\[1\]/);
  });
});
