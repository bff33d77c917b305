// Runs the examples of the TSDoc comments and the guide (docs/guide/model-configuration.md), on the
// tiny preset so they stay fast.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import {
  BpeTokenizer,
  decodeSafetensors,
  defineModelConfig,
  encodeSafetensors,
  loadCheckpoint,
  MoETransformerLM,
  mixtralIncompatibilities,
  modelCost,
  presetInfo,
  presets,
  saveCheckpoint,
} from './index';

const dir = mkdtempSync(join(tmpdir(), 'sy-examples-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('documented examples', () => {
  it('guide quick start: train a tokenizer, take a training step, generate, save and load', async () => {
    const tokenizer = BpeTokenizer.train(
      { texts: ['the cat sat on the mat', 'the dog sat on the log'] },
      { vocabSize: 300 },
    );
    const config = defineModelConfig({ vocabSize: tokenizer.vocabSize }, presets.tiny);
    const model = new MoETransformerLM(config, new Rng(0));
    const ids = tokenizer.encode('the cat sat on the mat');
    const x = tf.tensor2d([ids.slice(0, -1)], undefined, 'int32');
    const y = tf.tensor2d([ids.slice(1)], undefined, 'int32');
    const optimizer = tf.train.adam(3e-3);
    const rng = new Rng(1);
    const before = tf.tidy(() => model.loss(x, y, { training: false }).loss.dataSync()[0]!);
    const step = () => {
      optimizer.minimize(
        () => {
          const { loss, plans } = model.loss(x, y, { training: true, rng });
          plans.forEach(disposeRoutingPlan);
          return loss;
        },
        false,
        model.trainableVariables(),
      );
    };
    step(); // creates the optimizer's moment variables
    await expectNoLeaks(step);
    const after = tf.tidy(() => model.loss(x, y, { training: false }).loss.dataSync()[0]!);
    expect(after).toBeLessThan(before);
    const out = model.generate(tokenizer.encode('The'), {
      maxNewTokens: 20,
      temperature: 0.8,
      topP: 0.9,
      seed: 1,
    });
    expect(out.length).toBeLessThanOrEqual(20);
    expect(typeof tokenizer.decode(out)).toBe('string');

    await saveCheckpoint(join(dir, 'ckpt-1'), { model, tokenizer, trainerState: { step: 1 } });
    const loaded = await loadCheckpoint(join(dir, 'ckpt-1'));
    expect(loaded.trainerState).toEqual({ step: 1 });
    expect(loaded.config).toEqual(config);
    loaded.model.dispose();
    model.dispose();
    optimizer.dispose();
    tf.dispose([x, y]);
  });

  it('TSDoc examples', () => {
    const tok = BpeTokenizer.train({ texts: ['the cat sat on the mat'] }, { vocabSize: 300 });
    expect(tok.decode(tok.encode('the cat'))).toBe('the cat');
    expect(tok.decode(tok.encode('naïve café'))).toBe('naïve café');
    expect(tok.encode('hello<|endoftext|>').at(-1)).toBe(tok.specialTokens['<|endoftext|>']);

    const cfg = defineModelConfig({ numLayers: 2, moe: { experts: { numExperts: 4 } } });
    expect(cfg.moe.experts.numExperts).toBe(4);
    expect(mixtralIncompatibilities(presets.small)).toEqual([]);
    expect(modelCost(presets.small).trainFlopsPerToken).toBe(presetInfo.small.trainFlopsPerToken);

    const bytes = encodeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
    expect(decodeSafetensors(bytes).tensors.get('w')!.data).toEqual(new Float32Array([1, 2]));

    const model = new MoETransformerLM(presets.tiny, new Rng(0));
    const inputs = tf.tensor2d([[1, 2, 3, 4]], undefined, 'int32');
    const targets = tf.tensor2d([[2, 3, 4, 5]], undefined, 'int32');
    const { loss, plans } = model.loss(inputs, targets, { training: false });
    expect(loss.shape).toEqual([]);
    plans.forEach(disposeRoutingPlan);
    const cache = model.createCache();
    model.forwardCached(tf.tensor2d([[1, 2, 3]], undefined, 'int32'), cache).dispose();
    expect(cache.length).toBe(3);
    cache.dispose();
    expect(model.namedVariables().get('layers.0.attn.q')!.shape).toEqual([32, 32]);
    tf.dispose([inputs, targets, loss]);
    model.dispose();
  });
});
