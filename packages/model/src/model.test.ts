import { disposeRoutingPlan, type RoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { defineModelConfig, modelCost } from './config';
import { samplingDistribution } from './internal/sampling';
import { MoETransformerLM } from './model';
import { presets } from './presets';
import { BpeTokenizer } from './tokenizer';

const disposePlans = (plans: RoutingPlan[]) => {
  plans.forEach(disposeRoutingPlan);
};
const ids = (rows: number[][]) => tf.tensor2d(rows, undefined, 'int32') as Tensor2D;
function randomIds(rng: Rng, B: number, S: number, V: number): number[][] {
  return Array.from({ length: B }, () => Array.from({ length: S }, () => rng.int(V)));
}

describe('MoETransformerLM', () => {
  const model = new MoETransformerLM(presets.tiny, new Rng(0));
  afterAll(() => model.dispose());

  it('starts at a loss of about ln(vocab)', () => {
    const rng = new Rng(5);
    const x = ids(randomIds(rng, 4, 32, 512));
    const y = ids(randomIds(rng, 4, 32, 512));
    const { loss, plans } = model.loss(x, y, { training: false });
    expect(Math.abs(loss.dataSync()[0]! - Math.log(512))).toBeLessThan(0.05);
    expect(plans).toHaveLength(1);
    tf.dispose([x, y, loss]);
    disposePlans(plans);
  });

  it('returns logits [B, S, V] and one routing plan per MoE layer', () => {
    expect(model.moeLayerIndices).toEqual([1]);
    const x = ids([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    const { logitsBSV, plans } = model.forward(x, { training: true, rng: new Rng(1) });
    expect(logitsBSV.shape).toEqual([2, 3, 512]);
    expect(plans[0]!.numTokens).toBe(6);
    expect(plans[0]!.k).toBe(2);
    tf.dispose([x, logitsBSV]);
    disposePlans(plans);
  });

  it('reports the same parameter and FLOP counts as the analytic cost', () => {
    const cost = modelCost(presets.tiny);
    expect(model.numParams()).toBe(cost.numParams);
    expect(model.activeParamsPerToken()).toBe(cost.activeParamsPerToken);
    expect(model.flopsPerToken()).toBe(cost.flopsPerToken);
    expect(model.flopsPerToken(16)).toBe(modelCost(presets.tiny, 16).flopsPerToken);
    const names = [...model.namedVariables().keys()];
    expect(names.slice(0, 7)).toEqual([
      'embed_tokens',
      'layers.0.input_norm',
      'layers.0.attn.q',
      'layers.0.attn.k',
      'layers.0.attn.v',
      'layers.0.attn.o',
      'layers.0.post_attention_norm',
    ]);
    expect(names).toContain('layers.0.mlp.w1');
    expect(names).toContain('layers.1.moe.router.weight');
    expect(names).toContain('layers.1.moe.experts.w2');
    expect(names.at(-1)).toBe('norm'); // tied: no lm_head
    expect(model.trainableVariables()).toHaveLength(names.length);
  });

  it('is causal: changing a later token leaves earlier logits unchanged', () => {
    const a = ids([[7, 8, 9, 10, 11]]);
    const b = ids([[7, 8, 9, 10, 99]]);
    const la = model.forward(a, { training: false });
    const lb = model.forward(b, { training: false });
    const diff = tf.tidy(
      () => (tf.abs(tf.sub(la.logitsBSV, lb.logitsBSV)).max(2) as tf.Tensor2D).arraySync()[0]!,
    );
    expect(diff.slice(0, 4).every((d) => d === 0)).toBe(true);
    expect(diff[4]).toBeGreaterThan(0);
    tf.dispose([a, b, la.logitsBSV, lb.logitsBSV]);
    disposePlans([...la.plans, ...lb.plans]);
  });

  it('cached decoding equals full recomputation', () => {
    const rows = randomIds(new Rng(9), 2, 12, 512);
    const full = model.forward(ids(rows), { training: false });
    const want = full.logitsBSV.arraySync();
    tf.dispose(full.logitsBSV);
    disposePlans(full.plans);
    const cache = model.createCache();
    const got: number[][][] = [[], []];
    const chunks = [
      [0, 5],
      [5, 6],
      [6, 7],
      [7, 10],
      [10, 11],
      [11, 12],
    ];
    for (const [from, to] of chunks) {
      const x = ids(rows.map((r) => r.slice(from, to)));
      const logits = model.forwardCached(x, cache);
      logits.arraySync().forEach((seq, b) => {
        got[b]!.push(...seq);
      });
      tf.dispose([x, logits]);
    }
    expect(cache.length).toBe(12);
    let maxDiff = 0;
    for (let b = 0; b < 2; b++)
      for (let s = 0; s < 12; s++)
        for (let v = 0; v < 512; v++)
          maxDiff = Math.max(maxDiff, Math.abs(got[b]![s]![v]! - want[b]![s]![v]!));
    expect(maxDiff).toBeLessThan(1e-4);
    cache.dispose();
  });

  it('generates greedily the tokens a full recomputation picks', () => {
    const prompt = [3, 1, 4, 1, 5];
    const out = model.generate(prompt, { maxNewTokens: 6, greedy: true });
    expect(out).toHaveLength(6);
    const seq = [...prompt];
    for (let i = 0; i < 6; i++) {
      const x = ids([seq]);
      const { logitsBSV, plans } = model.forward(x, { training: false });
      const next = tf.tidy(
        () =>
          logitsBSV
            .slice([0, seq.length - 1, 0], [1, 1, 512])
            .reshape([512])
            .argMax()
            .dataSync()[0]!,
      );
      seq.push(next);
      tf.dispose([x, logitsBSV]);
      disposePlans(plans);
    }
    expect(out).toEqual(seq.slice(prompt.length));
    expect(model.generate(prompt, { maxNewTokens: 6, temperature: 0 })).toEqual(out);
  });

  it('samples reproducibly from a seed, stops at stop tokens and at maxSeqLen', () => {
    const opts = { maxNewTokens: 8, temperature: 1.5, topK: 50, topP: 0.95 };
    const a = model.generate([1, 2], { ...opts, seed: 1 });
    expect(model.generate([1, 2], { ...opts, seed: 1 })).toEqual(a);
    expect(model.generate([1, 2], { ...opts, seed: 2 })).not.toEqual(a);
    const stopAt = a[3]!;
    const stopped = model.generate([1, 2], { ...opts, seed: 1, stopTokens: [stopAt] });
    expect(stopped).toEqual(a.slice(0, a.indexOf(stopAt)));
    const long = model.generate(
      Array.from({ length: 60 }, (_, i) => i),
      { maxNewTokens: 10, greedy: true },
    );
    expect(long).toHaveLength(4); // maxSeqLen 64
  });

  it('uses a stored or per-call selection bias for routing only', () => {
    const m = new MoETransformerLM(presets.tiny, new Rng(0));
    const x = ids([[1, 2, 3, 4, 5, 6]]);
    const pick = (plans: RoutingPlan[]) => Array.from(plans[0]!.expertIdx);
    const bias = new Float32Array([0, 0, 100, 100]);
    m.setSelectionBias(0, bias);
    const stored = m.forward(x, { training: false });
    expect(new Set(pick(stored.plans))).toEqual(new Set([2, 3]));
    const override = m.forward(x, {
      training: false,
      selectionBias: () => new Float32Array([100, 100, 0, 0]),
    });
    expect(new Set(pick(override.plans))).toEqual(new Set([0, 1]));
    expect(m.getSelectionBias(0)).toEqual(bias);
    expect(() => m.setSelectionBias(0, new Float32Array(3))).toThrow(
      /`biasE` passed to MoETransformerLM.setSelectionBias\(\) must be a Float32Array of 4 values/,
    );
    tf.dispose([x, stored.logitsBSV, override.logitsBSV]);
    disposePlans([...stored.plans, ...override.plans]);
    m.dispose();
  });

  it('gives every variable a gradient', () => {
    const m = new MoETransformerLM(defineModelConfig({ tieEmbeddings: false }, presets.tiny), new Rng(3));
    const rng = new Rng(4);
    const x = ids(randomIds(rng, 2, 16, 512));
    const y = ids(randomIds(rng, 2, 16, 512));
    const { value, grads } = tf.variableGrads(() => {
      const { loss, plans } = m.loss(x, y, { training: true, rng: new Rng(1) });
      disposePlans(plans);
      return loss;
    }, m.trainableVariables());
    for (const [name, v] of m.namedVariables()) {
      const g = grads[v.name];
      expect(g, name).toBeDefined();
      expect(
        tf.tidy(() => tf.abs(g!).max().dataSync()[0]!),
        name,
      ).toBeGreaterThan(0);
    }
    tf.dispose([x, y, value, grads as never]);
    tf.dispose(Object.values(grads));
    m.dispose();
  });

  it('rejects bad inputs with messages naming the argument', () => {
    const f = ids([[1, 2]]);
    const float = tf.tensor2d([[1, 2]]) as Tensor2D;
    expect(() => model.forward(float, { training: false })).toThrow(
      /`tokensBS` passed to MoETransformerLM.forward\(\) must have dtype int32/,
    );
    const tooLong = ids([Array.from({ length: 65 }, () => 1)]);
    expect(() => model.forward(tooLong, { training: false })).toThrow(
      /must be at most maxSeqLen \(64\) positions, got 65/,
    );
    expect(() => model.loss(f, ids([[1, 2, 3]]), { training: false })).toThrow(
      /`targetsBS` passed to MoETransformerLM.loss\(\) must have shape \[1, 2\]/,
    );
    expect(() => model.generate([1, 600], { maxNewTokens: 1 })).toThrow(
      /`promptIds\[1\]` .* must be an integer in \[0, 511\], got 600/,
    );
    expect(() => model.generate([1], { maxNewTokens: 1, topP: 0 })).toThrow(
      /`topP` .* must be a finite number > 0 and <= 1/,
    );
    const m = new MoETransformerLM(presets.tiny, new Rng(0));
    m.dispose();
    expect(() => m.forward(f, { training: false })).toThrow(/forward\(\) was called after dispose\(\)/);
    tf.dispose([f, float, tooLong]);
  });

  it('leaks no tensors in forward, loss, cached decoding and generation', async () => {
    const x = ids([[1, 2, 3, 4]]);
    const warm = model.forward(x, { training: false }); // caches the RoPE tables and mask for S = 4
    tf.dispose(warm.logitsBSV);
    disposePlans(warm.plans);
    await expectNoLeaks(() => {
      const r = model.forward(x, { training: true, rng: new Rng(1) });
      disposePlans(r.plans);
      return r.logitsBSV;
    }, 'forward');
    await expectNoLeaks(() => {
      const r = model.loss(x, x, { training: false });
      disposePlans(r.plans);
      return r.loss;
    }, 'loss');
    await expectNoLeaks(() => {
      const cache = model.createCache();
      tf.dispose(model.forwardCached(x, cache));
      const next = ids([[5]]);
      tf.dispose([next, model.forwardCached(next, cache)]);
      cache.dispose();
    }, 'forwardCached');
    await expectNoLeaks(
      () => model.generate([1, 2, 3], { maxNewTokens: 4, temperature: 0.7, seed: 3 }),
      'generate',
    );
    x.dispose();
  });
});

describe('sampling', () => {
  const base = { maxNewTokens: 1, temperature: 1, topK: 0, topP: 1, stopTokens: [], greedy: false };
  const logits = new Float32Array([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);

  it('applies temperature, then top-k, then top-p (renormalised)', () => {
    const p = (o: Partial<typeof base>) => Array.from(samplingDistribution(logits, { ...base, ...o }));
    expect(p({}).map((v) => +v.toFixed(6))).toEqual([0.5, 0.3, 0.15, 0.05]);
    expect(p({ topK: 2 }).map((v) => +v.toFixed(6))).toEqual([0.625, 0.375, 0, 0]);
    expect(p({ topP: 0.7 }).map((v) => +v.toFixed(6))).toEqual([0.625, 0.375, 0, 0]);
    expect(p({ topP: 0.5 })).toEqual([1, 0, 0, 0]);
    expect(p({ topK: 3, topP: 0.9 }).map((v) => +v.toFixed(4))).toEqual([0.5263, 0.3158, 0.1579, 0]);
    const hot = p({ temperature: 2 });
    expect(hot[3]! / hot[0]!).toBeCloseTo(Math.sqrt(0.05 / 0.5), 5);
    expect(p({ greedy: true })).toEqual([1, 0, 0, 0]);
  });
});

describe.skipIf(process.env.SWITCHYARD_BACKEND === 'cpu')('training (wasm)', () => {
  it('overfits two sentences to near-zero loss in a few hundred steps', () => {
    const sentences = ['The cat sat on the mat by the door.', 'A dog ran fast in the green park today.'];
    const tok = BpeTokenizer.train({ texts: sentences }, { vocabSize: 300 });
    const encoded = sentences.map((s) => tok.encode(s));
    const S = Math.max(...encoded.map((e) => e.length)) - 1;
    const eos = tok.specialTokens['<|endoftext|>']!;
    const padded = encoded.map((e) => [...e, ...Array.from({ length: S + 1 - e.length }, () => eos)]);
    const x = ids(padded.map((e) => e.slice(0, S)));
    const y = ids(padded.map((e) => e.slice(1, S + 1)));
    const model = new MoETransformerLM(
      defineModelConfig({ vocabSize: tok.vocabSize }, presets.tiny),
      new Rng(0),
    );
    const opt = tf.train.adam(1e-2);
    const rng = new Rng(1);
    let last = Number.POSITIVE_INFINITY;
    let steps = 0;
    for (; steps < 400 && last > 0.02; steps++) {
      const l = opt.minimize(
        () => {
          const { loss, plans } = model.loss(x, y, { training: true, rng });
          disposePlans(plans);
          return loss;
        },
        true,
        model.trainableVariables(),
      )!;
      last = l.dataSync()[0]!;
      l.dispose();
    }
    expect(last).toBeLessThan(0.02);
    const prompt = encoded[1]!.slice(0, 3);
    const continuation = model.generate(prompt, {
      maxNewTokens: encoded[1]!.length - 3,
      greedy: true,
      stopTokens: [eos],
    });
    expect(tok.decode([...prompt, ...continuation])).toBe(sentences[1]);
    tf.dispose([x, y]);
    opt.dispose();
    model.dispose();
  });
});
