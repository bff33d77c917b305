import { expectNoLeaks, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { createRouter, disposeRoutingPlan } from '../index';
import { hashTokenId } from './balanced';

describe('forced-balanced debug router', () => {
  it('round-robin: slot j of token t goes to (t*K + j) mod E, weights 1/K', () => {
    const r = createRouter({ type: 'balanced', numExperts: 3, dModel: 2, k: 2 });
    const x = tf.zeros([4, 2]) as Tensor2D;
    const plan = r.route(x, { training: true });
    expect(Array.from(plan.expertIdx)).toEqual([0, 1, 2, 0, 1, 2, 0, 1]);
    expect(plan.topkWeightTK.arraySync()).toEqual([
      [0.5, 0.5],
      [0.5, 0.5],
      [0.5, 0.5],
      [0.5, 0.5],
    ]);
    expect(Array.from(plan.countsE)).toEqual([3, 3, 2]);
    expect(plan.probsTE.arraySync()[0]).toEqual([1 / 3, 1 / 3, 1 / 3].map((v) => Math.fround(v)));
    expect(r.numParams()).toBe(0);
    expect(r.flopsPerToken()).toBe(0);
    expect(Object.keys(r.variables)).toEqual([]);
    disposeRoutingPlan(plan);
    x.dispose();
  });

  it('hash: the same token id always lands on the same experts; ids are required', () => {
    const r = createRouter({ type: 'balanced', numExperts: 8, dModel: 2, k: 2, assignment: 'hash' });
    const x = tf.zeros([4, 2]) as Tensor2D;
    const plan = r.route(x, { training: false, tokenIds: Int32Array.of(7, 42, 7, 3) });
    const idx = Array.from(plan.expertIdx);
    expect(idx.slice(0, 2)).toEqual(idx.slice(4, 6));
    const h = hashTokenId(42) % 8;
    expect(idx.slice(2, 4)).toEqual([h, (h + 1) % 8]);
    expect(() => r.route(x, { training: false })).toThrow(
      /`options\.tokenIds` passed to Router\.route\(\) must be an Int32Array of length T \(4\) for hash routing, got undefined/,
    );
    disposeRoutingPlan(plan);
    x.dispose();
  });

  it('hash spreads a vocabulary close to evenly', () => {
    const counts = new Array(16).fill(0);
    for (let id = 0; id < 16_000; id++) counts[hashTokenId(id) % 16]++;
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(150);
  });

  it('leaves no tensors behind', async () => {
    const r = createRouter({ type: 'balanced', numExperts: 4, dModel: 2, k: 1, capacityFactor: 1 });
    const x = tf.zeros([5, 2]) as Tensor2D;
    await expectNoLeaks(() => disposeRoutingPlan(r.route(x, { training: true })));
    x.dispose();
  });
});
