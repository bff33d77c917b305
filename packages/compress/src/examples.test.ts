// Runs the "In code" example of the compression guide (docs/guide/compress.md) on the tiny preset,
// and the reference arithmetic it quotes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpeTokenizer, MoETransformerLM, presets } from '@switchyard/model';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import {
  activationCentroids,
  type CompressedExperts,
  clusterModel,
  compressionRatio,
  compressModel,
  loadCompressedCheckpoint,
  routeByGroup,
  saveCompressedCheckpoint,
} from './index';

const dir = mkdtempSync(join(tmpdir(), 'sy-compress-examples-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the compression guide', () => {
  it('clusters, routes by group, compresses, saves and serves offloaded', async () => {
    await expectNoLeaks(async () => {
      const tokenizer = BpeTokenizer.train({ texts: ['the cat sat on the mat'] }, { vocabSize: 280 });
      const model = new MoETransformerLM(presets.tiny, new Rng(0));
      const calibrationBatches = [tf.tensor2d([[1, 2, 3, 4, 5, 6, 7, 8]], undefined, 'int32')];

      const centroids = activationCentroids(model, calibrationBatches); // per MoE layer, E x E
      const clustered = clusterModel(model, { numGroups: 2, lambda: 0.5, equalSize: true, centroids });
      const routed = routeByGroup(
        model,
        clustered.map((c) => c.grouping),
        1,
      );
      const report = compressModel(routed.model, { numGroups: 2, rank: 16, groupings: routed.groupings });
      expect(report.measuredRatio).toBeCloseTo(2 / (1 + 2 * 16 * (1 / 32 + 1 / 32)), 12);
      expect(report.layers[0]!.errors).toHaveLength(4);
      await saveCompressedCheckpoint(join(dir, 'checkpoint'), {
        model: routed.model,
        tokenizer,
        originalExperts: routed.orders,
      });

      const { model: served } = await loadCompressedCheckpoint(join(dir, 'checkpoint'), {
        offload: { residentGroups: 1 },
      });
      const { logitsBSV, plans } = served.forward(calibrationBatches[0]!, { training: false });
      const bank = served.moeLayers()[0]!.experts as CompressedExperts;
      expect(bank.stats().resident).toHaveLength(1);
      logitsBSV.dispose();
      for (const p of plans) disposeRoutingPlan(p);
      for (const m of [model, routed.model, served]) m.dispose();
      tf.dispose(calibrationBatches);
    });
  });

  it('7.53x at d 4096, K 8, r 16', () => {
    expect(compressionRatio({ groupSize: 8, dIn: 4096, dOut: 4096, rank: 16 }).toFixed(2)).toBe('7.53');
  });
});
