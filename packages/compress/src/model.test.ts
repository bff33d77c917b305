import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BpeTokenizer,
  CHECKPOINT_FILES,
  decodeSafetensors,
  loadCheckpoint,
  type ModelConfig,
  MoETransformerLM,
  presets,
} from '@switchyard/model';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { maxAbs, maxAbsDiff } from '../test/plans';
import { CompressedExperts } from './bank';
import {
  COMPRESSION_FILES,
  compressionTensorNames,
  loadCompressedCheckpoint,
  saveCompressedCheckpoint,
} from './checkpoint';
import { groupingFromAssignment } from './cluster';
import { activationCentroids, compressModel, routeByGroup } from './model';

/** The tiny preset with wider initial weights, so compression errors are far from rounding. */
const CONFIG: ModelConfig = { ...presets.tiny, initStd: 0.2 };
const root = mkdtempSync(join(tmpdir(), 'switchyard-compress-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tokenizer = BpeTokenizer.train(
  { texts: ['the cat sat on the mat and the dog sat on the log'] },
  { vocabSize: 280 },
);

const ids = (seed: number) => {
  const rng = new Rng(seed);
  return tf.tensor2d(
    Int32Array.from({ length: 2 * 12 }, () => rng.int(CONFIG.vocabSize)),
    [2, 12],
    'int32',
  );
};

function logitsOf(model: MoETransformerLM, tokens: tf.Tensor2D): tf.Tensor {
  const { logitsBSV, plans } = model.forward(tokens, { training: false });
  for (const p of plans) disposeRoutingPlan(p);
  return logitsBSV;
}

describe('compressModel', () => {
  it('at full rank keeps the model function; reports errors, parameters and the ratio', () => {
    const model = new MoETransformerLM(CONFIG, new Rng(1));
    const x = ids(2);
    const before = logitsOf(model, x);
    const E = CONFIG.moe.experts.numExperts;
    const r = compressModel(model, { numGroups: 2, rank: 32, equalSize: true, lambda: 1 });
    expect(model.moeLayers()[0]!.experts).toBeInstanceOf(CompressedExperts);
    const after = logitsOf(model, x);
    expect(maxAbsDiff(after, before)).toBeLessThan(1e-3 * Math.max(1, maxAbs(before)));
    expect(r.layers).toHaveLength(1);
    expect(r.layers[0]!.errors).toHaveLength(E);
    expect(Math.max(...r.layers[0]!.errors.map((e) => e.total))).toBeLessThan(1e-5);
    // full rank stores more than the experts: the ratio is below 1, and the formula agrees
    expect(r.measuredRatio).toBeCloseTo(r.formulaRatio!, 12);
    expect(r.paramsBefore - r.expertParamsBefore).toBe(r.paramsAfter - r.expertParamsAfter);
    tf.dispose([x, before, after]);
    model.dispose();
  });

  it('below full rank shrinks the experts by the formula; functional similarity needs centroids', () => {
    const model = new MoETransformerLM(CONFIG, new Rng(3));
    expect(() => compressModel(model, { numGroups: 2, rank: 4, lambda: 0.5 })).toThrow(
      /`options.centroids` passed to compressModel\(\) must be activation centroids for each of the 1 MoE layers/,
    );
    const batches = [ids(4), ids(5)];
    const centroids = activationCentroids(model, batches);
    expect(centroids[0]).toHaveLength(4);
    const r = compressModel(model, { numGroups: 2, rank: 4, lambda: 0.5, centroids, equalSize: true });
    expect(r.layers[0]!.similarity!.functional).toBeDefined();
    expect(r.measuredRatio).toBeCloseTo(2 / (1 + 2 * 4 * (1 / 32 + 1 / 32)), 12);
    expect(r.expertParamsAfter).toBeLessThan(r.expertParamsBefore);
    tf.dispose(batches);
    model.dispose();
  });

  it('rejects bad input, naming the constraint', () => {
    const model = new MoETransformerLM(CONFIG, new Rng(6));
    expect(() => compressModel(model, { numGroups: 2, rank: 33, lambda: 1 })).toThrow(
      /`rank` passed to compressModel\(\) must be <= min\(d_in, d_out\) = min\(32, 32\) = 32/,
    );
    expect(() => compressModel(model, { numGroups: 5, rank: 4, lambda: 1 })).toThrow(
      /`options.numGroups` passed to compressModel\(\) must be an integer in \[1, E\] = \[1, 4\]: G > E leaves a group without experts, got 5/,
    );
    const dense = new MoETransformerLM({ ...CONFIG, moe: { ...CONFIG.moe, firstDense: 2 } }, new Rng(0));
    expect(() => compressModel(dense, { numGroups: 1, rank: 1, lambda: 1 })).toThrow(
      /`model` passed to compressModel\(\) has no MoE layers .*there are no experts to compress/,
    );
    expect(() => compressModel(model, { numGroups: 2, rank: 2 })).toThrow(
      /`options.centroids` passed to compressModel\(\) must be activation centroids/, // lambda defaults to 0.5
    );
    compressModel(model, { numGroups: 2, rank: 2, lambda: 1 });
    expect(() => compressModel(model, { numGroups: 2, rank: 2, lambda: 1 })).toThrow(/not yet compressed/);
    dense.dispose();
    model.dispose();
  });

  it('two-level routing: renumbered experts compute the same with all groups kept, one group per token with groupTopK 1', () => {
    const model = new MoETransformerLM(CONFIG, new Rng(7));
    const grouping = groupingFromAssignment([0, 1, 1, 0]);
    const all = routeByGroup(model, [grouping], 2);
    expect(all.orders).toEqual([[0, 3, 1, 2]]);
    expect(all.groupings[0]!.groups).toEqual([
      [0, 1],
      [2, 3],
    ]);
    const x = ids(8);
    const a = logitsOf(model, x);
    const b = logitsOf(all.model, x);
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-5);
    const one = routeByGroup(model, [grouping], 1);
    const { logitsBSV, plans } = one.model.forward(x, { training: false });
    const idx = plans[0]!.expertIdx;
    for (let t = 0; t < idx.length; t += 2) expect(Math.floor(idx[t]! / 2)).toBe(Math.floor(idx[t + 1]! / 2));
    for (const p of plans) disposeRoutingPlan(p);
    expect(() => routeByGroup(model, [groupingFromAssignment([0, 0, 0, 1])], 1)).toThrow(/equal-size groups/);
    tf.dispose([x, a, b, logitsBSV]);
    for (const m of [model, all.model, one.model]) m.dispose();
  });

  it('saves a compressed checkpoint that loads compressed (also offloaded) and as plain full experts', async () => {
    const model = new MoETransformerLM(CONFIG, new Rng(9));
    compressModel(model, { numGroups: 2, rank: 3, equalSize: true, lambda: 1 });
    const dir = join(root, 'ckpt');
    await saveCompressedCheckpoint(dir, { model, tokenizer, made: { groups: 2 } });
    expect(model.moeLayers()[0]!.experts).toBeInstanceOf(CompressedExperts); // restored after saving
    const file = decodeSafetensors(readFileSync(join(dir, COMPRESSION_FILES.tensors)));
    expect(file.tensors.get(compressionTensorNames.shared(1, 0, 'w1'))!.shape).toEqual([32, 32]);
    expect(file.tensors.get(compressionTensorNames.loraA(1, 3, 'w2'))!.shape).toEqual([3, 32]);
    expect(file.tensors.get(compressionTensorNames.loraB(1, 3, 'w2'))!.shape).toEqual([32, 3]);
    const x = ids(10);
    const ref = logitsOf(model, x);
    const compressed = await loadCompressedCheckpoint(dir);
    expect(compressed.compression.made).toEqual({ groups: 2 });
    expect(compressed.model.moeLayers()[0]!.experts).toBeInstanceOf(CompressedExperts);
    const plain = await loadCheckpoint(dir);
    const offloaded = await loadCompressedCheckpoint(dir, { offload: { residentGroups: 1 } });
    for (const m of [compressed.model, plain.model, offloaded.model]) {
      const y = logitsOf(m, x);
      expect(maxAbsDiff(y, ref)).toBeLessThan(1e-4 * Math.max(1, maxAbs(ref)));
      y.dispose();
    }
    expect((offloaded.model.moeLayers()[0]!.experts as CompressedExperts).stats().loads).toBeGreaterThan(0);
    for (const m of [model, compressed.model, plain.model, offloaded.model]) m.dispose();
    tf.dispose([x, ref]);
  });

  it('refuses a plain checkpoint as compressed, and a model without compressed banks', async () => {
    const model = new MoETransformerLM(CONFIG, new Rng(11));
    await expect(saveCompressedCheckpoint(join(root, 'no'), { model, tokenizer })).rejects.toThrow(
      /CompressedExperts banks in every MoE layer/,
    );
    const { saveCheckpoint } = await import('@switchyard/model');
    await saveCheckpoint(join(root, 'plain'), { model, tokenizer });
    await expect(loadCompressedCheckpoint(join(root, 'plain'))).rejects.toThrow(
      /compression.json is missing: not a compressed checkpoint/,
    );
    expect(readFileSync(join(root, 'plain', CHECKPOINT_FILES.manifest), 'utf8')).not.toContain('compression');
    model.dispose();
  });

  it('releases everything it allocates', async () => {
    await expectNoLeaks(async () => {
      const model = new MoETransformerLM(CONFIG, new Rng(12));
      const x = ids(13);
      const centroids = activationCentroids(model, [x]);
      const routed = routeByGroup(model, [groupingFromAssignment([0, 0, 1, 1])], 1);
      compressModel(routed.model, {
        numGroups: 2,
        rank: 2,
        groupings: routed.groupings,
        lambda: 0.5,
        centroids,
      });
      const { value, grads } = tf.variableGrads(
        () => routed.model.loss(x, x as Tensor2D, { training: true, rng: new Rng(1) }).loss,
        routed.model.trainableVariables(),
      );
      tf.dispose([value, grads, x]);
      routed.model.dispose();
      model.dispose();
    });
  });
});
