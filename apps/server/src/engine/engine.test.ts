import { defineModelConfig, MoETransformerLM, presets } from '@switchyard/model';
import { Rng, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine, type EngineConfig, EngineRefusal, kvBytesPerPosition } from './engine';
import type { FinishReason, SequenceSpec, TokenEvent } from './sequence';

const model = new MoETransformerLM(defineModelConfig({ initStd: 0.2 }, presets.tiny), new Rng(3));
afterAll(() => model.dispose());
const BIG: EngineConfig = { maxBatch: 16, kvBudgetBytes: 64 << 20, maxWaiting: 64, prefillChunk: 64 };

interface Outcome {
  tokens: number[];
  events: TokenEvent[];
  reason: FinishReason;
}

/** A spec whose sink records everything; `done` resolves when the sequence ends. */
function recorded(spec: Omit<SequenceSpec, 'sink'>): { spec: SequenceSpec; done: Promise<Outcome> } {
  const events: TokenEvent[] = [];
  let resolve!: (o: Outcome) => void;
  const done = new Promise<Outcome>((r) => {
    resolve = r;
  });
  return {
    spec: {
      ...spec,
      sink: {
        onToken: (e) => {
          events.push(e);
          return undefined;
        },
        onFinish: (reason) => resolve({ tokens: events.map((e) => e.token), events, reason }),
      },
    },
    done,
  };
}

function prompt(seed: number, length: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length }, () => rng.int(512));
}

const greedy = (promptIds: number[], maxTokens: number) => ({
  promptIds,
  maxTokens,
  sampling: { temperature: 0 },
  stopTokenIds: [],
  logprobs: null,
});

describe('Engine', () => {
  it('gives a greedy sequence the tokens generate() gives, alone and among 12 others joining at different times', async () => {
    const engine = new Engine(model, { ...BIG, maxBatch: 6, prefillChunk: 7 });
    const prompts = Array.from({ length: 13 }, (_, i) => prompt(i, 1 + ((i * 5) % 23)));
    const want = prompts.map((p, i) => model.generate(p, { maxNewTokens: 4 + (i % 9), greedy: true }));
    const solo = recorded(greedy(prompts[0]!, 4));
    engine.submit([solo.spec]);
    expect((await solo.done).tokens).toEqual(want[0]);
    // Under load: staggered submissions, a batch smaller than the crowd, chunked prefill.
    const runs: Promise<Outcome>[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const r = recorded(greedy(prompts[i]!, 4 + (i % 9)));
      engine.submit([r.spec]);
      runs.push(r.done);
      if (i % 3 === 0) await new Promise((res) => setImmediate(res));
    }
    const got = await Promise.all(runs);
    got.forEach((o, i) => {
      expect(o.tokens, `sequence ${i}`).toEqual(want[i]);
      expect(o.reason).toBe('length');
    });
    await engine.close();
  });

  it('samples with a seed: the same tokens alone and under load, logprobs within 1e-4', async () => {
    const engine = new Engine(model, BIG);
    const spec = (seed: number) => ({
      promptIds: prompt(99, 5),
      maxTokens: 10,
      sampling: { temperature: 1.2, topK: 50, topP: 0.9, seed },
      stopTokenIds: [],
      logprobs: 3,
    });
    const alone = recorded(spec(5));
    engine.submit([alone.spec]);
    const a = await alone.done;
    const crowd = Array.from({ length: 8 }, (_, i) => recorded(i === 4 ? spec(5) : spec(100 + i)));
    engine.submit(crowd.map((c) => c.spec));
    const outs = await Promise.all(crowd.map((c) => c.done));
    expect(outs[4]!.tokens).toEqual(a.tokens);
    outs[4]!.events.forEach((e, i) => {
      expect(Math.abs(e.logprob! - a.events[i]!.logprob!)).toBeLessThan(1e-4);
      expect(e.top).toHaveLength(3);
      expect(e.top![0]!.logprob).toBeGreaterThanOrEqual(e.top![1]!.logprob);
    });
    expect(outs.filter((o) => o.tokens.join() === a.tokens.join())).toHaveLength(1); // other seeds differ
    // Greedy logprobs: the picked token is the most likely one.
    const g = recorded({ ...greedy(prompt(1, 4), 3), logprobs: 1 });
    engine.submit([g.spec]);
    for (const e of (await g.done).events) expect(e.top![0]!.token).toBe(e.token);
    await engine.close();
  });

  it('stops at a stop token (not emitted) and when the sink says so', async () => {
    const engine = new Engine(model, BIG);
    const p = prompt(2, 6);
    const free = model.generate(p, { maxNewTokens: 8, greedy: true });
    const stopAt = free[3]!;
    const a = recorded({ ...greedy(p, 8), stopTokenIds: [stopAt] });
    let seen = 0;
    const b: SequenceSpec = {
      ...greedy(p, 8),
      sink: { onToken: () => ++seen < 2, onFinish: () => undefined },
    };
    engine.submit([a.spec, b]);
    const out = await a.done;
    expect(out.tokens).toEqual(free.slice(0, free.indexOf(stopAt)));
    expect(out.reason).toBe('stop');
    await engine.drain(1000);
    expect(seen).toBe(2);
    await engine.close();
  });

  it('admits within the KV budget, queues the rest and refuses what can never fit or overflows the queue', async () => {
    const perSeq = 10 * kvBytesPerPosition(model.config); // 6 prompt + 4 new positions
    const engine = new Engine(model, { ...BIG, kvBudgetBytes: 2 * perSeq, maxWaiting: 5 });
    const runs = Array.from({ length: 5 }, (_, i) => recorded(greedy(prompt(i, 6), 4)));
    engine.submit(runs.slice(0, 2).map((r) => r.spec));
    // Both fit the batch and the budget: they start at once.
    expect(engine.stats()).toMatchObject({ running: 2, waiting: 0, kvReservedBytes: 2 * perSeq });
    engine.submit(runs.slice(2).map((r) => r.spec));
    expect(engine.stats()).toMatchObject({ running: 2, waiting: 3 });
    const refusal = (specs: SequenceSpec[]) => {
      try {
        engine.submit(specs);
      } catch (e) {
        return e instanceof EngineRefusal ? e : undefined;
      }
      return undefined;
    };
    const three = [7, 8, 9].map((i) => recorded(greedy(prompt(i, 6), 4)).spec);
    expect(refusal(three)).toMatchObject({
      reason: 'queue_full',
      message: expect.stringMatching(/the queue is full \(3 of 5 waiting; this request adds 3\)/),
    });
    expect(refusal([recorded(greedy(prompt(9, 6), 30)).spec])).toMatchObject({
      reason: 'too_large',
      message: expect.stringMatching(/more than the whole budget/),
    });
    await new Promise((res) => setImmediate(res));
    expect(engine.stats().kvUsedBytes).toBeGreaterThan(0);
    expect(engine.stats().kvUsedBytes).toBeLessThanOrEqual(2 * perSeq);
    const outs = await Promise.all(runs.map((r) => r.done));
    expect(outs.every((o) => o.tokens.length === 4)).toBe(true);
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0, kvUsedBytes: 0, kvReservedBytes: 0 });
    await engine.close();
  });

  it('cancels running and waiting sequences, freeing their caches; drain refuses new work', async () => {
    const before = tf.memory().numTensors;
    const engine = new Engine(model, { ...BIG, maxBatch: 1 });
    const running = recorded(greedy(prompt(4, 6), 40));
    const waiting = recorded(greedy(prompt(5, 6), 40));
    const [h1, h2] = engine.submit([running.spec, waiting.spec]);
    while (engine.stats().kvUsedBytes === 0) await new Promise((res) => setImmediate(res));
    expect(tf.memory().numTensors).toBeGreaterThan(before);
    h2!.cancel();
    h1!.cancel();
    expect((await running.done).reason).toBe('cancelled');
    expect((await waiting.done).reason).toBe('cancelled');
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0, kvUsedBytes: 0 });
    expect(tf.memory().numTensors).toBe(before);
    const last = recorded(greedy(prompt(6, 6), 40));
    engine.submit([last.spec]);
    const drained = engine.drain(60_000);
    expect(() => engine.submit([recorded(greedy(prompt(7, 3), 2)).spec])).toThrow(/shutting down/);
    await drained;
    expect((await last.done).reason).toBe('length');
    await engine.close();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('cancels what is left when the drain times out', async () => {
    const engine = new Engine(model, BIG);
    const r = recorded(greedy(prompt(8, 4), 50));
    engine.submit([r.spec]);
    await engine.drain(5);
    expect((await r.done).reason).toBe('cancelled');
    await engine.close();
  });
});
