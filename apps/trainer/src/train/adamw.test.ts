import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { AdamW, clipByGlobalNorm, GradAccumulator, gradientClip } from './adamw';
import { learningRate } from './schedule';

/** Reference AdamW on plain numbers. */
function reference(
  w0: number[],
  grads: number[][],
  lr: number,
  wd: number,
  b1 = 0.9,
  b2 = 0.95,
  eps = 1e-8,
): number[] {
  const w = [...w0];
  const m = w.map(() => 0);
  const v = w.map(() => 0);
  grads.forEach((g, t) => {
    for (let i = 0; i < w.length; i++) {
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
      const mh = m[i]! / (1 - b1 ** (t + 1));
      const vh = v[i]! / (1 - b2 ** (t + 1));
      w[i] = w[i]! - lr * (mh / (Math.sqrt(vh) + eps)) - lr * wd * w[i]!;
    }
  });
  return w;
}

describe('AdamW', () => {
  it('matches a reference implementation, with decay on matrices only', () => {
    const mat = tf.variable(tf.tensor2d([0.5, -1, 2, 0.1], [2, 2]), true, 'adamw-test-mat');
    const vec = tf.variable(tf.tensor1d([1, -2]), true, 'adamw-test-vec');
    const opt = new AdamW(
      new Map<string, tf.Variable>([
        ['mat', mat],
        ['vec', vec],
      ]),
      { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
    );
    const gm = [
      [0.1, -0.2, 0.3, 0.05],
      [0.2, 0.1, -0.4, 0.0],
      [-0.3, 0.2, 0.1, 0.1],
    ];
    const gv = [
      [1, -1],
      [0.5, 0.5],
      [-2, 0.1],
    ];
    for (let t = 0; t < 3; t++) {
      const g = new Map<string, tf.Tensor>([
        ['mat', tf.tensor2d(gm[t]!, [2, 2])],
        ['vec', tf.tensor1d(gv[t]!)],
      ]);
      opt.step(g, 0.01);
      tf.dispose([...g.values()]);
    }
    const expMat = reference([0.5, -1, 2, 0.1], gm, 0.01, 0.1);
    const expVec = reference([1, -2], gv, 0.01, 0);
    Array.from(mat.dataSync()).forEach((x, i) => {
      expect(x).toBeCloseTo(expMat[i]!, 5);
    });
    Array.from(vec.dataSync()).forEach((x, i) => {
      expect(x).toBeCloseTo(expVec[i]!, 5);
    });
    expect(opt.stepCount).toBe(3);

    // Moments survive a save/restore into a fresh optimizer.
    const saved = Object.fromEntries(
      Object.entries(opt.stateTensors()).map(([k, t]) => [k, t.dataSync().slice() as Float32Array]),
    );
    const opt2 = new AdamW(
      new Map<string, tf.Variable>([
        ['mat', mat],
        ['vec', vec],
      ]),
      { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
    );
    opt2.loadState(3, saved);
    expect(Array.from(opt2.stateTensors()['m/mat']!.dataSync())).toEqual(Array.from(saved['m/mat']!));
    expect(() => opt2.loadState(3, { 'm/mat': new Float32Array(4) })).toThrow(/optimizer state lacks/);
    opt.dispose();
    opt2.dispose();
    mat.dispose();
    vec.dispose();
  });

  it('leaks no tensors', async () => {
    await expectNoLeaks(() => {
      const init = tf.ones([3, 3]);
      const w = tf.variable(init, true, 'adamw-leak');
      init.dispose();
      const opt = new AdamW(new Map([['w', w]]), { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1 });
      const acc = new GradAccumulator();
      for (let i = 0; i < 2; i++) acc.add({ w: tf.onesLike(w) });
      const grads = acc.take();
      clipByGlobalNorm(grads, 1);
      opt.step(grads, 1e-2);
      tf.dispose([...grads.values()]);
      opt.dispose();
      w.dispose();
    });
  });
});

describe('gradient clipping and GradAccumulator', () => {
  it('sums micro-batch gradients and clips to the global norm', () => {
    const acc = new GradAccumulator();
    acc.add({ a: tf.tensor1d([1, 2]), b: tf.tensor1d([2]) });
    acc.add({ a: tf.tensor1d([2, 2]), b: tf.tensor1d([2]) });
    const grads = acc.take();
    expect(Array.from(grads.get('a')!.dataSync())).toEqual([3, 4]);
    const r = clipByGlobalNorm(grads, 2.5); // norm sqrt(9 + 16 + 16) = sqrt(41)
    expect(r.norm).toBeCloseTo(Math.sqrt(41), 5);
    const after = Math.sqrt([...grads.values()].reduce((s, g) => s + g.square().sum().dataSync()[0]!, 0));
    expect(after).toBeCloseTo(2.5, 4);
    expect(clipByGlobalNorm(grads, 0).scale).toBe(1);
    tf.dispose([...grads.values()]);
  });

  it('names the variables whose gradient is not finite', () => {
    const grads = new Map<string, tf.Tensor>([
      ['ok', tf.tensor1d([1])],
      ['bad', tf.tensor1d([Number.NaN, 1])],
    ]);
    const r = clipByGlobalNorm(grads, 1);
    expect(r.nonFinite).toEqual(['bad']);
    expect(Number.isFinite(r.norm)).toBe(false);
    // Finite values whose squares overflow float32 are not called non-finite.
    const huge = new Map<string, tf.Tensor>([['big', tf.tensor1d([3e20, 1])]]);
    const h = gradientClip(huge, 1);
    expect(h.nonFinite).toEqual([]);
    expect(h.scale).toBe(1);
    tf.dispose([...grads.values(), ...huge.values()]);
  });

  it('gradientClip leaves the gradients alone and AdamW folds its scale into the update', () => {
    const make = (name: string) => tf.variable(tf.tensor2d([0.5, -1, 2, 0.1], [2, 2]), true, name);
    const a = make('clip-fold-a');
    const b = make('clip-fold-b');
    const cfg = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
    const optA = new AdamW(new Map([['w', a]]), cfg);
    const optB = new AdamW(new Map([['w', b]]), cfg);
    for (const g of [
      [3, -4, 0, 12],
      [0.1, 0.2, -0.1, 0.05],
      [-6, 1, 2, 0],
    ]) {
      const gA = new Map([['w', tf.tensor2d(g, [2, 2])]]);
      const gB = new Map([['w', tf.tensor2d(g, [2, 2])]]);
      const before = gA.get('w')!;
      const clip = gradientClip(gA, 1);
      expect(gA.get('w')).toBe(before);
      expect(Array.from(before.dataSync())).toEqual(Array.from(Float32Array.from(g)));
      optA.step(gA, 0.01, clip.scale);
      const ref = clipByGlobalNorm(gB, 1);
      expect(clip.norm).toBeCloseTo(ref.norm, 5);
      expect(clip.scale).toBe(ref.scale);
      optB.step(gB, 0.01);
      tf.dispose([...gA.values(), ...gB.values()]);
    }
    const bv = b.dataSync();
    Array.from(a.dataSync()).forEach((x, i) => {
      expect(x).toBeCloseTo(bv[i]!, 6);
    });
    optA.dispose();
    optB.dispose();
    a.dispose();
    b.dispose();
  });
});

describe('learningRate', () => {
  const s = { lr: 1e-3, minLrRatio: 0.1, warmupSteps: 10, totalSteps: 110 };
  it('warms up linearly, then decays along a cosine to the floor', () => {
    expect(learningRate(s, 0)).toBeCloseTo(1e-4, 12);
    expect(learningRate(s, 9)).toBeCloseTo(1e-3, 12);
    expect(learningRate(s, 10)).toBeCloseTo(1e-3, 12);
    expect(learningRate(s, 109)).toBeCloseTo(1e-4, 12);
    const mid = learningRate(s, 10 + 99 / 2);
    expect(mid).toBeCloseTo(0.55e-3, 8);
    for (let t = 11; t < 110; t++) expect(learningRate(s, t)).toBeLessThanOrEqual(learningRate(s, t - 1));
  });
});
