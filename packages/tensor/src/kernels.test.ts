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
});
