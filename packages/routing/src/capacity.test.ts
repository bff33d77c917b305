import { expectNoLeaks, Rng, type Tensor2D } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { computeCapacity, createRouter, disposeRoutingPlan, dropByCapacity } from './index';

describe('computeCapacity', () => {
  it('is ceil(T*K/E*factor), null when dropless', () => {
    expect(computeCapacity(4096, 2, 8, 1.25)).toBe(1280);
    expect(computeCapacity(4, 1, 4, 1)).toBe(1);
    expect(computeCapacity(5, 1, 4, 1)).toBe(2);
    expect(computeCapacity(10, 2, 4, 1.2)).toBe(6); // 6.000000000000001 in floating point
    expect(computeCapacity(16, 2, 8, 0)).toBeNull();
    expect(computeCapacity(16, 2, 8, undefined)).toBeNull();
    expect(computeCapacity(3, 1, 8, 0.01)).toBe(1);
    expect(computeCapacity(0, 1, 8, 1)).toBe(0);
  });

  it('rejects bad arguments by name', () => {
    expect(() => computeCapacity(4, 1, 4, -1)).toThrow(
      /`factor` passed to computeCapacity\(\) must be a finite number >= 0, got -1/,
    );
    expect(() => computeCapacity(4, 0, 4, 1)).toThrow(
      /`K` passed to computeCapacity\(\) must be an integer >= 1, got 0/,
    );
    expect(() => computeCapacity(4, 1, 0, 1)).toThrow(/`E` passed to computeCapacity\(\)/);
    expect(() => computeCapacity(-1, 1, 4, 1)).toThrow(/`T` passed to computeCapacity\(\)/);
  });
});

describe('dropByCapacity', () => {
  const idx = Int32Array.of(0, 0, 1, 1);
  const scores = Float32Array.of(0.4, 0.9, 0.5, 0.3);

  it('position keeps the earliest tokens, probs the highest scores', () => {
    const pos = dropByCapacity(idx, scores, 4, 1, 2, 1, 'position');
    const prb = dropByCapacity(idx, scores, 4, 1, 2, 1, 'probs');
    expect(Array.from(pos.kept)).toEqual([1, 0, 1, 0]);
    expect(Array.from(prb.kept)).toEqual([0, 1, 1, 0]);
    expect(pos.dropped).toBe(2);
    expect(Array.from(pos.countsE)).toEqual([2, 2]);
    expect(Array.from(prb.keptCountsE)).toEqual([1, 1]);
  });

  it('ties under probs go to the earlier token; null capacity keeps all', () => {
    const tie = dropByCapacity(Int32Array.of(0, 0, 0), Float32Array.of(0.5, 0.7, 0.7), 3, 1, 1, 1, 'probs');
    expect(Array.from(tie.kept)).toEqual([0, 1, 0]);
    const all = dropByCapacity(idx, scores, 4, 1, 2, null, 'position');
    expect(Array.from(all.kept)).toEqual([1, 1, 1, 1]);
    expect(all.dropped).toBe(0);
  });

  it('inactive assignments use no capacity; slot order puts first choices first', () => {
    // 2 tokens, K = 2: t0 -> (0, 1), t1 -> (1, 0).
    const e = Int32Array.of(0, 1, 1, 0);
    const s = new Float32Array(4);
    const token = dropByCapacity(e, s, 2, 2, 2, 1, 'position');
    const slot = dropByCapacity(e, s, 2, 2, 2, 1, 'position', { order: 'slot' });
    expect(Array.from(token.kept)).toEqual([1, 1, 0, 0]);
    expect(Array.from(slot.kept)).toEqual([1, 0, 1, 0]);
    const inactive = dropByCapacity(e, s, 2, 2, 2, 1, 'position', { active: Uint8Array.of(1, 0, 1, 1) });
    expect(Array.from(inactive.kept)).toEqual([1, 0, 1, 0]);
    expect(Array.from(inactive.countsE)).toEqual([2, 1]);
    expect(inactive.dropped).toBe(1);
  });

  it('rejects inconsistent arrays', () => {
    expect(() => dropByCapacity(idx, scores, 4, 2, 2, 1, 'position')).toThrow(
      /`expertIdx` passed to dropByCapacity\(\) must be an Int32Array of length T\*K \(8\), got 4/,
    );
    expect(() => dropByCapacity(Int32Array.of(0, 5, 1, 1), scores, 4, 1, 2, 1, 'position')).toThrow(
      /`expertIdx\[1\]` passed to dropByCapacity\(\) must be an integer in \[0, 1\], got 5/,
    );
  });
});

it('capacity routing leaves no tensors behind', async () => {
  const r = createRouter({
    type: 'topk',
    numExperts: 4,
    dModel: 3,
    k: 2,
    capacityFactor: 0.5,
    dropPolicy: 'probs',
  });
  const x = new Rng(0).normalTensor([12, 3]) as Tensor2D;
  await expectNoLeaks(() => {
    const plan = r.route(x, { training: true });
    // C = ceil(12 * 2 / 4 * 0.5) = 3: at most 12 of the 24 assignments fit.
    expect(plan.capacity).toBe(3);
    expect(plan.dropRate).toBeGreaterThanOrEqual(0.5);
    expect(Math.max(...plan.keptCountsE)).toBeLessThanOrEqual(3);
    disposeRoutingPlan(plan);
  });
  x.dispose();
  r.dispose();
});
