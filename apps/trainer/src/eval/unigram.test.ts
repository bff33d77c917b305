import { describe, expect, it } from 'vitest';
import { scoringWindows } from './score';
import { UnigramModel } from './unigram';

describe('UnigramModel', () => {
  it('scores with add-one smoothed frequencies of the training tokens', () => {
    const u = UnigramModel.fit([[0, 0, 1], [0]], 3); // counts 3+1, 1+1, 0+1 over 7
    expect(u.crossEntropy([0])).toBeCloseTo(-Math.log(4 / 7), 12);
    expect(u.crossEntropy([2, 1])).toBeCloseTo(-(Math.log(1 / 7) + Math.log(2 / 7)) / 2, 12);
    expect(() => UnigramModel.fit([[5]], 3)).toThrow(/token id/);
  });
});

describe('scoringWindows', () => {
  it('predicts every token after the first exactly once, from at most seqLen tokens of its window', () => {
    for (const [n, s] of [
      [10, 4],
      [9, 4],
      [5, 4],
      [2, 1],
      [100, 7],
    ] as const) {
      const w = scoringWindows(n, s);
      const hits = new Array<number>(n).fill(0);
      for (const { start, length } of w) {
        expect(length).toBeLessThanOrEqual(s + 1);
        expect(length).toBeGreaterThanOrEqual(2);
        for (let t = start + 1; t < start + length; t++) hits[t]! += 1;
      }
      expect(hits).toEqual([0, ...new Array<number>(n - 1).fill(1)]);
      // consecutive windows overlap by exactly one token
      for (let i = 1; i < w.length; i++) expect(w[i]!.start).toBe(w[i - 1]!.start + w[i - 1]!.length - 1);
    }
    expect(scoringWindows(10, 4)).toEqual([
      { start: 0, length: 5 },
      { start: 4, length: 5 },
      { start: 8, length: 2 },
    ]);
    expect(scoringWindows(1, 4)).toEqual([]);
  });
});
