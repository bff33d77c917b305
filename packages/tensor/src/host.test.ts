import { describe, expect, it } from 'vitest';
import { concatFloat32, concatInt32, copyRows, readInto } from './host';
import { expectNoLeaks, tf } from './index';

describe('readInto', () => {
  it('copies a tensor, or a range of it, into a host buffer at an offset', () => {
    const x = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const out = new Float32Array(8).fill(-1);
    readInto(x, out, 1);
    expect(Array.from(out)).toEqual([-1, 1, 2, 3, 4, 5, 6, -1]);
    readInto(x, out, 0, 4, 6);
    expect(Array.from(out.subarray(0, 3))).toEqual([5, 6, 2]);
    // the result of a computation, and the values stay where they are
    const y = tf.mul(x, 2);
    readInto(y, out, 2, 0, 2);
    expect(Array.from(out.subarray(2, 4))).toEqual([2, 4]);
    expect(Array.from(x.dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    tf.dispose([x, y]);
  });

  it('refuses what does not fit', () => {
    const x = tf.tensor1d([1, 2, 3]);
    expect(() => readInto(x, new Float32Array(2))).toThrow(
      /`outOffset` passed to readInto\(\) must be an offset at which 3 values fit in 2, got 0/,
    );
    expect(() => readInto(x, new Float32Array(3), 0, 2, 4)).toThrow(
      /`\[start, end\)` passed to readInto\(\) must be a range inside \[0, 3\]/,
    );
    const ints = tf.tensor1d([1], 'int32');
    expect(() => readInto(ints, new Float32Array(1))).toThrow(
      /`x` passed to readInto\(\) must be a live float32 tensor/,
    );
    ints.dispose();
    x.dispose();
    expect(() => readInto(x, new Float32Array(3))).toThrow(/must be a live float32 tensor/);
  });

  it('leaks nothing', async () => {
    await expectNoLeaks(() => {
      const x = tf.ones([4]);
      readInto(x, new Float32Array(4));
      x.dispose();
    });
  });
});

describe('copyRows', () => {
  it('runs the TSDoc example', () => {
    const xTD = tf.tensor2d([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    const a = copyRows(xTD, 1, 2);
    const b = copyRows(xTD, 2, 1, [2]);
    expect(a.shape).toEqual([2, 2]);
    expect(a.arraySync()).toEqual([
      [3, 4],
      [5, 6],
    ]);
    expect(b.shape).toEqual([2]);
    expect(b.arraySync()).toEqual([5, 6]);
    tf.dispose([xTD, a, b]);
  });

  it('equals tf.slice for every block of a rank-3 tensor, in every dtype it takes', () => {
    const x = tf.tidy(() => tf.range(0, 4 * 3 * 5).reshape([4, 3, 5]));
    for (const dtype of ['float32', 'int32', 'bool'] as const) {
      const xd = x.cast(dtype);
      for (let begin = 0; begin <= 4; begin++) {
        for (let count = 0; begin + count <= 4; count++) {
          const got = copyRows(xd, begin, count);
          const want = tf.slice(xd, [begin], [count]);
          expect(got.dtype).toBe(dtype);
          expect(got.shape).toEqual(want.shape);
          expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
          tf.dispose([got, want]);
        }
      }
      xd.dispose();
    }
    x.dispose();
  });

  it('gives a tensor of its own that outlives its source and belongs to the enclosing scope', () => {
    const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
    const kept = tf.tidy(() => {
      const inner = copyRows(x, 0, 1); // released by the tidy
      return tf.add(inner, copyRows(x, 1, 1));
    });
    x.dispose();
    // allocations after the copy (the heap may grow) leave its values where they are
    const big = tf.zeros([1 << 20]);
    expect(Array.from(kept.dataSync())).toEqual([4, 6]);
    tf.dispose([kept, big]);
  });

  it('refuses ranges and shapes that do not fit, naming the argument', () => {
    const x = tf.zeros([3, 2]);
    expect(() => copyRows(x, 2, 2)).toThrow(
      /`\[begin, begin \+ count\)` passed to copyRows\(\) must be a range of rows inside \[0, 3\], got "?\[2, 4\)/,
    );
    expect(() => copyRows(x, 0.5, 1)).toThrow(/`\[begin, begin \+ count\)` passed to copyRows\(\)/);
    expect(() => copyRows(x, 0, 2, [3])).toThrow(
      /`shape` passed to copyRows\(\) must be a shape of 4 values/,
    );
    expect(() => copyRows(tf.scalar(1), 0, 0)).toThrow(/`x` passed to copyRows\(\) must be a live/);
    x.dispose();
    expect(() => copyRows(x, 0, 1)).toThrow(/`x` passed to copyRows\(\) must be a live/);
  });

  it('leaks nothing', async () => {
    const x = tf.ones([4, 3]);
    await expectNoLeaks(() => [copyRows(x, 1, 2), copyRows(x, 3, 1, [3]), copyRows(x, 0, 0)]);
    x.dispose();
  });
});

describe('concatFloat32 / concatInt32', () => {
  it('run the TSDoc examples', () => {
    const f = concatFloat32([new Float32Array([1, 2]), new Float32Array([3])]);
    expect(f).toBeInstanceOf(Float32Array);
    expect(Array.from(f)).toEqual([1, 2, 3]);
    const i = concatInt32([new Int32Array([4]), new Int32Array([5, 6])]);
    expect(i).toBeInstanceOf(Int32Array);
    expect(Array.from(i)).toEqual([4, 5, 6]);
  });

  it('join parts in order, empty parts and plain arrays included, into a fresh array', () => {
    const a = new Float32Array([0.5, -1]);
    const parts = [a, new Float32Array(0), [7], new Float32Array([8, 9]).subarray(1)];
    const out = concatFloat32(parts);
    expect(Array.from(out)).toEqual([0.5, -1, 7, 9]);
    const single = concatFloat32([a]);
    expect(single).not.toBe(a);
    single[0] = 42;
    expect(a[0]).toBe(0.5);
    expect(concatFloat32([]).length).toBe(0);
    expect(Array.from(concatInt32([[1, 2], new Int32Array(0), [3]]))).toEqual([1, 2, 3]);
  });
});
