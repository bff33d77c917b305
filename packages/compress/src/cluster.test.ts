import { RoutedExperts } from '@switchyard/experts';
import { expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { clusterExperts, groupingFromAssignment, groupingJaccard, withinGroupSimilarity } from './cluster';
import {
  ActivationCentroids,
  functionalSimilarity,
  fusedSimilarity,
  structuralSimilarity,
} from './similarity';

/** A similarity with two planted blocks: experts {0, 2, 5} and {1, 3, 4} alike inside, unlike across. */
function planted(): number[][] {
  const block = [0, 1, 0, 1, 1, 0];
  return block.map((a, i) => block.map((b, j) => (i === j ? 1 : a === b ? 0.8 + 0.01 * ((i + j) % 3) : 0.1)));
}

describe('similarity', () => {
  it('structural similarity is the cosine of flattened weights', () => {
    const w1 = tf.tensor3d([1, 0, 0, 1, 2, 0, 0, 2, 0, 1, 1, 0], [3, 2, 2]); // experts 0 and 1 parallel
    const w2 = tf.tensor3d([1, 0, 0, 1, 2, 0, 0, 2, 1, 0, 0, -1], [3, 2, 2]);
    const s = structuralSimilarity({ w1EDF: w1, w2EFD: w2 });
    expect(s[0]![1]).toBeCloseTo(1, 6);
    // expert 2: [0,1,1,0, 1,0,0,-1] vs expert 0: [1,0,0,1, 1,0,0,1] -> (0 + 1 - 1) / (2 * 2) = 0
    expect(s[0]![2]).toBeCloseTo(0, 6);
    expect(s[2]![2]).toBe(1);
    tf.dispose([w1, w2]);
  });

  it('activation centroids average the router logits of the tokens routed to each expert', () => {
    const logitsTE = tf.tensor2d([1, 0, 0, 0, 2, 0, 3, 1, 0], [3, 3]);
    const acc = new ActivationCentroids(3);
    // token 0 -> experts 0, 1; token 1 -> 1, 2 (slot to 2 dropped); token 2 -> 0, 1
    acc.add({
      logitsTE,
      numTokens: 3,
      numExperts: 3,
      k: 2,
      expertIdx: Int32Array.from([0, 1, 1, 2, 0, 1]),
      kept: Uint8Array.from([1, 1, 1, 0, 1, 1]),
    });
    expect(acc.counts()).toEqual([2, 3, 0]);
    const c = acc.centroids();
    expect(c[0]).toEqual([2, 0.5, 0]);
    expect(c[1]![0]).toBeCloseTo(4 / 3);
    expect(c[2]).toEqual([0, 0, 0]);
    const s = functionalSimilarity(c);
    expect(s[0]![2]).toBe(0); // no token reached expert 2
    expect(s[0]![1]).toBeCloseTo((2 * (4 / 3) + 0.5) / (Math.hypot(2, 0.5) * Math.hypot(4 / 3, 1)), 6);
    logitsTE.dispose();
  });

  it('fuses the two with lambda and checks its input', () => {
    const a = [
      [1, 0.2],
      [0.2, 1],
    ];
    const b = [
      [1, 0.6],
      [0.6, 1],
    ];
    expect(fusedSimilarity(a, b, 0.25)[0]![1]).toBeCloseTo(0.25 * 0.2 + 0.75 * 0.6);
    expect(fusedSimilarity(a, b, 1)).toEqual(a);
    expect(() => fusedSimilarity(a, b, 1.5)).toThrow(/`lambda` passed to fusedSimilarity\(\) must be/);
    expect(() => fusedSimilarity(a, [[1]], 0.5)).toThrow(/must be 2 x 2 like `structural`, got 1 x 1/);
    expect(() => new ActivationCentroids(0)).toThrow(/numExperts/);
  });
});

describe('clusterExperts', () => {
  it('recovers planted groups, free-size and equal-size', () => {
    const s = planted();
    expect(clusterExperts(s, { numGroups: 2 }).groups).toEqual([
      [0, 2, 5],
      [1, 3, 4],
    ]);
    expect(clusterExperts(s, { numGroups: 2, equalSize: true }).groups).toEqual([
      [0, 2, 5],
      [1, 3, 4],
    ]);
    const one = clusterExperts(s, { numGroups: 6, equalSize: true });
    expect(one.groups).toEqual([[0], [1], [2], [3], [4], [5]]);
    expect(clusterExperts(s, { numGroups: 1 }).groups).toEqual([[0, 1, 2, 3, 4, 5]]);
  });

  it('equal-size groups are never worse than the greedy start after swaps (random similarities)', () => {
    const rng = new Rng(7);
    for (let trial = 0; trial < 5; trial++) {
      const E = 8;
      const raw = Array.from({ length: E }, () => Array.from({ length: E }, () => rng.float()));
      const s = raw.map((r, i) => r.map((v, j) => (i === j ? 1 : (v + raw[j]![i]!) / 2)));
      const g = clusterExperts(s, { numGroups: 4, equalSize: true });
      expect(g.groups.every((x) => x.length === 2)).toBe(true);
      // no single swap improves it (a local optimum of the objective)
      const base = withinGroupSimilarity(s, g);
      for (let a = 0; a < E; a++)
        for (let b = a + 1; b < E; b++) {
          if (g.groupOf[a] === g.groupOf[b]) continue;
          const swapped = [...g.groupOf];
          [swapped[a], swapped[b]] = [swapped[b]!, swapped[a]!];
          expect(withinGroupSimilarity(s, groupingFromAssignment(swapped))).toBeLessThanOrEqual(base + 1e-9);
        }
    }
  });

  it('rejects bad input, naming the constraint', () => {
    const s = planted();
    expect(() => clusterExperts(s, { numGroups: 7 })).toThrow(
      /`options.numGroups` passed to clusterExperts\(\) must be <= the number of experts E \(6\).*got 7/,
    );
    expect(() => clusterExperts(s, { numGroups: 4, equalSize: true })).toThrow(
      /must be a divisor of E \(6\) for equal-size groups, got 4/,
    );
    expect(() => clusterExperts([[1, 2]], { numGroups: 1 })).toThrow(/similarity\[0\]/);
    expect(() => groupingFromAssignment([0, 2])).toThrow(/groupOf/);
  });

  it('Jaccard stability counts co-grouped pairs', () => {
    const a = groupingFromAssignment([0, 0, 1, 1]);
    expect(groupingJaccard(a, groupingFromAssignment([1, 1, 0, 0]))).toBe(1);
    expect(groupingJaccard(a, groupingFromAssignment([0, 0, 0, 1]))).toBe(0.25); // {01} of {01, 23, 02, 12}
    expect(groupingJaccard(a, groupingFromAssignment([0, 1, 0, 1]))).toBe(0);
    expect(groupingJaccard(groupingFromAssignment([0, 1]), groupingFromAssignment([1, 0]))).toBe(1);
    expect(() => groupingJaccard(a, groupingFromAssignment([0, 0]))).toThrow(/same 4 experts/);
  });

  it('clusters the experts of a real bank structurally without leaking', async () => {
    await expectNoLeaks(() => {
      const bank = new RoutedExperts({ numExperts: 4, dModel: 4, dFF: 6, activation: 'swiglu' }, new Rng(1));
      const s = structuralSimilarity(bank.weights());
      expect(clusterExperts(s, { numGroups: 2, equalSize: true }).groups.flat().sort()).toEqual([0, 1, 2, 3]);
      bank.dispose();
    });
  });
});
