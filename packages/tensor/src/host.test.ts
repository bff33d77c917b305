import { describe, expect, it } from 'vitest';
import { readInto } from './host';
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
