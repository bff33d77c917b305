import { describe, expect, it } from 'vitest';
import { checkGradients } from './gradcheck';
import { tf } from './index';
import { expectNoLeaks } from './memory';
import {
  adamWUpdate,
  batchMatMul,
  gatherRows,
  gelu,
  indexAdd,
  logSoftmax,
  logSumExp,
  matMul,
  oneHot,
  relu,
  segmentSum,
  sigmoid,
  silu,
  softmax,
  swiglu,
  swigluGrad,
  takeAlongLastAxis,
  topK,
} from './ops';
import { Rng } from './rng';

const rng = new Rng(7);
const rand = (shape: number[], scale = 1) => rng.normalTensor(shape, 0, scale);
const close = (a: tf.Tensor, b: tf.Tensor | number[] | number[][], tol = 1e-5) => {
  const bt = b instanceof tf.Tensor ? b : tf.tensor(b);
  const diff = tf.max(tf.abs(tf.sub(a, bt))).dataSync()[0]!;
  if (!(b instanceof tf.Tensor)) bt.dispose();
  expect(diff).toBeLessThanOrEqual(tol);
};

describe('gatherRows / segmentSum / indexAdd', () => {
  it('gathers rows, with duplicates', () => {
    const x = tf.tensor2d([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    close(gatherRows(x, [2, 0, 2]), [
      [5, 6],
      [1, 2],
      [5, 6],
    ]);
    close(gatherRows(x, tf.tensor1d([1], 'int32')), [[3, 4]]);
  });
  it('sums duplicate indices in the gradient of a gather (scatter-add)', () => {
    const x = tf.tensor2d([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    const g = tf.grad((a: tf.Tensor) => gatherRows(a, [0, 0, 2, 0]).sum())(x);
    close(g, [
      [3, 3],
      [0, 0],
      [1, 1],
    ]);
  });
  it('segmentSum sums rows into segments and drops nothing in range', () => {
    close(segmentSum(tf.tensor2d([[1], [2], [4]]), [0, 0, 2], 3), [[3], [0], [4]]);
    close(segmentSum(tf.tensor1d([1, 2, 4]), [1, 1, 1], 2), [0, 7]);
  });
  it('indexAdd matches index_add semantics', () => {
    close(indexAdd(tf.ones([3, 2]), [2, 0, 2], tf.ones([3, 2])), [
      [2, 2],
      [1, 1],
      [3, 3],
    ]);
  });
  it('handles empty index lists', () => {
    expect(gatherRows(tf.ones([3, 2]), []).shape).toEqual([0, 2]);
    close(segmentSum(tf.zeros([0, 2]), [], 2), [
      [0, 0],
      [0, 0],
    ]);
  });
  it('rejects out-of-range indices and wrong dtypes with named errors', () => {
    expect(() => gatherRows(tf.ones([3, 2]), [0, 3])).toThrow(
      /`idx\[1\]` passed to gatherRows\(\) must be an integer in \[0, 2\], got 3/,
    );
    expect(() => gatherRows(tf.ones([3, 2]), tf.tensor1d([0]))).toThrow(
      /`idx` passed to gatherRows\(\) must have dtype int32, got float32/,
    );
    expect(() => segmentSum(tf.ones([3, 2]), [0, 1], 2)).toThrow(/one id per row of srcND \(3\), got 2/);
    expect(() => indexAdd(tf.ones([3, 2]), [0], tf.ones([1, 3]))).toThrow(/row shape \[2\]/);
  });
  it('gradients match finite differences', () => {
    checkGradients((x) => gatherRows(x, [2, 0, 2, 1]), [rand([3, 4])]);
    checkGradients((x) => segmentSum(x, [1, 1, 0, 3], 4), [rand([4, 3])]);
    checkGradients((t, s) => indexAdd(t, [2, 0, 2], s), [rand([3, 2]), rand([3, 2])]);
    checkGradients(
      (x) =>
        takeAlongLastAxis(
          x as tf.Tensor2D,
          tf.tensor2d(
            [
              [2, 0],
              [1, 1],
            ],
            undefined,
            'int32',
          ),
        ),
      [rand([2, 3])],
    );
  });
  it('leaks nothing', async () => {
    const x = rand([4, 3]);
    await expectNoLeaks(() => gatherRows(x, [1, 2]));
    await expectNoLeaks(() => segmentSum(x, [0, 1, 1, 0], 2));
    await expectNoLeaks(() => indexAdd(x, [0, 1, 1, 0], x));
    const idx = tf.zeros([4, 1], 'int32') as tf.Tensor2D;
    await expectNoLeaks(() => takeAlongLastAxis(x as tf.Tensor2D, idx));
    idx.dispose();
    await expectNoLeaks(() => tf.grad((a: tf.Tensor) => gatherRows(a, [0, 0]).sum())(x));
    x.dispose();
  });
});

describe('topK', () => {
  it('returns values and indices, ties to the lower index', () => {
    const { values, indices } = topK(
      tf.tensor2d([
        [1, 3, 3, 2, 3],
        [0, 0, 0, 0, 0],
      ]),
      3,
    );
    expect(indices.arraySync()).toEqual([
      [1, 2, 4],
      [0, 1, 2],
    ]);
    expect(values.arraySync()).toEqual([
      [3, 3, 3],
      [0, 0, 0],
    ]);
    expect(indices.dtype).toBe('int32');
  });
  it('carries no gradient: values act as constants', () => {
    const x = tf.tensor2d([[1, 5, 2]]);
    const g = tf.grad((a: tf.Tensor) => tf.add(topK(a, 2).values.sum(), a.sum()))(x);
    close(g, [[1, 1, 1]]);
  });
  it('validates k', () => {
    expect(() => topK(tf.ones([2, 4]), 5)).toThrow(
      /`k` passed to topK\(\) must be an integer in \[0, 4\], got 5/,
    );
  });
  it('leaks nothing', async () => {
    const x = rand([5, 8]);
    await expectNoLeaks(() => topK(x, 2));
    x.dispose();
  });
});

describe('matMul / batchMatMul', () => {
  const combos: [boolean, boolean][] = [
    [false, false],
    [false, true],
    [true, false],
    [true, true],
  ];
  it.each(combos)(
    'transposeA=%s transposeB=%s over an empty inner dimension is zeros (the empty sum)',
    (ta, tb) => {
      // fill the heap with non-zeros first: wasm's kernel used to return uninitialised memory here
      tf.tidy(() => tf.fill([64, 64], 3).dataSync());
      const a = tf.zeros(ta ? [0, 3] : [3, 0]) as tf.Tensor2D;
      const b = tf.zeros(tb ? [4, 0] : [0, 4]) as tf.Tensor2D;
      const y = matMul(a, b, ta, tb);
      const yt = tf.matMul(a, b, ta, tb);
      const batched = tf.matMul(tf.zeros([2, 3, 0]), tf.zeros([1, 0, 4]));
      expect(y.shape).toEqual([3, 4]);
      expect(Array.from(y.dataSync())).toEqual(new Array(12).fill(0));
      expect(Array.from(yt.dataSync())).toEqual(new Array(12).fill(0));
      expect(batched.shape).toEqual([2, 3, 4]);
      expect(Array.from(batched.dataSync())).toEqual(new Array(24).fill(0));
      tf.dispose([a, b, y, yt, batched]);
    },
  );

  it.each(combos)('transposeA=%s transposeB=%s equals the explicit-transpose product', (ta, tb) => {
    const a = rand(ta ? [5, 3] : [3, 5]);
    const b = rand(tb ? [4, 5] : [5, 4]);
    const ref = tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b);
    close(matMul(a, b, ta, tb), ref, 1e-4);
    checkGradients((x, y) => matMul(x, y, ta, tb), [a, b]);
  });
  it('batched product with a broadcast operand has gradients of the operand shapes', () => {
    const a = rand([1, 3, 4]) as tf.Tensor3D;
    const b = rand([2, 4, 5]) as tf.Tensor3D;
    const [ga, gb] = tf.grads((x: tf.Tensor, y: tf.Tensor) =>
      batchMatMul(x as tf.Tensor3D, y as tf.Tensor3D).sum(),
    )([a, b]);
    expect(ga!.shape).toEqual([1, 3, 4]);
    expect(gb!.shape).toEqual([2, 4, 5]);
    checkGradients((x, y) => batchMatMul(x as tf.Tensor3D, y as tf.Tensor3D), [a, b]);
    checkGradients(
      (x, y) => batchMatMul(x as tf.Tensor3D, y as tf.Tensor3D, true, true),
      [rand([2, 4, 3]), rand([1, 5, 4])],
    );
  });
  it('rank-2 times rank-3 broadcasts', () => {
    checkGradients((x, y) => matMul(x, y), [rand([3, 4]), rand([2, 4, 2])]);
  });
  it('rejects mismatched inner dims', () => {
    expect(() => matMul(tf.ones([2, 3]), tf.ones([4, 2]))).toThrow(
      /inner dimensions to match: a \[2, 3\] @ b \[4, 2\]/,
    );
    expect(() =>
      batchMatMul(tf.ones([2, 3]) as unknown as tf.Tensor3D, tf.ones([1, 3, 2]) as tf.Tensor3D),
    ).toThrow(/rank-3/);
  });
  it('leaks nothing, forward or backward', async () => {
    const a = rand([2, 3, 4]);
    const b = rand([2, 4, 5]);
    await expectNoLeaks(() => matMul(a, b, false, false));
    await expectNoLeaks(() => matMul(a, a, true, false).dispose());
    const bt = tf.transpose(b, [0, 2, 1]);
    await expectNoLeaks(() =>
      tf.grads((x: tf.Tensor, y: tf.Tensor) => matMul(x, y, false, true).sum())([a, bt]),
    );
    tf.dispose([a, b, bt]);
  });
});

describe('oneHot', () => {
  it('encodes as float32 without gradient', () => {
    const o = oneHot(tf.tensor1d([1, 0, 2], 'int32'), 3);
    expect(o.dtype).toBe('float32');
    close(o, [
      [0, 1, 0],
      [1, 0, 0],
      [0, 0, 1],
    ]);
    expect(() => oneHot(tf.tensor1d([1.5]), 3)).toThrow(/dtype int32/);
  });
  it('leaks nothing', async () => {
    const i = tf.tensor1d([1, 0], 'int32');
    await expectNoLeaks(() => oneHot(i, 4));
    i.dispose();
  });
});

describe('softmax family', () => {
  it('is stable for huge logits', () => {
    close(softmax(tf.tensor1d([1000, 1000])), [0.5, 0.5]);
    close(logSoftmax(tf.tensor1d([1000, 0])), [0, -1000], 1e-3);
    close(logSumExp(tf.tensor1d([1000, 1000])), tf.scalar(1000 + Math.log(2)), 1e-3);
    expect(Number.isFinite(logSumExp(tf.tensor1d([-1e30, -1e30])).dataSync()[0]!)).toBe(true);
  });
  it('sums to one on any axis', () => {
    const s = softmax(rand([3, 4, 5], 3), 1);
    close(s.sum(1), tf.ones([3, 5]), 1e-5);
  });
  it('casts to float32', () => {
    expect(softmax(tf.tensor1d([1, 2], 'int32')).dtype).toBe('float32');
  });
  it('gradients match finite differences', () => {
    checkGradients((x) => softmax(x), [rand([3, 5], 2)]);
    checkGradients((x) => softmax(x, 0), [rand([3, 5], 2)]);
    checkGradients((x) => logSoftmax(x), [rand([3, 5], 2)]);
    checkGradients((x) => logSumExp(x), [rand([3, 5], 2)]);
    checkGradients((x) => logSumExp(x, 0, true), [rand([3, 5], 2)]);
  });
  it('leaks nothing, forward or backward', async () => {
    const x = rand([4, 6]);
    for (const fn of [
      (t: tf.Tensor) => softmax(t),
      (t: tf.Tensor) => logSoftmax(t),
      (t: tf.Tensor) => logSumExp(t),
    ]) {
      await expectNoLeaks(() => fn(x));
      await expectNoLeaks(() => tf.grad((t: tf.Tensor) => fn(t).sum())(x));
    }
    x.dispose();
  });
});

describe('activations', () => {
  it('match their definitions', () => {
    const x = tf.tensor1d([-3, -0.5, 0, 0.7, 4]);
    const xs = [-3, -0.5, 0, 0.7, 4];
    const sig = xs.map((v) => 1 / (1 + Math.exp(-v)));
    close(sigmoid(x), tf.tensor1d(sig));
    close(silu(x), tf.tensor1d(xs.map((v, i) => v * sig[i]!)));
    close(relu(x), tf.tensor1d(xs.map((v) => Math.max(0, v))));
    // GELU(x) = x * Phi(x); reference values from the normal CDF.
    const phi = [0.0013498980316301, 0.308537538725987, 0.5, 0.758036347776927, 0.999968328758167];
    close(gelu(x), tf.tensor1d(xs.map((v, i) => v * phi[i]!)), 2e-5);
    close(gelu(x, 'tanh'), tf.tensor1d(xs.map((v, i) => v * phi[i]!)), 2e-3);
  });
  it('gradients match finite differences', () => {
    const x = tf.tensor2d([
      [-2.5, -0.7, 0.3, 1.9],
      [0.05, -1.2, 3.1, -0.2],
    ]);
    checkGradients((t) => sigmoid(t), [x]);
    checkGradients((t) => silu(t), [x]);
    checkGradients((t) => gelu(t), [x]);
    checkGradients((t) => gelu(t, 'tanh'), [x]);
    checkGradients((t) => relu(t), [x]);
  });
  it('leaks nothing, forward or backward', async () => {
    const x = rand([3, 3]);
    const fns = [sigmoid, silu, relu, (t: tf.Tensor) => gelu(t), (t: tf.Tensor) => gelu(t, 'tanh')];
    for (const fn of fns) {
      await expectNoLeaks(() => fn(x));
      await expectNoLeaks(() => tf.grad((t: tf.Tensor) => fn(t).sum())(x));
    }
    x.dispose();
  });
});

describe('swiglu', () => {
  // 4 x 7 = 28 elements: the wasm kernel's 4-wide loop and its scalar tail.
  const gate = () => rng.normalTensor([4, 7], 0, 2);
  const up = () => rng.normalTensor([4, 7]);
  it('is silu(gate) * up, with the documented values', () => {
    tf.tidy(() => {
      const [g, u] = [gate(), up()];
      close(swiglu(g, u), tf.mul(silu(g), u));
      close(swiglu(tf.tensor1d([0, 1]), tf.tensor1d([3, 2])), [0, 2 / (1 + Math.exp(-1))]);
      const [dGate, dUp] = swigluGrad(tf.ones([2]), tf.tensor1d([0, 1]), tf.tensor1d([3, 2]));
      const s1 = 1 / (1 + Math.exp(-1));
      close(dGate, [1.5, 2 * s1 * (1 + (1 - s1))]);
      close(dUp, [0, s1]);
    });
  });
  it('has the gradients of silu(gate) * up, by finite differences and by the tape', () => {
    const [g, u] = [gate(), up()];
    checkGradients((a, b) => swiglu(a, b), [g, u]);
    tf.tidy(() => {
      const dy = rand([4, 7]);
      const got = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(swiglu(a, b), dy)))([g, u]);
      const [dGate, dUp] = swigluGrad(dy, g, u);
      const want = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.mul(silu(a), b), dy)))([g, u]);
      close(got[0]!, want[0]!);
      close(got[1]!, want[1]!);
      close(dGate, want[0]!);
      close(dUp, want[1]!);
    });
    tf.dispose([g, u]);
  });
  it('rejects mismatched shapes and leaks nothing', async () => {
    const [g, u] = [gate(), up()];
    expect(() => swiglu(g, tf.ones([7, 4]))).toThrow(
      /`up` passed to swiglu\(\) must have the shape of gate \[4, 7\]/,
    );
    expect(() => swigluGrad(tf.ones([3]), g, u)).toThrow(/`dOut` passed to swigluGrad\(\)/);
    await expectNoLeaks(() => swiglu(g, u));
    await expectNoLeaks(() => tf.grads((a: tf.Tensor, b: tf.Tensor) => swiglu(a, b).sum())([g, u]));
    await expectNoLeaks(() => swigluGrad(g, g, u));
    tf.dispose([g, u]);
  });
});

describe('adamWUpdate', () => {
  const c = {
    beta1: 0.9,
    beta2: 0.95,
    mScale: 0.07,
    vScale: 0.031,
    step: 3e-3,
    vNorm: 1.7,
    eps: 1e-8,
    keep: 0.9997,
  };
  /** The update as a chain of tfjs ops, the order adamWUpdate documents. */
  const chain = (w: tf.Tensor, m: tf.Tensor, v: tf.Tensor, g: tf.Tensor, decay: boolean) =>
    tf.tidy(() => {
      const m1 = m.mul(c.beta1).add(g.mul(c.mScale));
      const v1 = v.mul(c.beta2).add(g.square().mul(c.vScale));
      const update = m1.mul(c.step).div(v1.sqrt().mul(c.vNorm).add(c.eps));
      return [(decay ? w.mul(c.keep) : w).sub(update), m1, v1];
    });

  for (const n of [1, 3, 4, 37, 1000]) {
    for (const decay of [false, true]) {
      it(`gives the same bits as the op chain (n = ${n}, decay ${decay})`, async () => {
        const [w, g] = [tf.randomNormal([n], 0, 1, 'float32', 1), tf.randomNormal([n], 0, 1, 'float32', 2)];
        const m = tf.randomNormal([n], 0, 0.1, 'float32', 3);
        const v = tf.randomUniform([n], 0, 0.01, 'float32', 4);
        const got = adamWUpdate(w, m, v, g, c, decay);
        const want = chain(w, m, v, g, decay);
        for (const [i, t] of got.entries())
          expect(Array.from(t.dataSync())).toEqual(Array.from(want[i]!.dataSync()));
        await expectNoLeaks(() => tf.dispose(adamWUpdate(w, m, v, g, c, decay)));
        tf.dispose([w, g, m, v, ...got, ...want]);
      });
    }
  }

  it('names a mismatched argument', () => {
    const [w, m3] = [tf.zeros([2]), tf.zeros([3])];
    expect(() => adamWUpdate(w, m3, w, w, c, false)).toThrow(
      /`m` passed to adamWUpdate\(\) must be a float32 tensor \[2\] like w/,
    );
    tf.dispose([w, m3]);
  });
});
