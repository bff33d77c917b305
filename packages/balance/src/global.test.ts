import { checkGradients, disposeAll, expectNoLeaks, Rng, softmax, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { GlobalAuxLoss, ShuffledBatchAuxLoss } from './global';
import { countsOf, planFromLogits, topKRows } from './internal/plan-fixture';
import { microBatchAuxLoss } from './losses';

const value = (t: tf.Tensor): number => {
  const v = t.dataSync()[0]!;
  t.dispose();
  return v;
};
const hot = (experts: number[], E: number): tf.Tensor2D =>
  tf.tidy(() => tf.mul(tf.oneHot(tf.tensor1d(experts, 'int32'), E).toFloat(), 100)) as tf.Tensor2D;

/** `n` micro-batches of T tokens with random logits and top-K selections. */
function microBatches(n: number, T: number, E: number, K: number, seed: number) {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, m) => {
    // a per-micro-batch skew makes each micro-batch imbalanced in its own way (domain-like)
    const logits = tf.tidy(() =>
      tf.add(rng.normalTensor([T, E]), tf.oneHot(tf.fill([T], m % E, 'int32'), E).mul(2)),
    );
    const plan = planFromLogits(logits as tf.Tensor2D, topKRows(logits.dataSync(), T, E, K));
    logits.dispose();
    return plan;
  });
}

describe('GlobalAuxLoss', () => {
  it('over 8 micro-batches equals the loss computed on their pooled counts', () => {
    const [T, E, K] = [6, 4, 2];
    const plans = microBatches(8, T, E, K, 3);
    const gb = new GlobalAuxLoss({ numExperts: E, alpha: 0.1 });
    for (const p of plans) gb.accumulate(p.countsE);
    const pooled = new Float64Array(E);
    for (const p of plans) for (let i = 0; i < E; i++) pooled[i]! += p.countsE[i]!;
    expect(Array.from(gb.pooledCountsE())).toEqual(Array.from(pooled));
    expect(gb.microBatches).toBe(8);
    // each micro-batch: alpha * E * sum f_pooled P_local
    let meanLoss = 0;
    for (const p of plans) {
      const expected = value(microBatchAuxLoss({ probsTE: p.probsTE, countsE: pooled }, { alpha: 0.1 }));
      const got = value(gb.loss(p));
      expect(got).toBeCloseTo(expected, 6);
      meanLoss += got / plans.length;
    }
    // P is linear in tokens: the mean over equal micro-batches is the loss of the whole global batch
    const all = tf.concat(plans.map((p) => p.probsTE)) as tf.Tensor2D;
    expect(meanLoss).toBeCloseTo(
      value(microBatchAuxLoss({ probsTE: all, countsE: pooled }, { alpha: 0.1 })),
      6,
    );
    // and it differs from the average micro-batch loss on these skewed micro-batches
    const microMean =
      plans.reduce((a, p) => a + value(microBatchAuxLoss(p, { alpha: 0.1 })), 0) / plans.length;
    expect(Math.abs(microMean - meanLoss)).toBeGreaterThan(1e-3);
    disposeAll(plans, all);
  });

  it('lets early micro-steps see partial counts, and keyed recomputation reuses them without double counting', () => {
    const [T, E, K] = [5, 4, 1];
    const plans = microBatches(3, T, E, K, 5);
    const gb = new GlobalAuxLoss({ numExperts: E, alpha: 1 });
    const partial = new Float64Array(E);
    const early: number[] = [];
    plans.forEach((p, m) => {
      gb.accumulate(p.countsE, m);
      p.countsE.forEach((c, i) => {
        partial[i]! += c;
      });
      expect(Array.from(gb.pooledCountsE())).toEqual(Array.from(partial));
      early.push(value(gb.loss(p, m)));
    });
    // recompute micro-batch 0 after all three were pooled: same counts as its first pass, pool unchanged
    gb.accumulate(plans[0]!.countsE, 0);
    expect(Array.from(gb.pooledCountsE())).toEqual(Array.from(partial));
    expect(gb.microBatches).toBe(3);
    expect(value(gb.loss(plans[0]!, 0))).toBeCloseTo(early[0]!, 7);
    expect(early[0]).toBeCloseTo(value(microBatchAuxLoss(plans[0]!, { alpha: 1 })), 6);
    expect(() => gb.loss(plans[0]!, 7)).toThrow(
      /GlobalAuxLoss\.loss\(\) was called with key 7, which no accumulate\(\) of this step used/,
    );
    gb.resetAfterStep();
    expect(() => gb.loss(plans[0]!)).toThrow(
      /GlobalAuxLoss\.loss\(\) was called before accumulate\(\) in this step/,
    );
    disposeAll(plans);
  });

  it('pools at most balanceWindow micro-batches, then restarts the pool', () => {
    const gb = new GlobalAuxLoss({ numExperts: 2, balanceWindow: 2 });
    gb.accumulate([1, 0]);
    gb.accumulate([2, 0]);
    expect(Array.from(gb.pooledCountsE())).toEqual([3, 0]);
    gb.accumulate([0, 4]);
    expect(Array.from(gb.pooledCountsE())).toEqual([0, 4]);
    gb.accumulate([0, 1]);
    expect(Array.from(gb.pooledCountsE())).toEqual([0, 5]);
    expect(gb.microBatches).toBe(2);
  });

  it('all-reduces counts over ranks and is not scaled down by the number of ranks', () => {
    // rank 0 sends everything to expert 0, the other rank everything to expert 1
    const T = 4;
    const otherRank = new Float32Array([0, T]);
    const gb = new GlobalAuxLoss({
      numExperts: 2,
      alpha: 0.01,
      allReduce: (c) => Float32Array.from(c, (v, i) => v + otherRank[i]!),
    });
    const plan = planFromLogits(hot([0, 0, 0, 0], 2), [[0], [0], [0], [0]]);
    gb.accumulate(plan.countsE);
    expect(Array.from(gb.pooledCountsE())).toEqual([T, T]);
    // f = (1/2, 1/2), P = (1, 0): alpha * 2 * 1/2 = alpha (micro-batch: 2 alpha; divided by ranks: alpha / 2)
    expect(value(gb.loss(plan))).toBeCloseTo(0.01, 7);
    expect(value(microBatchAuxLoss(plan, { alpha: 0.01 }))).toBeCloseTo(0.02, 7);
    disposeAll(plan);
  });

  it('supports an asynchronous all-reduce and refuses loss() until it resolves', async () => {
    const gb = new GlobalAuxLoss({
      numExperts: 2,
      alpha: 1,
      allReduce: async (c) => Float32Array.from(c, (v) => 2 * v),
    });
    const plan = planFromLogits(tf.zeros([2, 2]), [[0], [1]]);
    const pending = gb.accumulate(plan.countsE);
    expect(pending).toBeInstanceOf(Promise);
    expect(() => gb.loss(plan)).toThrow(/before the pending accumulate\(\) all-reduce finished/);
    expect(() => gb.accumulate(plan.countsE)).toThrow(/while a previous all-reduce is still pending/);
    await pending;
    expect(Array.from(gb.pooledCountsE())).toEqual([2, 2]);
    expect(value(gb.loss(plan))).toBeCloseTo(1, 6);
    disposeAll(plan);
  });

  it('adds the micro-batch term at localCoef (global + local)', () => {
    const plans = microBatches(4, 6, 4, 2, 9);
    const gb = new GlobalAuxLoss({ numExperts: 4, alpha: 0.1, localCoef: 0.001 });
    const plain = new GlobalAuxLoss({ numExperts: 4, alpha: 0.1 });
    for (const p of plans) {
      gb.accumulate(p.countsE);
      plain.accumulate(p.countsE);
    }
    const p = plans[2]!;
    expect(value(gb.loss(p))).toBeCloseTo(
      value(plain.loss(p)) + value(microBatchAuxLoss(p, { alpha: 0.001 })),
      6,
    );
    disposeAll(plans);
  });

  it('has finite-difference-correct gradients w.r.t. the local router logits', () => {
    const plans = microBatches(4, 6, 5, 2, 13);
    const gb = new GlobalAuxLoss({ numExperts: 5, alpha: 1, localCoef: 0.5 });
    for (const p of plans) gb.accumulate(p.countsE);
    const p = plans[1]!;
    checkGradients((x) => gb.loss({ probsTE: softmax(x) as tf.Tensor2D, countsE: p.countsE }), [p.logitsTE]);
    disposeAll(plans);
  });

  it('rejects counts of the wrong length and a bad window', () => {
    expect(() => new GlobalAuxLoss({ numExperts: 4, balanceWindow: 0 })).toThrow(
      /`config\.balanceWindow` passed to GlobalAuxLoss\(\) must be an integer >= 1, got 0/,
    );
    expect(() => new GlobalAuxLoss({ numExperts: 4 }).accumulate([1, 2])).toThrow(
      /`countsE` passed to GlobalAuxLoss\.accumulate\(\) must hold one count per expert \(4\), got 2/,
    );
    const gb = new GlobalAuxLoss({ numExperts: 4 });
    gb.accumulate([1, 1, 1, 1]);
    const probsTE = tf.ones([2, 3]) as tf.Tensor2D;
    expect(() => gb.loss({ probsTE, countsE: [1, 1, 1] })).toThrow(
      /`plan\.probsTE` passed to GlobalAuxLoss\.loss\(\) must have shape \[T, E=4\], got \[2, 3\]/,
    );
    probsTE.dispose();
  });
});

describe('ShuffledBatchAuxLoss', () => {
  it('equals the micro-batch loss when the pool is exactly one micro-batch', () => {
    const [p] = microBatches(1, 8, 4, 2, 21);
    const sb = new ShuffledBatchAuxLoss({ numExperts: 4, alpha: 0.1, rng: new Rng(1) });
    sb.accumulate(p!);
    expect(sb.tokens).toBe(8);
    expect(value(sb.loss(p!))).toBeCloseTo(value(microBatchAuxLoss(p!, { alpha: 0.1 })), 6);
    disposeAll(p);
  });

  it('draws f from the pooled global batch: its mean over draws is the global-batch loss', () => {
    const plans = microBatches(8, 8, 4, 2, 23);
    const sb = new ShuffledBatchAuxLoss({ numExperts: 4, alpha: 1, rng: new Rng(2) });
    const gb = new GlobalAuxLoss({ numExperts: 4, alpha: 1 });
    for (const p of plans) {
      sb.accumulate(p);
      gb.accumulate(p.countsE);
    }
    const p = plans[0]!;
    const draws = Array.from({ length: 400 }, () => value(sb.loss(p)));
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
    const globalLoss = value(gb.loss(p));
    expect(Math.abs(mean - globalLoss)).toBeLessThan(0.02 * globalLoss);
    expect(Math.max(...draws) - Math.min(...draws)).toBeGreaterThan(0.01); // draws really vary
    // keyed: a recomputed micro-batch sees the same draw
    const first = value(sb.loss(p, 'mb0'));
    expect(value(sb.loss(p, 'mb0'))).toBe(first);
    disposeAll(plans);
  });

  it('ignores a repeated keyed accumulate, gathers over ranks and resets after the step', () => {
    const [p] = microBatches(1, 4, 4, 1, 29);
    const sb = new ShuffledBatchAuxLoss({
      numExperts: 4,
      rng: new Rng(3),
      allGather: (idx) => Int32Array.from([...idx, ...idx, ...idx]),
    });
    sb.accumulate(p!, 0);
    sb.accumulate(p!, 0);
    expect(sb.tokens).toBe(12);
    sb.resetAfterStep();
    expect(sb.tokens).toBe(0);
    expect(() => sb.loss(p!)).toThrow(
      /ShuffledBatchAuxLoss\.loss\(\) was called before accumulate\(\) in this step/,
    );
    disposeAll(p);
  });

  it('has finite-difference-correct gradients w.r.t. the local router logits', () => {
    const plans = microBatches(3, 6, 4, 2, 31);
    const sb = new ShuffledBatchAuxLoss({ numExperts: 4, alpha: 1, rng: new Rng(4) });
    for (const p of plans) sb.accumulate(p);
    const p = plans[2]!;
    // a fixed key keeps the same subset across the finite-difference evaluations
    checkGradients((x) => sb.loss({ probsTE: softmax(x) as tf.Tensor2D }, 'fixed'), [p.logitsTE]);
    disposeAll(plans);
  });
});

describe('memory', () => {
  it('leaks no tensors', async () => {
    const plans = microBatches(2, 4, 4, 2, 37);
    const gb = new GlobalAuxLoss({ numExperts: 4, localCoef: 1e-4 });
    const sb = new ShuffledBatchAuxLoss({ numExperts: 4, rng: new Rng(5) });
    const v = tf.variable(plans[0]!.logitsTE.clone(), true);
    await expectNoLeaks(() => {
      for (const p of plans) {
        gb.accumulate(p.countsE);
        sb.accumulate(p);
      }
      for (const loss of [gb, sb]) {
        const { value: val, grads } = tf.variableGrads(
          () =>
            loss.loss({ probsTE: softmax(v) as tf.Tensor2D, countsE: countsOf([[0, 1]], 4) }) as tf.Scalar,
          [v],
        );
        disposeAll(val, grads);
      }
    }, 'global losses');
    disposeAll(plans, v);
  });
});
