import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { buildEvalSet, evaluateModel } from './evaluate';

const streams = [
  { domain: 'a', tokens: Int32Array.from({ length: 100 }, (_, i) => i) },
  { domain: 'b', tokens: Int32Array.from({ length: 20 }, (_, i) => 200 + i) },
  { domain: 'c', tokens: new Int32Array(0) },
];

describe('buildEvalSet', () => {
  it('takes evenly spaced windows per domain in single-domain batches', () => {
    const set = buildEvalSet(streams, 4, 8, 3);
    // domain a: 24 windows available, 2 wanted (8 tokens / 4), spaced 12 apart; domain b: 2 of 4 windows
    expect(set.batches.map((b) => [b.domain, b.batchSize])).toEqual([
      [0, 2],
      [1, 2],
    ]);
    expect(Array.from(set.batches[0]!.inputsBS)).toEqual([0, 1, 2, 3, 48, 49, 50, 51]);
    expect(Array.from(set.batches[0]!.targetsBS)).toEqual([1, 2, 3, 4, 49, 50, 51, 52]);
    expect(set.tokens).toBe(16);
    expect(set.targets).toHaveLength(16);
    expect(set.domains).toEqual(['a', 'b', 'c']);
  });
});

describe('evaluateModel', () => {
  it('weights batch losses by tokens and accumulates loads per layer and domain', async () => {
    const set = buildEvalSet(streams, 4, 8, 3);
    // A fake model: loss = domain index + 1; one MoE layer of 2 experts, every token to expert 0.
    const model = {
      loss: (x: tf.Tensor2D) => {
        const T = x.shape[0] * x.shape[1];
        const first = x.dataSync()[0]!;
        return {
          loss: tf.scalar(first >= 200 ? 2 : 1),
          plans: [
            {
              logitsTE: tf.zeros([T, 2]),
              countsE: Int32Array.from([T, 0]),
              keptCountsE: Int32Array.from([T, 0]),
              expertIdx: new Int32Array(T),
            },
          ],
        };
      },
    } as never;
    await expectNoLeaks(() => {
      const rec = evaluateModel(model, set, { numMoELayers: 1, numExperts: 2, k: 1 }, 7);
      expect(rec.step).toBe(7);
      expect(rec.perDomainLoss).toEqual({ a: 1, b: 2 });
      expect(rec.valLoss).toBeCloseTo(1.5, 10);
      expect(rec.maxVioGlobal).toBeCloseTo(1, 10); // (max - mean) / mean with loads (16, 0)
      expect(rec.specialization[0]).toEqual([
        [1, 0],
        [1, 0],
        [0, 0],
      ]);
      expect(rec.specializationPeak).toBeCloseTo(2, 10); // F = 1 over uniform K/E = 1/2
      expect(rec.routerLse2).toBeCloseTo(Math.log(2) ** 2, 5); // logits 0: LSE = log E
    });
  });

  it('splits the batches over ranks and combines the sums into the whole-set record', async () => {
    const set = buildEvalSet(streams, 4, 24, 2);
    expect(set.batches.length).toBeGreaterThan(3);
    // Loss and routing depend on the batch's first token, so each batch contributes differently.
    const model = {
      loss: (x: tf.Tensor2D) => {
        const T = x.shape[0] * x.shape[1];
        const first = x.dataSync()[0]!;
        const e = Math.floor(first / 8) % 3;
        const counts = [0, 0, 0];
        counts[e] = T;
        const kept = [...counts];
        kept[e] = T - (first >= 200 ? 1 : 0);
        return {
          loss: tf.scalar(1 + first / 100),
          plans: [
            {
              logitsTE: tf.zeros([T, 3]),
              countsE: Int32Array.from(counts),
              keptCountsE: Int32Array.from(kept),
              expertIdx: new Int32Array(T).fill(e),
            },
          ],
        };
      },
    } as never;
    const info = { numMoELayers: 1, numExperts: 3, k: 1 };
    await expectNoLeaks(() => {
      const whole = evaluateModel(model, set, info, 3);
      // Two ranks in one process: each scores its share in the first pass; the "all-reduce" then
      // returns the sum of both ranks' buffers.
      const bufs: Float32Array[] = [];
      for (const rank of [0, 1]) {
        evaluateModel(model, set, info, 3, {
          rank,
          worldSize: 2,
          sum: (b) => {
            bufs.push(b.slice());
            return b;
          },
        });
      }
      const total = bufs[0]!.map((v, i) => v + bufs[1]![i]!);
      const rec = evaluateModel(model, set, info, 3, { rank: 0, worldSize: 2, sum: () => total });
      expect(rec.tokens).toBe(whole.tokens);
      expect(rec.valLoss).toBeCloseTo(whole.valLoss, 5);
      for (const d of Object.keys(whole.perDomainLoss)) {
        expect(rec.perDomainLoss[d]).toBeCloseTo(whole.perDomainLoss[d]!, 5);
      }
      expect(rec.maxVioGlobal).toBeCloseTo(whole.maxVioGlobal, 10);
      expect(rec.dropRate).toBeCloseTo(whole.dropRate, 10);
      expect(rec.dropRate).toBeGreaterThan(0);
      expect(rec.specialization).toEqual(whole.specialization);
    });
  });
});
