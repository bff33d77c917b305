import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { defineModelConfig } from './config';
import { TokenSampler } from './internal/sampling';
import { KVCache, MoETransformerLM, type StepProfile } from './model';
import { presets } from './presets';

const model = new MoETransformerLM(defineModelConfig({ initStd: 0.2 }, presets.tiny), new Rng(11));
afterAll(() => model.dispose());

/** Logits [V] after each of `tokens`, decoded one call per chunk with forwardCached, alone. */
function aloneLogits(chunks: number[][]): Float32Array[] {
  const cache = model.createCache();
  const out: Float32Array[] = [];
  for (const chunk of chunks) {
    const x = tf.tensor2d([chunk], undefined, 'int32') as Tensor2D;
    const logits = model.forwardCached(x, cache);
    const last = tf.tidy(() => logits.slice([0, chunk.length - 1, 0], [1, 1, 512]).reshape([512]));
    out.push(last.dataSync() as Float32Array);
    tf.dispose([x, logits, last]);
  }
  cache.dispose();
  return out;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('MoETransformerLM.forwardRagged', () => {
  it('gives each sequence the logits it gets alone, whatever shares the batch', () => {
    const rng = new Rng(5);
    const seq = (n: number) => Array.from({ length: n }, () => rng.int(512));
    // Three sequences: A decodes from a 3-token prompt, B prefills 9 tokens in chunks of 4, 4, 1,
    // C joins later with a 2-token prompt. Steps mix decoding and prefill rows.
    const a = [seq(3), seq(1), seq(1), seq(1), seq(1)];
    const b = [seq(4), seq(4), seq(1), seq(1)];
    const c = [seq(2), seq(1)];
    const want = { a: aloneLogits(a), b: aloneLogits(b), c: aloneLogits(c) };
    const caches = { a: new KVCache(), b: new KVCache(), c: new KVCache() };
    const got = { a: [] as Float32Array[], b: [] as Float32Array[], c: [] as Float32Array[] };
    const schedule: ('a' | 'b' | 'c')[][] = [['a'], ['b', 'a'], ['a', 'b', 'c'], ['c', 'b', 'a'], ['a', 'b']];
    const at = { a: 0, b: 0, c: 0 };
    for (const names of schedule) {
      const seqs = names.map((n) => ({ tokens: { a, b, c }[n][at[n]]!, cache: caches[n] }));
      const { logitsBV, expertCounts } = model.forwardRagged(seqs);
      const rows = logitsBV.arraySync();
      names.forEach((n, i) => {
        got[n].push(Float32Array.from(rows[i]!));
        at[n]++;
      });
      const T = seqs.reduce((s, q) => s + q.tokens.length, 0);
      expect(expertCounts).toHaveLength(1);
      expect(expertCounts[0]!.reduce((s, v) => s + v, 0)).toBe(T * 2);
      logitsBV.dispose();
    }
    for (const n of ['a', 'b', 'c'] as const) {
      expect(got[n]).toHaveLength(want[n].length);
      got[n].forEach((g, i) => {
        expect(maxDiff(g, want[n][i]!), `${n}[${i}]`).toBeLessThan(1e-5);
      });
      expect(caches[n].length).toBe({ a, b, c }[n].flat().length);
    }
    for (const cache of Object.values(caches)) cache.dispose();
  });

  it('fills a step profile', () => {
    const profile: StepProfile = { steps: 0, totalMs: 0, attentionMs: 0, routingMs: 0, expertsMs: 0 };
    const cache = new KVCache();
    model.forwardRagged([{ tokens: [1, 2, 3], cache }], { profile }).logitsBV.dispose();
    expect(profile.steps).toBe(1);
    expect(profile.attentionMs).toBeGreaterThan(0);
    expect(profile.routingMs).toBeGreaterThan(0);
    expect(profile.totalMs).toBeGreaterThanOrEqual(profile.attentionMs);
    cache.dispose();
  });

  it('rejects bad sequences with messages naming them', () => {
    const cache = new KVCache();
    expect(() => model.forwardRagged([])).toThrow(/`seqs` passed to MoETransformerLM.forwardRagged\(\)/);
    expect(() => model.forwardRagged([{ tokens: [], cache }])).toThrow(/`seqs\[0\].tokens`/);
    expect(() => model.forwardRagged([{ tokens: [600], cache }])).toThrow(
      /`seqs\[0\].tokens\[0\]` .* must be an integer in \[0, 511\], got 600/,
    );
    expect(() =>
      model.forwardRagged([
        { tokens: [1], cache },
        { tokens: [2], cache },
      ]),
    ).toThrow(/`seqs\[1\].cache` .* must be a KVCache of its own/);
    expect(() => model.forwardRagged([{ tokens: Array.from({ length: 65 }, () => 1), cache }])).toThrow(
      /at most maxSeqLen \(64\) positions including 0 cached/,
    );
    expect(cache.length).toBe(0);
  });

  it('leaks no tensors', async () => {
    await expectNoLeaks(() => {
      const x = new KVCache();
      const y = new KVCache();
      model.forwardRagged([{ tokens: [1, 2, 3], cache: x }]).logitsBV.dispose();
      model
        .forwardRagged([
          { tokens: [4], cache: x },
          { tokens: [5, 6], cache: y },
        ])
        .logitsBV.dispose();
      model
        .forwardRagged([
          { tokens: [7], cache: y },
          { tokens: [8], cache: x },
        ])
        .logitsBV.dispose();
      x.dispose();
      y.dispose();
    }, 'forwardRagged');
  });
});

describe('TokenSampler', () => {
  it('picks what generate() picks for the same options and seed', () => {
    const prompt = [3, 1, 4];
    const opts = { temperature: 0.9, topK: 40, topP: 0.95, seed: 7 };
    const want = model.generate(prompt, { ...opts, maxNewTokens: 6 });
    const sampler = new TokenSampler(opts);
    const cache = new KVCache();
    const got: number[] = [];
    let tokens = prompt;
    for (let i = 0; i < 6; i++) {
      const { logitsBV } = model.forwardRagged([{ tokens, cache }]);
      const next = sampler.next(logitsBV.dataSync() as Float32Array);
      logitsBV.dispose();
      got.push(next);
      tokens = [next];
    }
    cache.dispose();
    expect(got).toEqual(want);
    expect(new TokenSampler({ temperature: 0 }).greedy).toBe(true);
    expect(() => new TokenSampler({ topP: 0 })).toThrow(/`topP` passed to TokenSampler\(\) must be/);
  });
});
