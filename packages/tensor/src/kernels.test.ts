// Regression tests for the kernel and gradient fixes installed by initBackend().
import { describe, expect, it } from 'vitest';
import { tf } from './index';
import { expectNoLeaks } from './memory';

describe('kernel fixes', () => {
  it('UnsortedSegmentSum works on every backend (gather gradient on wasm)', () => {
    const out = tf.unsortedSegmentSum(
      tf.tensor2d([
        [1, 2],
        [3, 4],
        [5, 6],
      ]),
      tf.tensor1d([1, -1, 1], 'int32'),
      3,
    );
    expect(out.arraySync()).toEqual([
      [0, 0],
      [6, 8],
      [0, 0],
    ]);
    const g = tf.grad((x: tf.Tensor) => tf.gather(x, tf.tensor1d([1, 1], 'int32')).sum())(tf.ones([2, 3]));
    expect(g.arraySync()).toEqual([
      [0, 0, 0],
      [2, 2, 2],
    ]);
  });

  it('int32 segment sums work', () => {
    const out = tf.unsortedSegmentSum(tf.tensor1d([1, 2, 3], 'int32'), tf.tensor1d([0, 0, 1], 'int32'), 2);
    expect(out.arraySync()).toEqual([3, 3]);
  });

  it('tf.matMul with transposes gives the same values as explicit transposes (wrapped kernel on wasm)', () => {
    const a = tf.randomNormal([2, 6, 5], 0, 1, 'float32', 1);
    const b = tf.randomNormal([2, 7, 6], 0, 1, 'float32', 2);
    const fast = tf.matMul(a, b, true, true);
    const ref = tf.matMul(tf.transpose(a, [0, 2, 1]), tf.transpose(b, [0, 2, 1]));
    expect(tf.max(tf.abs(tf.sub(fast, ref))).dataSync()[0]).toBeLessThan(1e-4);
  });

  it('single products with transposed operands match explicit transposes, values and gradients', async () => {
    // Off the GEMM's 4 x 8 tiles and past its 256-deep / 256-wide blocks; 2-D and batch-1 3-D.
    for (const [M, K, N] of [
      [5, 3, 7],
      [37, 300, 270],
    ] as const) {
      for (const [tA, tB] of [
        [true, false],
        [false, true],
        [true, true],
      ] as const) {
        for (const lead of [[], [1]]) {
          await expectNoLeaks(() =>
            tf.tidy(() => {
              const a = tf.randomNormal([...lead, ...(tA ? [K, M] : [M, K])], 0, 1, 'float32', 3);
              const b = tf.randomNormal([...lead, ...(tB ? [N, K] : [K, N])], 0, 1, 'float32', 4);
              const perm = lead.length === 0 ? [1, 0] : [0, 2, 1];
              const ref = tf.matMul(tA ? tf.transpose(a, perm) : a, tB ? tf.transpose(b, perm) : b);
              const out = tf.matMul(a, b, tA, tB);
              expect(out.shape).toEqual([...lead, M, N]);
              expect(tf.max(tf.abs(tf.sub(out, ref))).dataSync()[0]).toBeLessThan(1e-3);
            }),
          );
        }
      }
    }
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const a = tf.randomNormal([9, 6], 0, 1, 'float32', 5);
        const b = tf.randomNormal([5, 6], 0, 1, 'float32', 6);
        const dy = tf.randomNormal([9, 5], 0, 1, 'float32', 7); // op(x) [9, 6] times op(y) [6, 5]
        for (const [tA, tB] of [
          [false, false],
          [true, true],
        ] as const) {
          const x = tA ? tf.transpose(a) : a;
          const y = tB ? b : tf.transpose(b);
          const got = tf.grads((p: tf.Tensor, q: tf.Tensor) => tf.sum(tf.mul(tf.matMul(p, q, tA, tB), dy)))([
            x,
            y,
          ]);
          const want = tf.grads((p: tf.Tensor, q: tf.Tensor) =>
            tf.sum(tf.mul(tf.matMul(tA ? tf.transpose(p) : p, tB ? tf.transpose(q) : q), dy)),
          )([x, y]);
          got.forEach((g, i) => {
            expect(g.shape).toEqual(want[i]!.shape);
            expect(tf.max(tf.abs(tf.sub(g, want[i]!))).dataSync()[0]).toBeLessThan(1e-4);
          });
        }
      }),
    );
  });

  it('the transposed-product path frees its temporaries', async () => {
    const a = tf.ones([4, 3]);
    await expectNoLeaks(() => tf.matMul(a, a, true, false));
    await expectNoLeaks(() => tf.matMul(a, a, false, true));
    a.dispose();
  });

  it('comparison ops act as constants on the tape instead of failing backprop', () => {
    const g = tf.grad((x: tf.Tensor) => tf.mul(x, tf.greater(x, 0).toFloat()).sum())(tf.tensor1d([-1, 2]));
    expect(Array.from(g.dataSync())).toEqual([0, 1]);
  });

  it.each([
    ['equal batches', [3, 4, 5], [3, 5, 2]],
    ['broadcast right operand', [3, 4, 5], [1, 5, 2]],
    ['rank-2 right operand', [3, 4, 5], [5, 2]],
    ['broadcast left operand', [1, 4, 5], [3, 5, 2]],
    ['rank-4 batches', [2, 3, 4, 5], [2, 3, 5, 2]],
  ])('batched products (%s) equal the per-matrix products', (_label, sa, sb) => {
    const a = tf.randomNormal(sa as number[], 0, 1, 'float32', 3);
    const b = tf.randomNormal(sb as number[], 0, 1, 'float32', 4);
    const got = tf.matMul(a, b).arraySync() as number[][][];
    const A = a.arraySync() as unknown as number[][][];
    const B = b.arraySync() as unknown as number[][][];
    const flat = (x: unknown, depth: number): number[][][] =>
      depth <= 3 ? (x as number[][][]) : (x as unknown[]).flatMap((y) => flat(y, depth - 1));
    const gotF = flat(got, (sa as number[]).length);
    const aF =
      (sa as number[]).length === 2 ? [A as unknown as number[][]] : flat(A, (sa as number[]).length);
    const bF =
      (sb as number[]).length === 2 ? [B as unknown as number[][]] : flat(B, (sb as number[]).length);
    gotF.forEach((c, i) => {
      const ai = aF[aF.length === 1 ? 0 : i]!;
      const bi = bF[bF.length === 1 ? 0 : i]!;
      c.forEach((row, m) => {
        row.forEach((v, n) => {
          const ref = ai[m]!.reduce((acc, x, k) => acc + x * bi[k]![n]!, 0);
          expect(Math.abs(v - ref)).toBeLessThan(1e-4);
        });
      });
    });
    tf.dispose([a, b]);
  });

  it('a clone shares its source memory, keeps its values after the source is disposed, and frees it last', async () => {
    const x = tf.tensor2d([
      [1, 2],
      [3, 4],
    ]);
    const buffers = tf.memory().numDataBuffers;
    const c = tf.clone(x);
    // The tape clones every tensor a gradient needs: a copy here was a copy of every saved activation.
    expect(tf.memory().numDataBuffers).toBe(buffers);
    x.dispose();
    expect(c.arraySync()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    const y = tf.add(c, 1);
    c.dispose();
    expect(tf.memory().numDataBuffers).toBe(buffers);
    await expectNoLeaks(() => tf.clone(y));
    const g = tf.grad((v: tf.Tensor) => tf.mul(tf.clone(v), v).sum())(y);
    expect(g.arraySync()).toEqual([
      [4, 6],
      [8, 10],
    ]);
    tf.dispose([y, g]);
  });

  it('a cast to the dtype a tensor has shares its memory; a real cast converts', async () => {
    const x = tf.tensor1d([1.5, -2.25, 3]);
    const buffers = tf.memory().numDataBuffers;
    const same = tf.cast(x, 'float32');
    expect(tf.memory().numDataBuffers).toBe(buffers);
    x.dispose();
    expect(Array.from(same.dataSync())).toEqual([1.5, -2.25, 3]);
    const ints = tf.cast(same, 'int32');
    expect(ints.dtype).toBe('int32');
    expect(Array.from(ints.dataSync())).toEqual([1, -2, 3]);
    await expectNoLeaks(() => tf.cast(ints, 'int32'));
    tf.dispose([same, ints]);
  });

  it('batched products with transposes match and free their temporaries', async () => {
    const a = tf.randomNormal([4, 6, 5], 0, 1, 'float32', 5);
    const b = tf.randomNormal([4, 7, 6], 0, 1, 'float32', 6);
    const fast = tf.matMul(a, b, true, true);
    const ref = tf.stack(
      tf.unstack(a).map((ai, i) => tf.matMul(tf.transpose(ai), tf.transpose(tf.unstack(b)[i]!))),
    );
    expect(tf.max(tf.abs(tf.sub(fast, ref))).dataSync()[0]).toBeLessThan(1e-4);
    await expectNoLeaks(() => tf.matMul(a, b, true, true));
    const ones = tf.ones([1, 5, 3]);
    await expectNoLeaks(() => tf.matMul(a, ones));
    await expectNoLeaks(() =>
      tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y, true, true).sum())([a, b]),
    );
    tf.dispose([a, b, fast, ref, ones]);
  });

  it('products over an empty inner dimension are zeros (the empty sum), single and batched', async () => {
    // Fill the allocator with non-zero data first, so that uninitialised output would show.
    tf.dispose(Array.from({ length: 4 }, () => tf.fill([2, 3, 4], 7)));
    for (const [sa, sb, ta, tb] of [
      [[3, 0], [0, 4], false, false],
      [[0, 3], [4, 0], true, true],
      [[2, 3, 0], [2, 0, 4], false, false],
      [[1, 3, 0], [2, 0, 4], false, false],
    ] as [number[], number[], boolean, boolean][]) {
      const got = tf.tidy(() => tf.matMul(tf.zeros(sa), tf.zeros(sb), ta, tb));
      expect(Array.from(got.dataSync()).every((v) => v === 0)).toBe(true);
      expect(got.size).toBe((sa.length === 3 ? 2 : 1) * 3 * 4);
      got.dispose();
    }
    await expectNoLeaks(() => tf.tidy(() => tf.matMul(tf.zeros([2, 3, 0]), tf.zeros([2, 0, 4]))));
  });

  it('batched products (equal batches, a shared left or right operand, every transpose) match a float64 reference', async () => {
    /** op(x)[i] as nested arrays: batch i of x (or its only batch), transposed when asked. */
    const matrices = (x: tf.Tensor, transposed: boolean): number[][][] =>
      (x.arraySync() as number[][][]).map((m) =>
        transposed ? m[0]!.map((_, c) => m.map((row) => row[c]!)) : m,
      );
    const cases: [number[], number[], boolean, boolean][] = [
      [[3, 9, 5], [3, 5, 11], false, false],
      [[1, 9, 5], [3, 5, 11], false, false],
      [[3, 9, 5], [1, 5, 11], false, false],
      [[3, 5, 9], [3, 11, 5], true, true],
      [[1, 5, 9], [3, 5, 11], true, false],
      [[3, 9, 5], [1, 11, 5], false, true],
      [[2, 33, 17], [2, 17, 70], false, false],
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const a = tf.randomNormal(sa, 0, 1, 'float32', 11);
      const b = tf.randomNormal(sb, 0, 1, 'float32', 12);
      const [A, B] = [matrices(a, ta), matrices(b, tb)];
      const batch = Math.max(A.length, B.length);
      const expected = Array.from({ length: batch }, (_, i) => {
        const [Ai, Bi] = [A[A.length === 1 ? 0 : i]!, B[B.length === 1 ? 0 : i]!];
        return Ai.map((row) => Bi[0]!.map((_, n) => row.reduce((acc, v, k) => acc + v * Bi[k]![n]!, 0)));
      });
      const got = tf.matMul(a, b, ta, tb);
      expect(got.shape).toEqual([batch, expected[0]!.length, expected[0]![0]!.length]);
      const flat = got.dataSync();
      const want = expected.flat(2);
      const worst = Math.max(...want.map((v, i) => Math.abs(flat[i]! - v) / (1 + Math.abs(v))));
      expect(worst).toBeLessThan(1e-4);
      await expectNoLeaks(() => tf.matMul(a, b, ta, tb));
      tf.dispose([a, b, got]);
    }
  });
});
