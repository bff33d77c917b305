// Grouped products against a float64 reference computed segment by segment, on ragged segments
// (empty ones, a single one), shapes that are not multiples of the kernel's tiles or blocks, sums of
// terms, gradients, argument errors and leaks.
import { describe, expect, it } from 'vitest';
import { groupedMatMul, groupedMatMulIsFused, groupedMatMulTransposeA } from './grouped';
import { tf } from './index';
import { expectNoLeaks } from './memory';
import { Rng } from './rng';

const rng = new Rng(22);
const rand = (shape: number[]) => rng.normalTensor(shape) as tf.Tensor;

/** out[rows of e] = sum_i a_i[rows of e] @ opB(b_i[e]), in float64. */
function reference(as: tf.Tensor[], counts: number[], bs: tf.Tensor[], transposeB: boolean): Float64Array {
  const S = as[0]!.shape[0]!;
  const N = transposeB ? bs[0]!.shape[1]! : bs[0]!.shape[2]!;
  const out = new Float64Array(S * N);
  as.forEach((a, t) => {
    const K = a.shape[1]!;
    const av = a.dataSync();
    const bv = bs[t]!.dataSync();
    let row = 0;
    counts.forEach((c, e) => {
      for (let s = row; s < row + c; s++) {
        for (let n = 0; n < N; n++) {
          let sum = 0;
          for (let k = 0; k < K; k++) {
            const b = transposeB ? bv[e * N * K + n * K + k]! : bv[e * K * N + k * N + n]!;
            sum += av[s * K + k]! * b;
          }
          out[s * N + n]! += sum;
        }
      }
      row += c;
    });
  });
  return out;
}

/** out[e] = a[rows of e]^T @ g[rows of e], in float64. */
function referenceTransposeA(a: tf.Tensor, counts: number[], g: tf.Tensor): Float64Array {
  const [M, N] = [a.shape[1]!, g.shape[1]!];
  const [av, gv] = [a.dataSync(), g.dataSync()];
  const out = new Float64Array(counts.length * M * N);
  let row = 0;
  counts.forEach((c, e) => {
    for (let s = row; s < row + c; s++) {
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) out[e * M * N + m * N + n]! += av[s * M + m]! * gv[s * N + n]!;
      }
    }
    row += c;
  });
  return out;
}

/** Max |got - want| relative to max |want|. */
function relError(got: tf.Tensor, want: Float64Array): number {
  const g = got.dataSync();
  expect(g.length).toBe(want.length);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(g[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return err / Math.max(scale, 1e-30);
}

// [counts, K, N]: ragged with empty segments, one segment, widths off the 4 x 8 tiles, K past one
// 256-deep block, N past one 256-wide block.
const CASES: [number[], number, number][] = [
  [[3, 0, 5, 1, 0, 7], 5, 9],
  [[37], 19, 13],
  [[0, 0, 4], 3, 1],
  [[1, 2, 3], 1, 7],
  [[70, 0, 33, 2], 300, 37],
  [[9, 13], 33, 263],
];

describe('groupedMatMul', () => {
  it('runs fused exactly on wasm', () => {
    expect(groupedMatMulIsFused()).toBe(tf.getBackend() === 'wasm');
  });

  for (const [counts, K, N] of CASES) {
    const S = counts.reduce((x, y) => x + y, 0);
    it(`matches the per-segment reference: counts ${JSON.stringify(counts)}, K ${K}, N ${N}`, async () => {
      await expectNoLeaks(() =>
        tf.tidy(() => {
          const E = counts.length;
          const a = rand([S, K]) as tf.Tensor2D;
          const b = rand([E, K, N]) as tf.Tensor3D;
          const bT = rand([E, N, K]) as tf.Tensor3D;
          expect(relError(groupedMatMul(a, counts, b), reference([a], counts, [b], false))).toBeLessThan(
            1e-5,
          );
          const nt = groupedMatMul(a, counts, bT, { transposeB: true });
          expect(relError(nt, reference([a], counts, [bT], true))).toBeLessThan(1e-5);
          // A sum of two terms with different contracted widths.
          const a2 = rand([S, K + 3]) as tf.Tensor2D;
          const b2T = rand([E, N, K + 3]) as tf.Tensor3D;
          const sum = groupedMatMul([a, a2], counts, [bT, b2T], { transposeB: true });
          expect(relError(sum, reference([a, a2], counts, [bT, b2T], true))).toBeLessThan(1e-5);
          const g = rand([S, N]) as tf.Tensor2D;
          const tn = groupedMatMulTransposeA(a, counts, g);
          expect(tn.shape).toEqual([E, K, N]);
          expect(relError(tn, referenceTransposeA(a, counts, g))).toBeLessThan(1e-5);
        }),
      );
    });
  }

  it('gives the documented examples', () => {
    tf.tidy(() => {
      const wEKN = tf.stack([tf.ones([2, 4]), tf.fill([2, 4], 2)]) as tf.Tensor3D;
      expect(groupedMatMul(tf.ones([3, 2]), [1, 2], wEKN).arraySync()).toEqual([
        [2, 2, 2, 2],
        [4, 4, 4, 4],
        [4, 4, 4, 4],
      ]);
      const out = groupedMatMulTransposeA(tf.ones([3, 2]), [0, 3], tf.ones([3, 4]));
      expect(out.shape).toEqual([2, 2, 4]);
      expect(Array.from(out.dataSync())).toEqual([...new Array(8).fill(0), ...new Array(8).fill(3)]);
    });
  });

  it('handles no rows and empty widths', () => {
    tf.tidy(() => {
      expect(groupedMatMul(tf.zeros([0, 3]), [0, 0], tf.ones([2, 3, 4])).shape).toEqual([0, 4]);
      const empty = groupedMatMulTransposeA(tf.zeros([0, 3]), [0, 0], tf.zeros([0, 4]));
      expect(Array.from(empty.dataSync())).toEqual(new Array(24).fill(0));
      expect(groupedMatMul(tf.ones([2, 0]), [2], tf.ones([1, 0, 3])).arraySync()).toEqual([
        [0, 0, 0],
        [0, 0, 0],
      ]);
    });
  });

  it('differentiates like per-segment matMuls', async () => {
    const counts = [4, 0, 3, 6];
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const [S, K, N, E] = [13, 6, 5, 4];
        const x = rand([S, K]);
        const x2 = rand([S, 3]);
        const w = rand([E, N, K]);
        const w2 = rand([E, N, 3]);
        const dy = rand([S, N]);
        const grouped = (a: tf.Tensor, a2: tf.Tensor, b: tf.Tensor, b2: tf.Tensor) =>
          tf.sum(
            tf.mul(
              groupedMatMul(
                [a as tf.Tensor2D, a2 as tf.Tensor2D],
                counts,
                [b as tf.Tensor3D, b2 as tf.Tensor3D],
                {
                  transposeB: true,
                },
              ),
              dy,
            ),
          );
        const perSegment = (a: tf.Tensor, a2: tf.Tensor, b: tf.Tensor, b2: tf.Tensor) => {
          const parts: tf.Tensor[] = [];
          let row = 0;
          counts.forEach((c, e) => {
            if (c === 0) return;
            const seg = (t: tf.Tensor) => tf.slice(t, [row, 0], [c, t.shape[1]!]);
            const mat = (t: tf.Tensor) =>
              tf.slice(t, [e, 0, 0], [1, N, t.shape[2]!]).reshape([N, t.shape[2]!]);
            parts.push(
              tf.add(tf.matMul(seg(a), mat(b), false, true), tf.matMul(seg(a2), mat(b2), false, true)),
            );
            row += c;
          });
          return tf.sum(tf.mul(tf.concat(parts, 0), dy));
        };
        const got = tf.grads(grouped)([x, x2, w, w2]);
        const want = tf.grads(perSegment)([x, x2, w, w2]);
        got.forEach((g, i) => {
          expect(g.shape).toEqual(want[i]!.shape);
          expect(tf.max(tf.abs(tf.sub(g, want[i]!))).dataSync()[0]).toBeLessThan(1e-4);
        });
        // The transposed-A form: d(a^T g) by the same comparison.
        const gS = rand([S, 2]);
        const dOut = rand([E, K, 2]);
        const tn = (a: tf.Tensor, g: tf.Tensor) =>
          tf.sum(tf.mul(groupedMatMulTransposeA(a as tf.Tensor2D, counts, g as tf.Tensor2D), dOut));
        const tnRef = (a: tf.Tensor, g: tf.Tensor) => {
          let row = 0;
          const parts = counts.map((c) => {
            const part =
              c === 0
                ? tf.zeros([K, 2])
                : tf.matMul(tf.slice(a, [row, 0], [c, K]), tf.slice(g, [row, 0], [c, 2]), true);
            row += c;
            return part;
          });
          return tf.sum(tf.mul(tf.stack(parts), dOut));
        };
        const gotTN = tf.grads(tn)([x, gS]);
        const wantTN = tf.grads(tnRef)([x, gS]);
        gotTN.forEach((g, i) => {
          expect(tf.max(tf.abs(tf.sub(g, wantTN[i]!))).dataSync()[0]).toBeLessThan(1e-4);
        });
      }),
    );
  });

  it('rejects bad arguments with a message naming them', () => {
    tf.tidy(() => {
      const a = tf.ones([5, 3]) as tf.Tensor2D;
      const b = tf.ones([2, 3, 4]) as tf.Tensor3D;
      expect(() => groupedMatMul(a, [2, 2], b)).toThrow(
        /countsE.*groupedMatMul\(\).*sum to the number of rows \(5\), got 4/,
      );
      expect(() => groupedMatMul(a, [5], b)).toThrow(/one count per stacked matrix \(2\), got 1/);
      expect(() => groupedMatMul(a, [2, -1], b)).toThrow(/countsE\[1\]/);
      expect(() => groupedMatMul(a, [2, 3], tf.ones([2, 4, 4]) as tf.Tensor3D)).toThrow(
        /`b` passed to groupedMatMul\(\) must have shape \[E, 3, N\], got \[2, 4, 4\]/,
      );
      expect(() => groupedMatMul(a, [2, 3], b, { transposeB: true })).toThrow(/\[E, N, 3\]/);
      expect(() => groupedMatMul(a, [2, 3], tf.ones([3, 4]) as unknown as tf.Tensor3D)).toThrow(
        /3-D float32/,
      );
      expect(() => groupedMatMul([a, a], [2, 3], [b])).toThrow(/as many stacked matrices/);
      expect(() => groupedMatMulTransposeA(a, [2, 3], tf.ones([4, 2]) as tf.Tensor2D)).toThrow(
        /`g` passed to groupedMatMulTransposeA\(\)/,
      );
      expect(() => groupedMatMulTransposeA(a, [], tf.ones([5, 2]) as tf.Tensor2D)).toThrow(/countsE/);
    });
  });
});
