// The memory-bound kernels replaced on wasm (GatherV2, UnsortedSegmentSum, Slice, Exp, Sum over
// leading axes): equal to plain-JS references for many shapes and dtypes, equal bit for bit to the
// tfjs kernels they replace (wasm), Exp within 2 ulp, gradients through them correct, no leaks. On
// cpu the replacements are not installed and the same references hold.
import { describe, expect, it } from 'vitest';
import { tf } from './index';
import { sliceLoops } from './internal/memory-kernels';
import { originalWasmKernel } from './internal/wasm-kernels';
import { expectNoLeaks } from './memory';

const onWasm = tf.getBackend() === 'wasm';
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const values = (n: number, seed = 1) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.3 + seed) * 100);
const ints = (n: number) => Int32Array.from({ length: n }, (_, i) => ((i * 7919) % 2001) - 1000);

/** The replaced tfjs kernel's output on the same inputs (wasm only): what the replacement must equal. */
function original(name: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>) {
  const kernel = originalWasmKernel(name)!;
  const backend = tf.backend();
  const info = kernel.kernelFunc({ inputs, backend, attrs: attrs as never }) as tf.TensorInfo;
  const out = (backend.readSync(info.dataId) as Float32Array | Int32Array).slice();
  backend.disposeData(info.dataId);
  return out;
}

function stridesOf(shape: readonly number[]): number[] {
  return shape.map((_, i) => sizeOf(shape.slice(i + 1)));
}

describe('GatherV2', () => {
  const gatherRef = (x: ArrayLike<number>, shape: number[], idx: number[], axis: number) => {
    const outer = sizeOf(shape.slice(0, axis));
    const dim = shape[axis]!;
    const inner = sizeOf(shape.slice(axis + 1));
    const out: number[] = [];
    for (let o = 0; o < outer; o++)
      for (const k of idx) for (let s = 0; s < inner; s++) out.push(x[(o * dim + k) * inner + s]!);
    return out;
  };
  const cases: [number[], number[], number[], number][] = [
    [[2048, 128], [1024], [], 0],
    [[37, 5], [11], [], 0],
    [[7, 5, 3], [2, 3], [], 1],
    [[7, 5, 3], [4], [], -1],
    [[6, 9], [], [], 0], // a scalar index
    [[8192], [333], [], 0],
    [[5, 0], [3], [], 0],
    [[5, 4], [0], [], 0],
    [[4, 33], [2, 2], [], 1],
  ];
  for (const [shape, idxShape, , axis] of cases) {
    it(`matches the reference for x ${JSON.stringify(shape)}, indices ${JSON.stringify(idxShape)}, axis ${axis}`, async () => {
      const ax = axis < 0 ? axis + shape.length : axis;
      const dim = shape[ax]!;
      const idx = Array.from({ length: sizeOf(idxShape) }, (_, i) => (i * 31 + 7) % Math.max(dim, 1));
      const xs = values(sizeOf(shape));
      await expectNoLeaks(() =>
        tf.tidy(() => {
          const indices = tf.tensor(idx, idxShape, 'int32');
          for (const x of [tf.tensor(xs, shape), tf.tensor(ints(xs.length), shape, 'int32')]) {
            const got = tf.gather(x, indices, axis);
            expect(got.shape).toEqual([...shape.slice(0, ax), ...idxShape, ...shape.slice(ax + 1)]);
            expect(Array.from(got.dataSync())).toEqual(gatherRef(x.dataSync(), shape, idx, ax));
            if (onWasm)
              expect(got.dataSync()).toEqual(original('GatherV2', { x, indices }, { axis, batchDims: 0 }));
          }
        }),
      );
    });
  }
  it('rejects an index out of range, naming it, as tfjs does', async () => {
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const x = tf.ones([7, 3]);
        expect(() => tf.gather(x, tf.tensor1d([1, 9], 'int32'))).toThrow(/index value 9 is not in \[0, 6\]/);
        expect(() => tf.gather(x, tf.tensor1d([-1], 'int32'))).toThrow(/index value -1 is not in \[0, 6\]/);
      }),
    );
  });
  it('has the gradient of a scatter-add (through UnsortedSegmentSum)', async () => {
    const idx = [3, 0, 3, 5, 1, 3];
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const x = tf.tensor(values(6 * 5), [6, 5]);
        const w = tf.tensor(values(idx.length * 5, 2), [idx.length, 5]);
        const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, tf.tensor1d(idx, 'int32')), w)))(x);
        const wv = w.dataSync();
        const expected = new Float32Array(30);
        idx.forEach((k, i) => {
          for (let s = 0; s < 5; s++)
            expected[k * 5 + s] = Math.fround(expected[k * 5 + s]! + wv[i * 5 + s]!);
        });
        expect(g.dataSync()).toEqual(expected);
      }),
    );
  });
});

describe('UnsortedSegmentSum', () => {
  const segRef = (x: ArrayLike<number>, ids: number[], inner: number, segments: number, float: boolean) => {
    const out = float ? new Float32Array(segments * inner) : new Int32Array(segments * inner);
    ids.forEach((s, i) => {
      if (s < 0 || s >= segments) return;
      for (let j = 0; j < inner; j++) out[s * inner + j] = out[s * inner + j]! + x[i * inner + j]!;
    });
    return out;
  };
  // The cpu backend's kernel is O(segments x rows), fails on ids of rank > 1 or on no segments, and
  // accumulates in float64: it gets the small cases and a tolerance.
  const cases: [number[], number, number, boolean][] = [
    [[1024, 128], 1, 2048, false],
    [[2048, 128], 1, 1024, false],
    [[13, 3, 5], 1, 4, true],
    [[6, 4, 7], 2, 5, false],
    [[9], 1, 3, true],
    [[0, 5], 1, 3, false],
    [[4, 0], 1, 3, false],
    [[5, 6], 1, 0, false],
  ];
  for (const [shape, idRank, segments, onCpu] of cases) {
    it.skipIf(!onWasm && !onCpu)(
      `matches the reference for x ${JSON.stringify(shape)} in ${segments} segments (ids of rank ${idRank})`,
      async () => {
        const idShape = shape.slice(0, idRank);
        const n = sizeOf(idShape);
        // Repeated ids, negative and out-of-range ones (dropped).
        const ids = Array.from({ length: n }, (_, i) =>
          i % 11 === 5 ? -1 : i % 13 === 3 ? segments + 2 : (i * 17) % Math.max(segments, 1),
        );
        const inner = sizeOf(shape.slice(idRank));
        const xs = values(sizeOf(shape));
        await expectNoLeaks(() =>
          tf.tidy(() => {
            const segmentIds = tf.tensor(ids, idShape as number[], 'int32') as unknown as tf.Tensor1D;
            for (const [x, float] of [
              [tf.tensor(xs, shape), true],
              [tf.tensor(ints(xs.length), shape, 'int32'), false],
            ] as const) {
              const got = tf.unsortedSegmentSum(x, segmentIds, segments);
              expect(got.shape).toEqual([segments, ...shape.slice(idRank)]);
              const want = segRef(x.dataSync(), ids, inner, segments, float);
              if (onWasm) {
                expect(got.dtype).toBe(x.dtype);
                expect(got.dataSync()).toEqual(want);
              } else {
                for (const [i, v] of got.dataSync().entries()) expect(v).toBeCloseTo(want[i]!, 3);
              }
            }
          }),
        );
      },
    );
  }
});

describe('Slice', () => {
  const sliceRef = (x: ArrayLike<number>, shape: number[], begin: number[], size: number[]) => {
    const st = stridesOf(shape);
    const out: number[] = [];
    const idx = new Array<number>(shape.length).fill(0);
    for (let o = 0; o < sizeOf(size); o++) {
      let rest = o;
      for (let d = size.length - 1; d >= 0; d--) {
        idx[d] = rest % size[d]!;
        rest = Math.floor(rest / size[d]!);
      }
      out.push(x[idx.reduce((a, v, d) => a + (v + begin[d]!) * st[d]!, 0)]!);
    }
    return out;
  };
  const cases: [number[], number[], number[]][] = [
    [
      [1024, 128],
      [0, 0],
      [1024, 64],
    ],
    [
      [1024, 2],
      [0, 1],
      [1024, 1],
    ],
    [
      [1024, 128],
      [100, 0],
      [300, 128],
    ],
    [[37], [5], [20]],
    [
      [5, 7, 9],
      [1, 2, 3],
      [3, 4, 5],
    ],
    [
      [5, 7, 9],
      [0, 0, 3],
      [5, 7, 1],
    ],
    [
      [3, 4, 5, 6],
      [1, 1, 1, 1],
      [2, 2, 2, 2],
    ], // four loops: tfjs's kernel
    [
      [2, 3, 4, 5, 6],
      [0, 1, 0, 2, 0],
      [2, 1, 4, 2, 6],
    ],
    [
      [6, 5],
      [2, 1],
      [0, 3],
    ],
    [
      [4, 1, 6],
      [1, 0, 0],
      [2, 1, 6],
    ],
  ];
  for (const [shape, begin, size] of cases) {
    it(`matches the reference for ${JSON.stringify(shape)} from ${JSON.stringify(begin)} size ${JSON.stringify(size)}`, async () => {
      const xs = values(sizeOf(shape));
      await expectNoLeaks(() =>
        tf.tidy(() => {
          for (const x of [tf.tensor(xs, shape), tf.tensor(ints(xs.length), shape, 'int32')]) {
            const got = tf.slice(x, begin, size);
            expect(got.shape).toEqual(size);
            expect(Array.from(got.dataSync())).toEqual(sliceRef(x.dataSync(), shape, begin, size));
          }
        }),
      );
    });
  }
  it('merges adjacent axes into at most three loops', () => {
    expect(sliceLoops([1024, 128], [0, 0], [1024, 128])).toEqual({
      offset: 0,
      d0: 1,
      d1: 1,
      d2: 131072,
      s0: 0,
      s1: 0,
    });
    expect(sliceLoops([1024, 2], [0, 1], [1024, 1])).toEqual({
      offset: 1,
      d0: 1,
      d1: 1024,
      d2: 1,
      s0: 0,
      s1: 2,
    });
    expect(sliceLoops([5, 7, 9], [1, 2, 3], [3, 4, 5])).toEqual({
      offset: 9 * 7 + 18 + 3,
      d0: 3,
      d1: 4,
      d2: 5,
      s0: 63,
      s1: 9,
    });
    expect(sliceLoops([3, 4, 5, 6], [1, 1, 1, 1], [2, 2, 2, 2])).toBeNull();
  });
});

describe('Exp', () => {
  /** Distance in units in the last place between two f32 values of the same sign. */
  const ulps = (a: number, b: number) => {
    const f = new Float32Array([a, b]);
    const i = new Int32Array(f.buffer);
    return Math.abs(i[0]! - i[1]!);
  };
  it('is within 2 ulp of the correctly rounded exp over the whole finite range', async () => {
    const n = 200_003;
    const xs = Float32Array.from({ length: n }, (_, i) => -103 + (192 * i) / (n - 1));
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const got = tf.exp(tf.tensor(xs)).dataSync();
        let worst = 0;
        for (let i = 0; i < n; i++) {
          const want = Math.fround(Math.exp(xs[i]!));
          // Subnormal results carry fewer bits: compare them absolutely.
          if (want < 1.1754944e-38) expect(Math.abs(got[i]! - want)).toBeLessThanOrEqual(2 * 1.4e-45);
          else worst = Math.max(worst, ulps(got[i]!, want));
        }
        expect(worst).toBeLessThanOrEqual(2);
      }),
    );
  });
  it('keeps the special values', async () => {
    const xs = [0, -0, 1, -Infinity, Infinity, Number.NaN, 88.7, 89, 1000, -87.5, -104, -1e9, 1e-10];
    await expectNoLeaks(() =>
      tf.tidy(() => {
        const got = Array.from(tf.exp(tf.tensor(xs)).dataSync());
        expect(got.slice(0, 3)).toEqual([1, 1, Math.fround(Math.E)]);
        expect(got[3]).toBe(0);
        expect(got[4]).toBe(Infinity);
        expect(got[5]).toBeNaN();
        expect(ulps(got[6]!, Math.fround(Math.exp(Math.fround(88.7))))).toBeLessThanOrEqual(2);
        expect(got.slice(7, 9)).toEqual([Infinity, Infinity]);
        expect(got[9]).toBeGreaterThan(0);
        expect(got.slice(10, 12)).toEqual([0, 0]);
        expect(got[12]).toBe(1);
      }),
    );
  });
  it('handles every length (vector tail) and int32 input', async () => {
    await expectNoLeaks(() =>
      tf.tidy(() => {
        for (const n of [0, 1, 2, 3, 4, 5, 7, 9]) {
          const xs = values(n).map((v) => v / 50);
          const got = tf.exp(tf.tensor(xs)).dataSync();
          for (const [i, v] of xs.entries()) {
            expect(ulps(got[i]!, Math.fround(Math.exp(v)))).toBeLessThanOrEqual(2);
          }
        }
        expect(Array.from(tf.exp(tf.tensor1d([0, 1, -2], 'int32')).dataSync())).toEqual(
          [1, Math.E, Math.exp(-2)].map(Math.fround),
        );
      }),
    );
  });
});

describe('Sum over leading and middle axes', () => {
  /** Sequential float32 (or wrapping int32) sums in index order: what a transpose then a row sum gives. */
  const sumRef = (x: ArrayLike<number>, shape: number[], first: number, last: number, float: boolean) => {
    const outer = sizeOf(shape.slice(0, first));
    const rows = sizeOf(shape.slice(first, last + 1));
    const inner = sizeOf(shape.slice(last + 1));
    const out = float ? new Float32Array(outer * inner) : new Int32Array(outer * inner);
    for (let o = 0; o < outer; o++)
      for (let r = 0; r < rows; r++)
        for (let c = 0; c < inner; c++)
          out[o * inner + c] = out[o * inner + c]! + x[(o * rows + r) * inner + c]!;
    return out;
  };
  const cases: [number[], number[]][] = [
    [[1024, 128], [0]],
    [[37, 13], [0]],
    [[3, 5, 7], [1]],
    [
      [4, 5, 6],
      [0, 1],
    ],
    [
      [2, 3, 4, 5],
      [1, 2],
    ],
    [[0, 6], [0]],
    [[6, 0], [0]],
    [[9, 3], [1]], // innermost: tfjs's kernel
    [
      [3, 4, 5],
      [0, 2],
    ], // not adjacent: tfjs's kernel
  ];
  for (const [shape, axes] of cases) {
    it(`matches the reference for ${JSON.stringify(shape)} over ${JSON.stringify(axes)}`, async () => {
      const xs = values(sizeOf(shape));
      const adjacent = axes[axes.length - 1]! - axes[0]! + 1 === axes.length;
      await expectNoLeaks(() =>
        tf.tidy(() => {
          for (const [x, float] of [
            [tf.tensor(xs, shape), true],
            [tf.tensor(ints(xs.length), shape, 'int32'), false],
          ] as const) {
            const got = tf.sum(x, axes);
            const kept = tf.sum(x, axes, true);
            expect(kept.shape).toEqual(shape.map((d, i) => (axes.includes(i) ? 1 : d)));
            expect(got.shape).toEqual(shape.filter((_, i) => !axes.includes(i)));
            if (!adjacent) continue;
            const want = sumRef(x.dataSync(), shape, axes[0]!, axes[axes.length - 1]!, float);
            // The cpu backend accumulates in float64: equal to within rounding there.
            if (onWasm || !float) expect(got.dataSync()).toEqual(want);
            else {
              for (const [i, v] of got.dataSync().entries()) expect(v).toBeCloseTo(want[i]!, 2);
            }
            expect(kept.dataSync()).toEqual(got.dataSync());
            if (onWasm && sizeOf(shape) > 0)
              expect(got.dataSync()).toEqual(original('Sum', { x }, { axis: axes, keepDims: false }));
          }
        }),
      );
    });
  }
});
