import { checkGradients, expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { maxAbsDiff, referenceFFN } from '../test/fakes';
import { DenseFFN, SharedExperts } from './ffn';

const rng = new Rng('ffn');

describe('DenseFFN', () => {
  for (const activation of ['swiglu', 'gelu', 'relu'] as const) {
    it(`${activation}: computes the FFN written out directly`, () => {
      const ffn = new DenseFFN({ dModel: 6, dFF: 10, activation }, rng.fork(activation));
      const v = ffn.variables;
      expect(Object.keys(v)).toEqual(activation === 'swiglu' ? ['w1', 'w3', 'w2'] : ['w1', 'w2']);
      expect(v.w1!.shape).toEqual([6, 10]);
      expect(v.w2!.shape).toEqual([10, 6]);
      const x = rng.normalTensor([5, 6]) as Tensor2D;
      const y = ffn.forward(x);
      const ref = referenceFFN(x, v.w1!, v.w3, v.w2!, activation);
      expect(maxAbsDiff(y, ref)).toBeLessThan(1e-6);
      expect(ffn.numParams()).toBe((activation === 'swiglu' ? 3 : 2) * 60);
      expect(ffn.flopsPerToken()).toBe(2 * ffn.numParams());
      tf.dispose([x, y, ref]);
      ffn.dispose();
    });
  }

  it('has gradients that match finite differences', () => {
    const ffn = new DenseFFN({ dModel: 3, dFF: 4, activation: 'swiglu', initStd: 0.5 }, rng);
    const x = rng.normalTensor([4, 3]);
    const v = ffn.variables;
    checkGradients((a, b, c, d) => referenceFFN(a!, b!, c, d!, 'swiglu'), [x, v.w1!, v.w3!, v.w2!], {
      maxChecksPerInput: 8,
    });
    checkGradients((a) => ffn.forward(a as Tensor2D), [x]);
    x.dispose();
    ffn.dispose();
  });

  it('reports bad configs and inputs clearly', () => {
    expect(() => new DenseFFN({ dModel: 4, dFF: 0, activation: 'relu' }, rng)).toThrow(
      /`dFF` passed to DenseFFN\(\) must be an integer >= 1, got 0/,
    );
    expect(() => new DenseFFN({ dModel: 4, dFF: 2, activation: 'tanh' as never }, rng)).toThrow(
      /`activation` passed to DenseFFN\(\) must be one of "swiglu", "gelu", "relu", got "tanh"/,
    );
    const ffn = new DenseFFN({ dModel: 4, dFF: 2, activation: 'relu' }, rng);
    const x = tf.zeros([3, 5]) as Tensor2D;
    const xi = tf.zeros([3, 4], 'int32') as Tensor2D;
    expect(() => ffn.forward(x)).toThrow(
      /`xTD` passed to DenseFFN.forward\(\) must have shape \[T, D=4\], got \[3, 5\]/,
    );
    expect(() => ffn.forward(xi)).toThrow(
      /`xTD` passed to DenseFFN.forward\(\) must have dtype float32, got int32/,
    );
    ffn.dispose();
    expect(() => ffn.forward(x)).toThrow(/DenseFFN was disposed/);
    tf.dispose([x, xi]);
  });

  it('leaks no tensors', async () => {
    const ffn = new DenseFFN({ dModel: 4, dFF: 6, activation: 'gelu' }, rng);
    const x = rng.normalTensor([3, 4]) as Tensor2D;
    await expectNoLeaks(() => tf.grads((a: tf.Tensor) => tf.sum(ffn.forward(a as Tensor2D)))([x]));
    await expectNoLeaks(() => new DenseFFN({ dModel: 2, dFF: 2, activation: 'relu' }, rng).dispose());
    x.dispose();
    ffn.dispose();
  });
});

describe('SharedExperts', () => {
  it('equals the sum of `count` separate FFNs (hidden units split in blocks)', () => {
    const shared = new SharedExperts({ count: 3, dFF: 4, gate: false, dModel: 5, activation: 'swiglu' }, rng);
    const v = shared.variables;
    expect(v.w1!.shape).toEqual([5, 12]);
    const x = rng.normalTensor([6, 5]) as Tensor2D;
    const y = shared.forward(x);
    const sum = tf.tidy(() => {
      let acc = tf.zeros([6, 5]);
      for (let i = 0; i < 3; i++) {
        const cols = (w: tf.Tensor) => tf.slice(w, [0, 4 * i], [-1, 4]);
        const rows = (w: tf.Tensor) => tf.slice(w, [4 * i, 0], [4, -1]);
        acc = tf.add(acc, referenceFFN(x, cols(v.w1!), cols(v.w3!), rows(v.w2!), 'swiglu'));
      }
      return acc;
    });
    expect(maxAbsDiff(y, sum)).toBeLessThan(1e-5);
    expect(shared.numParams()).toBe(3 * 5 * 12);
    tf.dispose([x, y, sum]);
    shared.dispose();
  });

  it('scales its output by sigmoid(x Wg) when gated (Qwen-MoE)', () => {
    const shared = new SharedExperts({ count: 1, dFF: 4, gate: true, dModel: 3, activation: 'gelu' }, rng);
    const v = shared.variables;
    expect(Object.keys(v)).toEqual(['w1', 'w2', 'gate']);
    expect(v.gate!.shape).toEqual([3, 1]);
    const x = rng.normalTensor([4, 3]) as Tensor2D;
    const y = shared.forward(x);
    const ref = tf.tidy(() =>
      tf.mul(referenceFFN(x, v.w1!, undefined, v.w2!, 'gelu'), tf.sigmoid(tf.matMul(x, v.gate!))),
    );
    expect(maxAbsDiff(y, ref)).toBeLessThan(1e-6);
    expect(shared.numParams()).toBe(2 * 12 + 3);
    expect(shared.flopsPerToken()).toBe(2 * (2 * 12 + 3));
    checkGradients((a) => shared.forward(a as Tensor2D), [x]);
    tf.dispose([x, y, ref]);
    shared.dispose();
  });

  it('rejects a count of 0 and a non-boolean gate', () => {
    expect(
      () => new SharedExperts({ count: 0, dFF: 4, gate: false, dModel: 3, activation: 'relu' }, rng),
    ).toThrow(/`count` passed to SharedExperts\(\) must be an integer >= 1, got 0/);
    expect(
      () => new SharedExperts({ count: 1, dFF: 4, gate: 'yes' as never, dModel: 3, activation: 'relu' }, rng),
    ).toThrow(/`gate` passed to SharedExperts\(\) must be a boolean, got "yes"/);
  });
});
