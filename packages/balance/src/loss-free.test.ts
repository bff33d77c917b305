import { expectNoLeaks, Rng } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { LossFreeBalancer, piecewiseConstant } from './loss-free';
import { maxVio } from './metrics';
import { maxVioNoiseFloor } from './noise-floor';

const f32 = (xs: number[]) => Array.from(Float32Array.from(xs));

describe('LossFreeBalancer', () => {
  it('pools counts over the whole optimizer step and updates once, with b_i += u * sign(mean(c) - c_i)', () => {
    const lf = new LossFreeBalancer({ numLayers: 2, numExperts: 4, updateRate: 0.01 });
    // each micro-batch alone is imbalanced; the step as a whole is balanced on layer 0
    lf.observe(0, [4, 0, 2, 2]);
    lf.observe(0, [0, 4, 2, 2]);
    lf.observe(1, [5, 1, 3, 3]);
    expect(Array.from(lf.bias(0))).toEqual([0, 0, 0, 0]); // nothing moves before step()
    const r = lf.step();
    expect(r).toEqual({ step: 0, rate: 0.01, maxVioByLayer: [0, (5 - 3) / 3] });
    expect(Array.from(lf.bias(0))).toEqual([0, 0, 0, 0]);
    expect(Array.from(lf.bias(1))).toEqual(f32([-0.01, 0.01, 0, 0]));
    expect(Array.from(lf.pendingCountsE(1))).toEqual([0, 0, 0, 0]);
    expect(lf.stepCount).toBe(1);
    // a layer that saw nothing this step does not move
    lf.observe(0, [1, 2, 3, 6]);
    const r2 = lf.step() as { maxVioByLayer: readonly number[] };
    expect(r2.maxVioByLayer[0]).toBeCloseTo(1.0, 12);
    expect(r2.maxVioByLayer[1]).toBeNaN();
    expect(Array.from(lf.bias(0))).toEqual(f32([0.01, 0.01, 0, -0.01]));
    expect(Array.from(lf.bias(1))).toEqual(f32([-0.01, 0.01, 0, 0]));
  });

  it('never double-counts a micro-batch observed again under recomputation', () => {
    const lf = new LossFreeBalancer({ numLayers: 2, numExperts: 3 });
    lf.observe(0, [3, 0, 0], 'mb0');
    lf.observe(1, [0, 3, 0], 'mb0'); // same key, other layer: counted
    lf.observe(0, [0, 3, 0], 'mb1');
    lf.observe(0, [3, 0, 0], 'mb0'); // recomputed forward of mb0: ignored
    lf.observe(0, [3, 0, 0], 0); // numeric key 0 is a different micro-batch from 'mb0'
    expect(Array.from(lf.pendingCountsE(0))).toEqual([6, 3, 0]);
    expect(Array.from(lf.pendingCountsE(1))).toEqual([0, 3, 0]);
    lf.step();
    lf.observe(0, [1, 1, 1], 'mb0'); // keys are per step
    expect(Array.from(lf.pendingCountsE(0))).toEqual([1, 1, 1]);
  });

  it('follows an update-rate schedule (0 late in training)', () => {
    const lf = new LossFreeBalancer({
      numLayers: 1,
      numExperts: 2,
      updateRate: piecewiseConstant([2], [0.5, 0]),
    });
    expect([lf.rate(0), lf.rate(1), lf.rate(2), lf.rate(100)]).toEqual([0.5, 0.5, 0, 0]);
    for (let s = 0; s < 4; s++) {
      lf.observe(0, [2, 0]);
      expect(lf.step()).toMatchObject({ step: s, rate: s < 2 ? 0.5 : 0 });
    }
    expect(Array.from(lf.bias(0))).toEqual([-1, 1]);
  });

  it('serialises its state to JSON and resumes the same trajectory', () => {
    const make = () => new LossFreeBalancer({ numLayers: 2, numExperts: 3, updateRate: 1e-3 });
    const a = make();
    const rng = new Rng(3);
    const counts = () => [rng.int(10), rng.int(10), rng.int(10)];
    for (let s = 0; s < 5; s++) {
      a.observe(0, counts());
      a.observe(1, counts());
      a.step();
    }
    a.observe(0, [1, 2, 3]); // a pending micro-batch travels with the state too
    const b = make();
    b.loadState(JSON.parse(JSON.stringify(a.state())));
    expect(b.stepCount).toBe(5);
    for (let s = 0; s < 3; s++) {
      const c0 = counts();
      const c1 = counts();
      for (const lf of [a, b]) {
        lf.observe(0, c0);
        lf.observe(1, c1);
        lf.step();
      }
    }
    expect(b.state()).toEqual(a.state());
    expect(() => make().loadState({ ...a.state(), numExperts: 4 })).toThrow(
      /`state` passed to LossFreeBalancer\.loadState\(\) must be a state of 2 layers x 3 experts, got "2 layers x 4 experts"/,
    );
  });

  it('all-reduces the pooled counts over ranks, synchronously or not', async () => {
    // the other rank saw the mirror image: together the step is balanced
    const mirror = new LossFreeBalancer({
      numLayers: 1,
      numExperts: 2,
      updateRate: 0.1,
      allReduce: (c) => Float32Array.from([c[0]! + c[1]!, c[1]! + c[0]!]),
    });
    mirror.observe(0, [5, 1]);
    mirror.step();
    expect(Array.from(mirror.bias(0))).toEqual([0, 0]);

    const asyncLf = new LossFreeBalancer({
      numLayers: 1,
      numExperts: 2,
      updateRate: 0.1,
      allReduce: async (c) => c,
    });
    asyncLf.observe(0, [5, 1]);
    const pending = asyncLf.step();
    expect(pending).toBeInstanceOf(Promise);
    expect(() => asyncLf.observe(0, [1, 1])).toThrow(
      /LossFreeBalancer\.observe\(\) was called while step\(\) is pending/,
    );
    await pending;
    expect(Array.from(asyncLf.bias(0))).toEqual(f32([-0.1, 0.1]));
  });

  it('returns bias copies and rejects bad arguments with named errors', () => {
    const lf = new LossFreeBalancer({ numLayers: 1, numExperts: 2 });
    lf.bias(0)[0] = 5;
    expect(lf.bias(0)[0]).toBe(0);
    expect(() => lf.observe(1, [1, 1])).toThrow(
      /`layer` passed to LossFreeBalancer\.observe\(\) must be an integer in \[0, 0\], got 1/,
    );
    expect(() => lf.observe(0, [1, -1])).toThrow(
      /`countsE\[1\]` passed to LossFreeBalancer\.observe\(\) must be a finite count >= 0, got -1/,
    );
    expect(() => new LossFreeBalancer({ numLayers: 1, numExperts: 2, updateRate: -1 })).toThrow(
      /`config\.updateRate`/,
    );
    expect(() => piecewiseConstant([5, 3], [1, 2, 3])).toThrow(
      /`boundaries\[1\]` passed to piecewiseConstant\(\) must be an integer >= 6, got 3/,
    );
  });

  /**
   * A synthetic sigmoid router with fixed scores and a strong per-expert skew: a pool of 8192 tokens
   * with logits skew_i + N(0, 0.2^2), skew from -0.4 to 0.4 over the experts; each step samples 1024
   * tokens and selects the top-2 of (score + bias) among 16 experts. Only the bias controller balances.
   */
  function simulate(u: number, seed: number, steps = 400): number[] {
    const [T, E, pool] = [1024, 16, 8192];
    const rng = new Rng(seed);
    const scoresNE = new Float64Array(pool * E);
    for (let n = 0; n < pool; n++) {
      for (let i = 0; i < E; i++) {
        const z = 0.4 * ((2 * i) / (E - 1) - 1) + 0.2 * rng.normal();
        scoresNE[n * E + i] = 1 / (1 + Math.exp(-z));
      }
    }
    const lf = new LossFreeBalancer({ numLayers: 1, numExperts: E, updateRate: u });
    const history: number[] = [];
    for (let s = 0; s < steps; s++) {
      const biasE = lf.bias(0);
      const countsE = new Int32Array(E);
      for (let t = 0; t < T; t++) {
        const n = rng.int(pool);
        let [first, firstV, second, secondV] = [-1, -Infinity, -1, -Infinity];
        for (let i = 0; i < E; i++) {
          const v = scoresNE[n * E + i]! + biasE[i]!;
          if (v > firstV) [second, secondV, first, firstV] = [first, firstV, i, v];
          else if (v > secondV) [second, secondV] = [i, v];
        }
        countsE[first]! += 1;
        countsE[second]! += 1;
      }
      history.push(maxVio(countsE));
      lf.observe(0, countsE, s);
      lf.step();
    }
    return history;
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

  it('drives a skewed sigmoid router to the MaxVio_batch noise floor at u = 1e-3; u = 1e-2 stalls well above', () => {
    const floor = maxVioNoiseFloor({ numTokens: 1024, numExperts: 16, k: 2 });
    expect(floor).toBeGreaterThan(0.1);
    for (const seed of [1, 2]) {
      const slow = simulate(1e-3, seed);
      expect(slow[0]!).toBeGreaterThan(10 * floor); // the skew really is strong
      expect(mean(slow.slice(300))).toBeLessThanOrEqual(1.5 * floor);
      const fast = simulate(1e-2, seed);
      expect(mean(fast.slice(300))).toBeGreaterThanOrEqual(2 * floor);
    }
  });

  it('allocates no tensors', async () => {
    await expectNoLeaks(() => {
      const lf = new LossFreeBalancer({ numLayers: 1, numExperts: 4 });
      lf.observe(0, [1, 2, 3, 4]);
      lf.step();
    }, 'LossFreeBalancer');
  });
});
