import { checkGradients, disposeAll, expectNoLeaks, Rng, sigmoid, softmax, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { countsOf, planFromLogits, topKRows } from './internal/plan-fixture';
import {
  deviceBalanceLoss,
  microBatchAuxLoss,
  routerZLoss,
  sequenceAuxLoss,
  usageVarianceLoss,
} from './losses';
import { usageVariance } from './metrics';

const rng = new Rng(11);
const value = (t: tf.Tensor): number => {
  const v = t.dataSync()[0]!;
  t.dispose();
  return v;
};
/** Host mean of each column of [T, E] scores, optionally after normalising rows to sum 1. */
const meanColumns = (data: ArrayLike<number>, T: number, E: number, normalise: boolean): number[] => {
  const p = new Array<number>(E).fill(0);
  for (let t = 0; t < T; t++) {
    let s = 0;
    for (let i = 0; i < E; i++) s += data[t * E + i]!;
    for (let i = 0; i < E; i++) p[i]! += data[t * E + i]! / (normalise ? s : 1) / T;
  }
  return p;
};
const canonical = (alpha: number, counts: ArrayLike<number>, pE: readonly number[]): number => {
  const total = Array.from(counts).reduce((a, b) => a + b, 0);
  return alpha * pE.length * pE.reduce((a, p, i) => a + (counts[i]! / total) * p, 0);
};
/** A random routing: logits [T, E] and the top-K selections of their softmax. */
const randomRouting = (T: number, E: number, K: number, r = rng) => {
  const logits = r.normalTensor([T, E]) as tf.Tensor2D;
  const idx = topKRows(logits.dataSync(), T, E, K);
  return { logits, idx, countsE: countsOf(idx, E) };
};

describe('microBatchAuxLoss', () => {
  it('equals alpha at perfect balance (K = 1 and K = 2)', () => {
    const plan1 = planFromLogits(tf.zeros([4, 4]), [[0], [1], [2], [3]]);
    expect(value(microBatchAuxLoss(plan1, { alpha: 0.01 }))).toBeCloseTo(0.01, 8);
    const plan2 = planFromLogits(tf.zeros([4, 4]), [
      [0, 1],
      [2, 3],
      [0, 2],
      [1, 3],
    ]);
    expect(value(microBatchAuxLoss(plan2, { alpha: 0.3 }))).toBeCloseTo(0.3, 7);
    disposeAll(plan1, plan2);
  });

  it('equals alpha * E when one expert takes every token with score 1 (K = 1)', () => {
    const E = 8;
    const logits = tf.tidy(() => tf.mul(tf.oneHot(tf.zeros([5], 'int32'), E).toFloat(), 100)) as tf.Tensor2D;
    const plan = planFromLogits(logits, [[0], [0], [0], [0], [0]]);
    expect(value(microBatchAuxLoss(plan, { alpha: 0.01 }))).toBeCloseTo(0.01 * E, 6);
    disposeAll(plan, logits);
  });

  it('equals alpha * E * sum f_i P_i on random plans, with f = c / (T K) and P = mean score', () => {
    const { logits, idx, countsE } = randomRouting(7, 5, 2);
    const plan = planFromLogits(logits, idx);
    const pE = meanColumns(plan.probsTE.dataSync(), 7, 5, false);
    const loss = microBatchAuxLoss(plan, { alpha: 0.05 });
    expect(loss.dtype).toBe('float32');
    expect(loss.rank).toBe(0);
    expect(value(loss)).toBeCloseTo(canonical(0.05, countsE, pE), 6);
    disposeAll(plan, logits);
  });

  it('normalises sigmoid scores per token by default, and can use them raw', () => {
    const { logits, idx, countsE } = randomRouting(6, 4, 2);
    const plan = planFromLogits(logits, idx, { score: 'sigmoid' });
    const data = plan.probsTE.dataSync();
    expect(value(microBatchAuxLoss(plan, { alpha: 1 }))).toBeCloseTo(
      canonical(1, countsE, meanColumns(data, 6, 4, true)),
      5,
    );
    expect(value(microBatchAuxLoss(plan, { alpha: 1, normaliseScores: false }))).toBeCloseTo(
      canonical(1, countsE, meanColumns(data, 6, 4, false)),
      5,
    );
    disposeAll(plan, logits);
  });

  it('has finite-difference-correct gradients w.r.t. the router logits (softmax and sigmoid)', () => {
    const { logits, countsE } = randomRouting(6, 5, 2);
    const soft = checkGradients(
      (x) => microBatchAuxLoss({ probsTE: softmax(x) as tf.Tensor2D, countsE }, { alpha: 1 }),
      [logits],
    );
    expect(soft.checked).toBeGreaterThan(0);
    checkGradients(
      (x) => microBatchAuxLoss({ probsTE: sigmoid(x) as tf.Tensor2D, countsE }, { alpha: 1 }),
      [logits],
      {
        atol: 2e-4,
      },
    );
    logits.dispose();
  });

  it('takes no gradient through the counts: d loss / d P_i = alpha * E * f_i / T exactly', () => {
    const { logits, countsE } = randomRouting(4, 3, 1);
    const probs = softmax(logits) as tf.Tensor2D;
    const g = tf.grad((p: tf.Tensor) =>
      microBatchAuxLoss({ probsTE: p as tf.Tensor2D, countsE }, { alpha: 2, normaliseScores: false }),
    )(probs);
    const data = g.dataSync();
    for (let t = 0; t < 4; t++)
      for (let i = 0; i < 3; i++) expect(data[t * 3 + i]).toBeCloseTo((2 * 3 * (countsE[i]! / 4)) / 4, 6);
    disposeAll(g, probs, logits);
  });

  it('rejects counts of the wrong length and a negative alpha with named errors', () => {
    const probsTE = tf.ones([2, 3]).div(3) as tf.Tensor2D;
    expect(() => microBatchAuxLoss({ probsTE, countsE: new Int32Array(4) })).toThrow(
      /`plan\.countsE` passed to microBatchAuxLoss\(\) must hold one count per expert \(3\), got 4/,
    );
    expect(() => microBatchAuxLoss({ probsTE, countsE: new Int32Array(3) }, { alpha: -1 })).toThrow(
      /`config\.alpha` passed to microBatchAuxLoss\(\) must be a finite number >= 0, got -1/,
    );
    probsTE.dispose();
  });
});

describe('sequenceAuxLoss', () => {
  it('equals the micro-batch loss when the batch is one sequence', () => {
    const { logits, idx } = randomRouting(8, 4, 2);
    const plan = planFromLogits(logits, idx);
    expect(value(sequenceAuxLoss(plan, 8, { alpha: 0.1 }))).toBeCloseTo(
      value(microBatchAuxLoss(plan, { alpha: 0.1 })),
      6,
    );
    disposeAll(plan, logits);
  });

  it('sees per-sequence collapse that the batch-level loss averages away', () => {
    // sequence 0 sends every token to expert 0 with score 1, sequence 1 to expert 1
    const E = 4;
    const logits = tf.tidy(() =>
      tf.mul(tf.oneHot(tf.tensor1d([0, 0, 0, 1, 1, 1], 'int32'), E).toFloat(), 100),
    ) as tf.Tensor2D;
    const plan = planFromLogits(logits, [[0], [0], [0], [1], [1], [1]]);
    expect(value(sequenceAuxLoss(plan, 3, { alpha: 1 }))).toBeCloseTo(E, 5); // each sequence: alpha * E
    expect(value(microBatchAuxLoss(plan, { alpha: 1 }))).toBeCloseTo(E / 2, 5);
    disposeAll(plan, logits);
  });

  it('has finite-difference-correct gradients w.r.t. the router logits', () => {
    const { logits, idx } = randomRouting(8, 4, 2);
    const expertIdx = Int32Array.from(idx.flat());
    checkGradients(
      (x) => sequenceAuxLoss({ probsTE: softmax(x) as tf.Tensor2D, expertIdx, k: 2 }, 4, { alpha: 1 }),
      [logits],
    );
    logits.dispose();
  });

  it('rejects a sequence length that does not divide T', () => {
    const plan = planFromLogits(tf.zeros([6, 3]), [[0], [1], [2], [0], [1], [2]]);
    expect(() => sequenceAuxLoss(plan, 4)).toThrow(
      /`seqLen` passed to sequenceAuxLoss\(\) must be a divisor of the number of tokens \(6\), got 4/,
    );
    disposeAll(plan);
  });
});

describe('routerZLoss', () => {
  it('equals coef * mean_t logsumexp(logits_t)^2', () => {
    const logits = tf.tensor2d([
      [0, 0, 0, 0],
      [1, 2, 3, 4],
    ]);
    const lse1 = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3) + Math.exp(4));
    const expected = (1e-3 * (Math.log(4) ** 2 + lse1 ** 2)) / 2;
    expect(value(routerZLoss({ logitsTE: logits }))).toBeCloseTo(expected, 7);
    logits.dispose();
  });

  it('rejects integer logits with a named error', () => {
    const logits = tf.zeros([2, 3], 'int32') as tf.Tensor2D;
    expect(() => routerZLoss({ logitsTE: logits })).toThrow(
      /`plan\.logitsTE` passed to routerZLoss\(\) must have dtype float32, got int32/,
    );
    logits.dispose();
  });

  it('has finite-difference-correct gradients w.r.t. the logits', () => {
    const logits = rng.normalTensor([5, 6], 0, 2) as tf.Tensor2D;
    checkGradients((x) => routerZLoss({ logitsTE: x as tf.Tensor2D }, { coef: 1 }), [logits], { atol: 5e-4 });
    logits.dispose();
  });
});

describe('deviceBalanceLoss', () => {
  it('equals alpha2 at perfect balance and ignores imbalance inside a device', () => {
    const logits = tf.zeros([4, 4]) as tf.Tensor2D;
    const balanced = planFromLogits(logits, [[0], [1], [2], [3]]);
    expect(value(deviceBalanceLoss(balanced, 2))).toBeCloseTo(0.05, 7);
    // experts 0 and 2 take everything: devices {0,1} and {2,3} stay balanced
    const sharp = tf.tidy(() =>
      tf.mul(tf.oneHot(tf.tensor1d([0, 2, 0, 2], 'int32'), 4).toFloat(), 100),
    ) as tf.Tensor2D;
    const skewed = planFromLogits(sharp, [[0], [2], [0], [2]]);
    expect(value(deviceBalanceLoss(skewed, 2, { alpha: 1 }))).toBeCloseTo(1, 5);
    expect(value(deviceBalanceLoss(skewed, [0, 0, 1, 1], { alpha: 1 }))).toBeCloseTo(1, 5);
    expect(value(microBatchAuxLoss(skewed, { alpha: 1 }))).toBeCloseTo(2, 5);
    // experts 0 and 1 (same device) take everything: the device loss sees it
    const sameDevice = tf.tidy(() =>
      tf.mul(tf.oneHot(tf.tensor1d([0, 1, 0, 1], 'int32'), 4).toFloat(), 100),
    ) as tf.Tensor2D;
    const hot = planFromLogits(sameDevice, [[0], [1], [0], [1]]);
    expect(value(deviceBalanceLoss(hot, 2, { alpha: 1 }))).toBeCloseTo(2, 5);
    disposeAll(balanced, skewed, hot, logits, sharp, sameDevice);
  });

  it('has finite-difference-correct gradients w.r.t. the router logits', () => {
    const { logits, countsE } = randomRouting(6, 6, 2);
    checkGradients(
      (x) =>
        deviceBalanceLoss({ probsTE: softmax(x) as tf.Tensor2D, countsE }, [0, 1, 2, 0, 1, 2], { alpha: 1 }),
      [logits],
    );
    logits.dispose();
  });

  it('rejects a device count that does not divide E', () => {
    const plan = planFromLogits(tf.zeros([2, 4]), [[0], [1]]);
    expect(() => deviceBalanceLoss(plan, 3)).toThrow(
      /`devices` passed to deviceBalanceLoss\(\) must be a divisor of the number of experts \(4\), got 3/,
    );
    disposeAll(plan);
  });
});

describe('usageVarianceLoss', () => {
  it('has the value coef * var(c / sum c), zero at balance', () => {
    const { logits, idx, countsE } = randomRouting(9, 4, 2);
    const plan = planFromLogits(logits, idx);
    expect(value(usageVarianceLoss(plan, { coef: 3 }))).toBeCloseTo(3 * usageVariance(countsE), 6);
    const flat = planFromLogits(tf.zeros([4, 4]), [[0], [1], [2], [3]]);
    expect(value(usageVarianceLoss(flat))).toBe(0);
    disposeAll(plan, flat, logits);
  });

  it('passes the variance gradient straight through to the mean scores', () => {
    const countsE = new Int32Array([5, 1, 0, 2]);
    const T = 4;
    const probs = softmax(rng.normalTensor([T, 4])) as tf.Tensor2D;
    const g = tf.grad((p: tf.Tensor) =>
      usageVarianceLoss({ probsTE: p as tf.Tensor2D, countsE }, { coef: 2, normaliseScores: false }),
    )(probs);
    const data = g.dataSync();
    for (let i = 0; i < 4; i++) {
      const dev = countsE[i]! / 8 - 1 / 4;
      expect(data[i]).toBeCloseTo((2 * 2 * dev) / 4 / T, 6);
    }
    disposeAll(g, probs);
  });
});

describe('memory', () => {
  it('leaks no tensors in forward and backward passes of every loss', async () => {
    const { logits, idx, countsE } = randomRouting(8, 4, 2);
    const expertIdx = Int32Array.from(idx.flat());
    const logitsVar = tf.variable(logits.clone(), true);
    await expectNoLeaks(() => {
      const losses = [
        (x: tf.Tensor) => microBatchAuxLoss({ probsTE: softmax(x) as tf.Tensor2D, countsE }),
        (x: tf.Tensor) => sequenceAuxLoss({ probsTE: sigmoid(x) as tf.Tensor2D, expertIdx, k: 2 }, 4),
        (x: tf.Tensor) => routerZLoss({ logitsTE: x as tf.Tensor2D }),
        (x: tf.Tensor) => deviceBalanceLoss({ probsTE: softmax(x) as tf.Tensor2D, countsE }, 2),
        (x: tf.Tensor) => usageVarianceLoss({ probsTE: softmax(x) as tf.Tensor2D, countsE }),
      ];
      for (const f of losses) {
        const { value: v, grads } = tf.variableGrads(() => f(logitsVar) as tf.Scalar, [logitsVar]);
        disposeAll(v, grads);
        tf.tidy(() => f(logits)).dispose();
      }
    }, 'balance losses');
    disposeAll(logits, logitsVar);
  });
});
