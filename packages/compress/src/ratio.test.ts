import { RoutedExperts } from '@switchyard/experts';
import { Rng } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { CompressedExperts } from './bank';
import { groupingFromAssignment } from './cluster';
import { compressionRatio } from './ratio';

describe('compressionRatio', () => {
  it('reproduces the reference arithmetic exactly: d 4096, K 8, r 16 -> 8 / 1.0625 = 7.529...', () => {
    const ratio = compressionRatio({ groupSize: 8, dIn: 4096, dOut: 4096, rank: 16 });
    expect(ratio).toBe(8 / 1.0625);
    expect(ratio.toFixed(2)).toBe('7.53');
    // the 6.6x quoted elsewhere does not follow from these shapes
    expect(Math.abs(ratio - 6.6)).toBeGreaterThan(0.9);
  });

  it('equals parameters before / after of a compressed bank with equal-size groups', () => {
    const [E, D, F, r] = [8, 12, 20, 3];
    const experts = new RoutedExperts({ numExperts: E, dModel: D, dFF: F, activation: 'swiglu' }, new Rng(1));
    for (const groupOf of [
      [0, 0, 0, 0, 1, 1, 1, 1],
      [0, 1, 2, 3, 0, 1, 2, 3],
    ]) {
      const grouping = groupingFromAssignment(groupOf);
      const { bank } = CompressedExperts.fromWeights(experts.weights(), 'swiglu', { rank: r, grouping });
      const measured = experts.numParams() / bank.numParams();
      const K = E / grouping.numGroups;
      expect(measured).toBeCloseTo(compressionRatio({ groupSize: K, dIn: D, dOut: F, rank: r }), 12);
      bank.dispose();
    }
    experts.dispose();
  });

  it('rank 0 gives K (experts merged into their basis); rejects a rank the shape cannot have', () => {
    expect(compressionRatio({ groupSize: 4, dIn: 8, dOut: 8, rank: 0 })).toBe(4);
    expect(() => compressionRatio({ groupSize: 4, dIn: 8, dOut: 6, rank: 7 })).toThrow(
      /`rank`.*\[0, 6\], got 7/,
    );
  });
});
