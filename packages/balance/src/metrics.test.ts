import { disposeAll, expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { planFromLogits } from './internal/plan-fixture';
import { routerZLoss } from './losses';
import {
  balanceStats,
  coefficientOfVariation,
  domainExpertMutualInformation,
  domainLiftPeak,
  dropRate,
  MaxVioGlobal,
  maxVio,
  normalisedEntropy,
  perSequenceMaxVio,
  planBalanceStats,
  routerLse2,
  SpecialisationAccumulator,
  usageVariance,
} from './metrics';

describe('load metrics', () => {
  it('give exact values on hand-made loads', () => {
    expect(maxVio([3, 1, 1, 3])).toBe(0.5);
    expect(maxVio([2, 2, 2])).toBe(0);
    expect(maxVio([8, 0, 0, 0])).toBe(3); // E - 1 when one expert takes everything
    expect(maxVio([0, 0])).toBeNaN();
    expect(coefficientOfVariation([2, 0])).toBe(1);
    expect(coefficientOfVariation([1, 2, 3])).toBeCloseTo(Math.sqrt(2 / 3) / 2, 12);
    expect(normalisedEntropy([5, 5, 5, 5])).toBeCloseTo(1, 12);
    expect(normalisedEntropy([7, 0, 0, 0])).toBe(0);
    expect(normalisedEntropy([1, 1, 0, 0])).toBeCloseTo(0.5, 12);
    expect(usageVariance([1, 0])).toBe(0.25);
    expect(usageVariance([3, 3, 3])).toBe(0);
    expect(dropRate([4, 4], [4, 2])).toBe(0.25);
    expect(balanceStats([3, 1, 1, 3])).toEqual({
      maxVio: 0.5,
      cv: 0.5,
      normalisedEntropy: normalisedEntropy([3, 1, 1, 3]),
      usageVariance: usageVariance([3, 1, 1, 3]),
    });
  });

  it('read a plan; dropRate() from counts matches the plan', () => {
    const plan = planFromLogits(
      tf.zeros([4, 3]),
      [
        [0, 1],
        [0, 2],
        [0, 1],
        [1, 2],
      ],
      { kept: [1, 1, 1, 1, 0, 1, 1, 0], capacity: 2 },
    );
    const s = planBalanceStats(plan);
    expect(s.dropRate).toBe(plan.dropRate);
    expect(dropRate(plan.countsE, plan.keptCountsE)).toBe(0.25);
    expect(s.maxVio).toBeCloseTo((3 - 8 / 3) / (8 / 3), 12);
    disposeAll(plan);
  });

  it('reject bad loads with named errors', () => {
    expect(() => maxVio([])).toThrow(
      /`loadE` passed to maxVio\(\) must be a non-empty array of per-expert loads, got \[\]/,
    );
    expect(() => maxVio([1, Number.NaN])).toThrow(
      /`loadE\[1\]` passed to maxVio\(\) must be a finite count >= 0, got NaN/,
    );
    expect(() => dropRate([1, 1], [2, 1])).toThrow(
      /`keptCountsE\[0\]` passed to dropRate\(\) must be <= countsE\[0\] \(1\), got 2/,
    );
  });
});

describe('routerLse2', () => {
  it('is the mean squared logsumexp of the logits (the z-loss without its coefficient)', () => {
    const logits = tf.tensor2d([
      [0, 0],
      [3, -1],
    ]);
    const expected = (Math.log(2) ** 2 + Math.log(Math.exp(3) + Math.exp(-1)) ** 2) / 2;
    expect(routerLse2(logits)).toBeCloseTo(expected, 5);
    const z = routerZLoss({ logitsTE: logits }, { coef: 1 });
    expect(z.dataSync()[0]).toBeCloseTo(expected, 5);
    disposeAll(logits, z);
  });
});

describe('MaxVioGlobal', () => {
  it('accumulates counts over an eval set: imbalanced batches, balanced set', () => {
    const acc = new MaxVioGlobal({ numLayers: 2, numExperts: 2 });
    const batches = [
      [6, 2],
      [2, 6],
      [4, 4],
    ];
    for (const b of batches) {
      acc.add(0, b);
      acc.add(1, [b[0]!, 0]);
    }
    expect(batches.map((b) => maxVio(b))).toEqual([0.5, 0.5, 0]);
    const { perLayer, mean } = acc.result();
    expect(perLayer).toEqual([0, 1]);
    expect(mean).toBe(0.5);
    expect(Array.from(acc.loadE(0))).toEqual([12, 12]);
    acc.reset();
    expect(acc.result().perLayer.every((v) => Number.isNaN(v))).toBe(true);
    expect(acc.result().mean).toBeNaN();
  });

  it('merges accumulators that saw different batches into the whole-set result', () => {
    const whole = new MaxVioGlobal({ numLayers: 2, numExperts: 3 });
    const parts = [0, 1].map(() => new MaxVioGlobal({ numLayers: 2, numExperts: 3 }));
    const batches = [
      [5, 1, 0],
      [0, 2, 7],
      [3, 3, 1],
    ];
    batches.forEach((b, i) => {
      for (const l of [0, 1]) {
        whole.add(l, l === 0 ? b : [b[2]!, b[0]!, b[1]!]);
        parts[i % 2]!.add(l, l === 0 ? b : [b[2]!, b[0]!, b[1]!]);
      }
    });
    const merged = new MaxVioGlobal({ numLayers: 2, numExperts: 3 });
    for (const p of parts) merged.addCounts(p.counts());
    expect(Array.from(merged.counts())).toEqual(Array.from(whole.counts()));
    expect(merged.result()).toEqual(whole.result());
    expect(() => merged.addCounts([1, 2, 3])).toThrow(
      /`flatLE` passed to MaxVioGlobal\.addCounts\(\) must hold 6 counts \(\[2, 3\] row-major\), got 3/,
    );
    expect(() => merged.addCounts([1, 2, 3, 4, 5, -1])).toThrow(/flatLE\[5\]/);
  });
});

describe('SpecialisationAccumulator', () => {
  it('measures per-domain selection frequencies, their max and top-K sums', () => {
    const spec = new SpecialisationAccumulator({ numDomains: 3, numExperts: 4, k: 2, numLayers: 1 });
    // domain 0 always uses experts {0, 1}; domain 1 is uniform over the pairs {0,2}, {1,3}; domain 2 is never seen
    spec.add(0, 0, [0, 1, 1, 0, 0, 1]);
    spec.add(0, [1, 1, 0], [0, 2, 1, 3, 1, 0]);
    const s = spec.summary(0);
    expect(s.tokensPerDomain).toEqual([4, 2, 0]);
    expect(s.frequencies[0]).toEqual([1, 1, 0, 0]);
    expect(s.frequencies[1]).toEqual([0.5, 0.5, 0.5, 0.5]);
    expect(s.frequencies[2]!.every((v) => Number.isNaN(v))).toBe(true);
    expect(s.max).toBe(1);
    expect(s.uniform).toBe(0.5);
    expect(s.meanTopKSum).toBe((2 + 1) / 2);
    expect(spec.meanOverLayers()).toEqual({ max: 1, meanTopKSum: 1.5 });
    expect(() => spec.add(0, 3, [0, 1])).toThrow(
      /`domain` passed to SpecialisationAccumulator\.add\(\) must be an integer in \[0, 2\], got 3/,
    );
  });

  it('merges accumulators that saw different batches into the whole-set summary', () => {
    const cfg = { numDomains: 2, numExperts: 4, k: 2, numLayers: 2 };
    const whole = new SpecialisationAccumulator(cfg);
    const a = new SpecialisationAccumulator(cfg);
    const b = new SpecialisationAccumulator(cfg);
    const adds: [number, number | number[], number[]][] = [
      [0, 0, [0, 1, 1, 2]],
      [1, 1, [3, 2]],
      [0, [1, 0], [2, 3, 0, 1]],
      [1, 0, [0, 1, 0, 2, 1, 3]],
    ];
    adds.forEach(([l, d, idx], i) => {
      whole.add(l, d, idx);
      (i % 2 ? b : a).add(l, d, idx);
    });
    a.addCounts(b.counts());
    for (const l of [0, 1]) expect(a.summary(l)).toEqual(whole.summary(l));
    expect(() => a.addCounts(new Float64Array(3))).toThrow(
      /must hold 20 counts \(\[2, 2, 4\] hits then \[2, 2\] tokens row-major\), got 3/,
    );
  });
});

describe('memory', () => {
  it('leaks no tensors', async () => {
    const logits = tf.randomNormal([4, 3]) as tf.Tensor2D;
    await expectNoLeaks(() => {
      routerLse2(logits);
    }, 'routerLse2');
    logits.dispose();
  });
});

describe('specialisation vs imbalance', () => {
  it('mutual information: log G for disjoint experts, 0 for collapse and for uniform routing', () => {
    expect(
      domainExpertMutualInformation(
        [
          [1, 0],
          [0, 1],
        ],
        [5, 5],
      ),
    ).toBeCloseTo(Math.log(2), 12);
    expect(
      domainExpertMutualInformation(
        [
          [1, 0],
          [1, 0],
        ],
        [5, 5],
      ),
    ).toBeCloseTo(0, 12);
    expect(
      domainExpertMutualInformation(
        [
          [0.5, 0.5],
          [0.5, 0.5],
        ],
        [3, 9],
      ),
    ).toBeCloseTo(0, 12);
    // Hand count: selections n = [[3, 1], [1, 3]] (4 tokens each, K = 1): p(g) = p(e) = 1/2.
    const mi = 2 * (3 / 8) * Math.log(3 / 8 / 0.25) + 2 * (1 / 8) * Math.log(1 / 8 / 0.25);
    expect(
      domainExpertMutualInformation(
        [
          [0.75, 0.25],
          [0.25, 0.75],
        ],
        [4, 4],
      ),
    ).toBeCloseTo(mi, 12);
    // Domain weights matter: the joint is tokens x frequency.
    expect(
      domainExpertMutualInformation(
        [
          [1, 0],
          [0, 1],
        ],
        [1, 3],
      ),
    ).toBeCloseTo(-(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75)), 12);
    expect(() => domainExpertMutualInformation([[1, 0]], [1, 2])).toThrow(/frequenciesGE/);
  });

  it('lift: 1 under collapse, G for an expert of one domain', () => {
    expect(
      domainLiftPeak([
        [1, 0],
        [1, 0],
      ]),
    ).toBeCloseTo(1, 12);
    expect(
      domainLiftPeak([
        [1, 0, 0],
        [0, 1, 0],
        [0, 0, 1],
      ]),
    ).toBeCloseTo(3, 12);
    expect(
      domainLiftPeak([
        [0.5, 0.5],
        [1, 0],
      ]),
    ).toBeCloseTo(2, 12);
  });

  it('per-sequence MaxVio averages the MaxVio of each sequence', () => {
    expect(perSequenceMaxVio([0, 0, 1, 1], 2, 2, 1)).toBeCloseTo(1, 12);
    expect(perSequenceMaxVio([0, 1, 0, 1], 2, 2, 1)).toBeCloseTo(0, 12);
    // K = 2, E = 4, S = 2: sequence 0 counts [2, 1, 1, 0] (MaxVio 1), sequence 1 [1, 1, 1, 1] (0).
    expect(perSequenceMaxVio([0, 1, 0, 2, 0, 1, 2, 3], 2, 4, 2)).toBeCloseTo(0.5, 12);
    expect(() => perSequenceMaxVio([0, 1, 2], 2, 4, 1)).toThrow(/expertIdxTK/);
  });
});
