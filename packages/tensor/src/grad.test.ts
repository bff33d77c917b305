import { describe, expect, it } from 'vitest';
import { customGrad, type GradSave } from './grad';
import { tf } from './index';
import { expectNoLeaks } from './memory';
import { Rng } from './rng';

const rng = new Rng(11);
const close = (a: tf.Tensor, b: tf.Tensor, tol = 1e-5) => {
  expect(a.shape).toEqual(b.shape);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
  expect(diff).toBeLessThanOrEqual(tol);
};

/** x @ w with a hand-written backward that reads the saved operands. */
const matMulOp = customGrad((x: tf.Tensor2D, w: tf.Tensor2D, save: GradSave) => {
  save([x, w]);
  return {
    value: tf.matMul(x, w),
    gradFunc: (dy, saved) => {
      const [xs, ws] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(dy, tf.transpose(ws)), tf.matMul(tf.transpose(xs), dy)];
    },
  };
});

/** Straight-through rounding: the value is round(x), the gradient passes dy unchanged. */
const roundStraightThrough = customGrad((x: tf.Tensor) => ({
  value: tf.round(x),
  gradFunc: (dy) => dy,
}));

describe('customGrad', () => {
  it('runs the TSDoc example', () => {
    const mulOp = customGrad((a: tf.Tensor, b: tf.Tensor, save: GradSave) => {
      save([a, b]);
      return {
        value: tf.mul(a, b),
        gradFunc: (dy, [sa, sb]) => [tf.mul(dy, sb!), tf.mul(dy, sa!)],
      };
    });
    const [da, db] = tf.grads((a: tf.Tensor, b: tf.Tensor) => mulOp(a, b))([tf.scalar(2), tf.scalar(3)]);
    expect(da!.dataSync()[0]).toBe(3);
    expect(db!.dataSync()[0]).toBe(2);
    tf.dispose([da!, db!]);
  });

  it('gives the value and the gradients of every input of a two-input op, as the tape does', () => {
    const x = rng.normalTensor([4, 3]) as tf.Tensor2D;
    const w = rng.normalTensor([3, 5]) as tf.Tensor2D;
    const probe = rng.normalTensor([4, 5]);
    close(matMulOp(x, w), tf.matMul(x, w));
    const loss = (op: (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor) => (a: tf.Tensor, b: tf.Tensor) =>
      tf.sum(tf.mul(op(a as tf.Tensor2D, b as tf.Tensor2D), probe));
    const got = tf.grads(loss(matMulOp))([x, w]);
    const want = tf.grads(loss((a, b) => tf.matMul(a, b)))([x, w]);
    close(got[0]!, want[0]!);
    close(got[1]!, want[1]!);
    tf.dispose([x, w, probe, ...got, ...want]);
  });

  it('runs a one-input op whose backward returns a single tensor', () => {
    const x = tf.tensor1d([0.2, 1.7, -2.6]);
    expect(Array.from(roundStraightThrough(x).dataSync())).toEqual([0, 2, -3]);
    const g = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(roundStraightThrough(a), tf.tensor1d([1, 2, 3]))))(x);
    expect(Array.from(g.dataSync())).toEqual([1, 2, 3]);
    tf.dispose([x, g]);
  });

  it('takes any number of inputs when the forward is variadic', () => {
    // sum of the inputs; the backward hands dy to each of them
    const sumOp = customGrad((...args: [...tf.Tensor[], GradSave]) => {
      const inputs = args.slice(0, -1) as tf.Tensor[];
      return { value: tf.addN(inputs), gradFunc: (dy) => inputs.map(() => dy.clone()) };
    });
    const xs = [tf.scalar(1), tf.scalar(2), tf.scalar(4)];
    expect(sumOp(...xs).dataSync()[0]).toBe(7);
    const gs = tf.grads((...a: tf.Tensor[]) => tf.mul(sumOp(...a), 3))(xs);
    expect(gs.map((g) => g.dataSync()[0])).toEqual([3, 3, 3]);
    tf.dispose([...xs, ...gs]);
  });

  it('checks its types: one gradient per input, the inputs the forward names', () => {
    // @ts-expect-error a two-input op must return two gradients
    customGrad((x: tf.Tensor, w: tf.Tensor) => ({ value: tf.add(x, w), gradFunc: (dy) => [dy] }));
    // @ts-expect-error the op takes two tensors
    expect(() => matMulOp(tf.zeros([1, 1]) as tf.Tensor2D)).toThrow();
  });

  it('leaks nothing, forward and backward, saved tensors included', async () => {
    const x = rng.normalTensor([4, 3]) as tf.Tensor2D;
    const w = rng.normalTensor([3, 5]) as tf.Tensor2D;
    await expectNoLeaks(() => matMulOp(x, w));
    await expectNoLeaks(() =>
      tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(matMulOp(a as tf.Tensor2D, b as tf.Tensor2D)))([x, w]),
    );
    await expectNoLeaks(() => tf.grad((a: tf.Tensor) => tf.sum(roundStraightThrough(a)))(x));
    tf.dispose([x, w]);
  });
});
