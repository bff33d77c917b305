import { checkGradients, expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { disposePlanExceptWeights, fixedPlan, randomRouting } from '../test/fakes';
import { buildDispatch, combine, dispatch, dispatchedWeights } from './dispatch';

const rng = new Rng('dispatch');

// 4 tokens, K = 2, E = 3; token 2's second slot is dropped.
const routing = {
  idx: [
    [2, 0],
    [0, 1],
    [2, 1],
    [1, 0],
  ],
  kept: [
    [1, 1],
    [1, 1],
    [1, 0],
    [1, 1],
  ],
  numExperts: 3,
  capacity: 3,
};

describe('buildDispatch', () => {
  it('sorts kept assignments by expert, token-major inside an expert, and records offsets', () => {
    const w = tf.ones([4, 2]) as Tensor2D;
    const plan = fixedPlan(routing, w);
    const d = buildDispatch(plan);
    expect(Array.from(d.countsE)).toEqual([3, 2, 2]);
    expect(Array.from(d.offsetsE)).toEqual([0, 3, 5, 7]);
    expect(d.numRows).toBe(7);
    expect(Array.from(d.tokenIdxS)).toEqual([0, 1, 3, 1, 3, 0, 2]);
    expect(Array.from(d.slotIdxS)).toEqual([1, 2, 7, 3, 6, 0, 4]);
    expect(d.capacity).toBe(3);
    expect(d.paddedCapacity).toBe(3);
    disposePlanExceptWeights(plan);
    w.dispose();
  });

  it('pads to the largest count when routing is dropless', () => {
    const w = tf.ones([4, 2]) as Tensor2D;
    const plan = fixedPlan({ ...routing, capacity: null }, w);
    expect(buildDispatch(plan).paddedCapacity).toBe(3);
    disposePlanExceptWeights(plan);
    w.dispose();
  });

  it('rejects malformed plans with a clear error', () => {
    const w = tf.ones([4, 2]) as Tensor2D;
    const plan = fixedPlan(routing, w);
    const bad = { ...plan, expertIdx: Int32Array.from([0, 1, 2, 3, 0, 1, 0, 1]) };
    expect(() => buildDispatch(bad)).toThrow(
      /`plan.expertIdx\[3\]` passed to buildDispatch\(\) must be an integer in \[0, 2\], got 3/,
    );
    expect(() => buildDispatch({ ...plan, numExperts: 0 })).toThrow(
      /`plan.numExperts` .* must be an integer >= 1, got 0/,
    );
    expect(() => buildDispatch({ ...plan, kept: new Uint8Array(3) })).toThrow(
      /`plan.kept`.*length T \* K \(8\)/,
    );
    disposePlanExceptWeights(plan);
    w.dispose();
  });
});

describe('dispatch / combine', () => {
  it('dispatch puts each expert’s token rows together', () => {
    const x = tf.tensor2d([[0], [10], [20], [30]]);
    const w = tf.ones([4, 2]) as Tensor2D;
    const plan = fixedPlan(routing, w);
    const xSD = dispatch(x, buildDispatch(plan));
    expect(xSD.arraySync()).toEqual([[0], [10], [30], [10], [30], [0], [20]]);
    tf.dispose([x, w, xSD]);
    disposePlanExceptWeights(plan);
  });

  it('combine is the weighted scatter-add, and a dropped slot adds exactly zero', () => {
    const w = tf.tensor2d([
      [0.5, 0.25],
      [1, 2],
      [3, 1000],
      [4, 5],
    ]) as Tensor2D;
    const plan = fixedPlan(routing, w);
    const d = buildDispatch(plan);
    // Row s carries the value 100 * expert + token.
    const ySD = tf.tensor2d(Array.from(d.tokenIdxS, (t, s) => [100 * [0, 0, 0, 1, 1, 2, 2][s]! + t]));
    const y = combine(ySD, w, d).arraySync() as number[][];
    expect(y[0]![0]).toBeCloseTo(0.5 * 200 + 0.25 * 0, 5);
    expect(y[1]![0]).toBeCloseTo(1 * 1 + 2 * 101, 5);
    expect(y[2]![0]).toBeCloseTo(3 * 202, 5); // the dropped slot's weight (1000) is never used
    expect(y[3]![0]).toBeCloseTo(4 * 103 + 5 * 3, 5);
    expect(dispatchedWeights(w, d).arraySync()).toEqual([[0.25], [1], [5], [2], [4], [0.5], [3]]);
    tf.dispose([w, ySD]);
    disposePlanExceptWeights(plan);
  });

  it('a token whose every slot is dropped gets an exact zero row', () => {
    const w = tf.ones([2, 1]) as Tensor2D;
    const plan = fixedPlan({ idx: [[0], [1]], kept: [[1], [0]], numExperts: 2 }, w);
    const d = buildDispatch(plan);
    const y = combine(tf.fill([1, 3], Number.MAX_VALUE / 4) as Tensor2D, w, d);
    expect((y.arraySync() as number[][])[1]).toEqual([0, 0, 0]);
    tf.dispose([w, y]);
    disposePlanExceptWeights(plan);
  });

  it('dispatch and combine match finite differences (x, expert rows, combine weights)', () => {
    const T = 5;
    const w = rng.uniformTensor([T, 2], 0.1, 1) as Tensor2D;
    const plan = fixedPlan(randomRouting(rng, T, 2, 3, 0.2), w);
    const d = buildDispatch(plan);
    const x = rng.normalTensor([T, 3]);
    const y = rng.normalTensor([d.numRows, 3]);
    checkGradients((a) => dispatch(a as Tensor2D, d), [x]);
    checkGradients((a, b) => combine(a as Tensor2D, b as Tensor2D, d), [y, w]);
    tf.dispose([w, x, y]);
    disposePlanExceptWeights(plan);
  });

  it('checks shapes and dtypes', () => {
    const w = tf.ones([4, 2]) as Tensor2D;
    const plan = fixedPlan(routing, w);
    const d = buildDispatch(plan);
    const x3 = tf.zeros([3, 2]) as Tensor2D;
    const xi = tf.zeros([4, 2], 'int32') as Tensor2D;
    expect(() => dispatch(x3, d)).toThrow(
      /`xTD` passed to dispatch\(\) must have shape \[T=4, D\], got \[3, 2\]/,
    );
    expect(() => dispatch(xi, d)).toThrow(/`xTD` passed to dispatch\(\) must have dtype float32, got int32/);
    expect(() => combine(x3, w, d)).toThrow(
      /`ySD` passed to combine\(\) must have shape \[S=7, D\], got \[3, 2\]/,
    );
    expect(() => dispatch(x3, { ...d })).toThrow(/a DispatchPlan returned by buildDispatch\(\)/);
    tf.dispose([w, x3, xi]);
    disposePlanExceptWeights(plan);
  });

  it('leaks no tensors, forward or backward', async () => {
    const w = rng.uniformTensor([6, 2], 0, 1) as Tensor2D;
    const plan = fixedPlan(randomRouting(rng, 6, 2, 4, 0.3), w);
    const d = buildDispatch(plan);
    const x = rng.normalTensor([6, 4]);
    await expectNoLeaks(() =>
      tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(combine(tf.tanh(dispatch(a as Tensor2D, d)), b as Tensor2D, d)),
      )([x, w]),
    );
    tf.dispose([w, x]);
    disposePlanExceptWeights(plan);
  });
});
