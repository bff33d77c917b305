import { checkGradients, expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterEach, describe, expect, it } from 'vitest';
import { identityRouter, logRows, readPlan, round } from '../../test/helpers';
import {
  createRouter,
  disposeRoutingPlan,
  type RouterConfig,
  type RoutingPlan,
  resolveRouterConfig,
} from '../index';
import { routeScored } from './scored';

const live: { dispose(): void }[] = [];
const track = <T extends { dispose(): void }>(x: T): T => {
  live.push(x);
  return x;
};
const plans: RoutingPlan[] = [];
const keep = (p: RoutingPlan): RoutingPlan => {
  plans.push(p);
  return p;
};
afterEach(() => {
  for (const p of plans.splice(0)) disposeRoutingPlan(p);
  for (const x of live.splice(0)) x.dispose();
});

// Probabilities for 4 tokens over 4 experts: tokens 0, 1 pick expert 0; tokens 2, 3 pick expert 1.
const FOUR = [
  [0.4, 0.2, 0.2, 0.2],
  [0.9, 0.05, 0.03, 0.02],
  [0.1, 0.5, 0.2, 0.2],
  [0.25, 0.3, 0.25, 0.2],
];

describe('capacity and drop policies, hand-worked', () => {
  it('4 tokens, 4 experts, capacity 1: position keeps tokens 0 and 2, probs keeps 1 and 2', () => {
    const x = track(logRows(FOUR));
    const base = { type: 'topk', numExperts: 4, dModel: 4, k: 1, capacityFactor: 1 } as const;
    const pos = keep(track(identityRouter({ ...base, dropPolicy: 'position' })).route(x, { training: true }));
    const prb = keep(track(identityRouter({ ...base, dropPolicy: 'probs' })).route(x, { training: true }));
    expect(pos.capacity).toBe(1);
    expect(Array.from(pos.expertIdx)).toEqual([0, 0, 1, 1]);
    expect(Array.from(pos.kept)).toEqual([1, 0, 1, 0]);
    expect(Array.from(prb.kept)).toEqual([0, 1, 1, 0]);
    expect(round(readPlan(pos).w)).toEqual([[0.4], [0], [0.5], [0]]);
    expect(round(readPlan(prb).w)).toEqual([[0], [0.9], [0.5], [0]]);
    expect(Array.from(pos.countsE)).toEqual([2, 2, 0, 0]);
    expect(Array.from(pos.keptCountsE)).toEqual([1, 1, 0, 0]);
    expect(pos.dropRate).toBe(0.5);
    expect(prb.dropRate).toBe(0.5);
  });

  it('top-2 with capacity 2: renormalised weights, the dropped slot is zero and the other keeps its share', () => {
    const x = track(logRows(FOUR));
    const r = track(identityRouter({ type: 'topk', numExperts: 4, dModel: 4, k: 2, capacityFactor: 1 }));
    const plan = keep(r.route(x, { training: true }));
    // C = ceil(4 * 2 / 4 * 1) = 2. Choices: t0 (0, 1|2|3 tie -> 1), t1 (0, 1), t2 (1, 2|3 -> 2), t3 (1, 0).
    expect(plan.capacity).toBe(2);
    expect(readPlan(plan).idx).toEqual([
      [0, 1],
      [0, 1],
      [1, 2],
      [1, 0],
    ]);
    // Expert 0 holds t0, t1 -> t3's second slot is dropped; expert 1 holds t0, t1 -> t2 and t3 dropped.
    expect(Array.from(plan.kept)).toEqual([1, 1, 1, 1, 0, 1, 0, 0]);
    expect(round(readPlan(plan).w, 4)).toEqual([
      [0.6667, 0.3333],
      [0.9474, 0.0526],
      [0, 0.2857],
      [0, 0],
    ]);
    expect(plan.dropRate).toBe(3 / 8);
  });

  it('dropless when capacityFactor is unset or 0; evaluation uses evalCapacityFactor', () => {
    const x = track(logRows(FOUR));
    const dropless = keep(
      track(identityRouter({ type: 'topk', numExperts: 4, dModel: 4, k: 1, capacityFactor: 0 })).route(x, {
        training: true,
      }),
    );
    expect(dropless.capacity).toBeNull();
    expect(Array.from(dropless.kept)).toEqual([1, 1, 1, 1]);
    const r = track(
      identityRouter({
        type: 'topk',
        numExperts: 4,
        dModel: 4,
        k: 1,
        capacityFactor: 1,
        evalCapacityFactor: 2,
      }),
    );
    const train = keep(r.route(x, { training: true }));
    const ev = keep(r.route(x, { training: false }));
    expect(train.capacity).toBe(1);
    expect(ev.capacity).toBe(2);
    expect(ev.dropRate).toBe(0);
    expect(ev.capacityFactor).toBe(2);
    expect(train.capacityFactor).toBe(1);
  });
});

describe('Switch top-1', () => {
  it('takes the argmax with its raw probability (no renormalisation)', () => {
    const x = track(logRows(FOUR));
    const plan = keep(
      track(identityRouter({ type: 'switch', numExperts: 4, dModel: 4 })).route(x, { training: false }),
    );
    expect(plan.k).toBe(1);
    expect(round(readPlan(plan).w)).toEqual([[0.4], [0.9], [0.5], [0.3]]);
  });

  it('uses the truncated-normal init with sigma = sqrt(0.1 / D) by default', () => {
    const D = 64;
    const r = track(createRouter({ type: 'switch', numExperts: 32, dModel: D, seed: 3 }));
    const w = r.variables.weight!.dataSync();
    const sigma = Math.sqrt(0.1 / D);
    let sq = 0;
    let max = 0;
    for (const v of w) {
      sq += v * v;
      max = Math.max(max, Math.abs(v));
    }
    const std = Math.sqrt(sq / w.length);
    expect(max).toBeLessThanOrEqual(2 * sigma + 1e-7);
    // A normal truncated at 2 sigma has std 0.880 sigma.
    expect(std / sigma).toBeGreaterThan(0.82);
    expect(std / sigma).toBeLessThan(0.94);
  });
});

describe('GShard top-2', () => {
  const gshard = (extra: Partial<RouterConfig> = {}) =>
    track(identityRouter({ type: 'gshard', numExperts: 4, dModel: 4, ...extra } as RouterConfig));

  it('keeps the second expert when 2*g2 >= 1 and drops it when g2 is negligible (seed 11)', () => {
    // Token 0: g1 = g2 -> 2*g2/(g1+g2) = 1 > U(0,1) always. Token 1: g2/(g1+g2) ~ 1e-11.
    const x = track(
      tf.tensor2d([
        [5, 5, -5, -5],
        [5, -20, -25, -25],
      ]),
    );
    const plan = keep(gshard().route(x, { training: true, rng: new Rng(11) }));
    const { idx, w } = readPlan(plan);
    expect(idx).toEqual([
      [0, 1],
      [0, 1],
    ]);
    expect(Array.from(plan.kept)).toEqual([1, 1, 1, 0]);
    expect(plan.skipped).toBe(1);
    expect(plan.dropRate).toBe(0);
    // Weights are g/(g1+g2), computed before the random drop: the first stays below 1.
    expect(round(w, 4)).toEqual([
      [0.5, 0.5],
      [1, 0],
    ]);
    expect(w[1]![0]!).toBeLessThanOrEqual(1);
    // Counts are the top-2 selections (sum T*K); kept counts exclude the skipped slot.
    expect(Array.from(plan.countsE)).toEqual([2, 2, 0, 0]);
    expect(Array.from(plan.keptCountsE)).toEqual([2, 1, 0, 0]);
  });

  it('keeps a second expert with g2/(g1+g2) = 1/4 about half the time, deterministically per seed', () => {
    const T = 400;
    const row = [Math.log(3), 0, -30, -30]; // g1 : g2 = 3 : 1
    const x = track(tf.tensor2d(Array.from({ length: T }, () => row)));
    const r = gshard();
    const a = keep(r.route(x, { training: true, rng: new Rng(5) }));
    const b = keep(r.route(x, { training: true, rng: new Rng(5) }));
    const c = keep(r.route(x, { training: true, rng: new Rng(6) }));
    const keptSecond = (p: RoutingPlan) => Array.from({ length: T }, (_, t) => p.kept[2 * t + 1]!);
    const frac = keptSecond(a).reduce((s, v) => s + v, 0) / T;
    expect(frac).toBeGreaterThan(0.4);
    expect(frac).toBeLessThan(0.6);
    expect(keptSecond(b)).toEqual(keptSecond(a));
    expect(keptSecond(c)).not.toEqual(keptSecond(a));
    expect(a.skipped).toBe(T - Math.round(frac * T));
  });

  it('keeps the second expert at evaluation (threshold 0), or by a threshold', () => {
    const x = track(tf.tensor2d([[Math.log(3), 0, -30, -30]]));
    const ev = keep(gshard().route(x, { training: false }));
    expect(Array.from(ev.kept)).toEqual([1, 1]);
    const th = keep(gshard({ evalSecondExpertThreshold: 0.3 }).route(x, { training: false }));
    expect(Array.from(th.kept)).toEqual([1, 0]);
  });

  it('needs an Rng in training', () => {
    const x = track(tf.tensor2d([[1, 0, 0, 0]]));
    expect(() => gshard().route(x, { training: true })).toThrow(
      /`options\.rng` passed to Router\.route\(\) must be an Rng/,
    );
  });

  it('gives first choices priority over second choices under the position policy (Algorithm 1)', () => {
    // t0 -> (0, 1), t1 -> (1, 0); C = ceil(2 * 2 / 2 * 0.5) = 1: both first choices win.
    const r = track(identityRouter({ type: 'gshard', numExperts: 2, dModel: 2, capacityFactor: 0.5 }));
    const x = track(
      tf.tensor2d([
        [1, 0],
        [0, 1],
      ]),
    );
    const plan = keep(r.route(x, { training: false }));
    expect(plan.capacity).toBe(1);
    expect(readPlan(plan).idx).toEqual([
      [0, 1],
      [1, 0],
    ]);
    expect(Array.from(plan.kept)).toEqual([1, 0, 1, 0]);
  });
});

describe('sigmoid + selection bias (DeepSeek-V3)', () => {
  it('normalises the selected sigmoid scores and scales them by routeScale', () => {
    const r = track(identityRouter({ type: 'sigmoid', numExperts: 4, dModel: 4, k: 2, routeScale: 2.5 }));
    const x = track(tf.tensor2d([[2, 1, 0, -1]]));
    const plan = keep(r.route(x, { training: false }));
    const s = [2, 1, 0, -1].map((v) => 1 / (1 + Math.exp(-v)));
    expect(readPlan(plan).idx).toEqual([[0, 1]]);
    const w = readPlan(plan).w[0]!;
    expect(w[0]).toBeCloseTo((2.5 * s[0]!) / (s[0]! + s[1]!), 5);
    expect(w[1]).toBeCloseTo((2.5 * s[1]!) / (s[0]! + s[1]!), 5);
    expect(round(readPlan(plan).probs, 5)[0]).toEqual(s.map((v) => Math.round(v * 1e5) / 1e5));
  });

  it('bias changes which experts are selected, never their weights', () => {
    const r = track(identityRouter({ type: 'sigmoid', numExperts: 4, dModel: 4, k: 2 }));
    const x = track(tf.tensor2d([[2, 1, 0, -1]]));
    const plan = keep(r.route(x, { training: false, selectionBiasE: Float32Array.of(0, 0, 0, 5) }));
    expect(readPlan(plan).idx).toEqual([[3, 0]]);
    const s = [2, 1, 0, -1].map((v) => 1 / (1 + Math.exp(-v)));
    const w = readPlan(plan).w[0]!;
    expect(w[0]).toBeCloseTo(s[3]! / (s[3]! + s[0]!), 5);
    expect(w[1]).toBeCloseTo(s[0]! / (s[3]! + s[0]!), 5);
  });
});

describe('group-limited selection', () => {
  it('excludes the best single expert when its group loses (top-2 sums)', () => {
    // Group 0 = {0, 1}: 0.4 + 0.02 = 0.42; group 1 = {2, 3}: 0.3 + 0.28 = 0.58.
    const x = track(logRows([[0.4, 0.02, 0.3, 0.28]]));
    const flat = keep(
      track(identityRouter({ type: 'topk', numExperts: 4, dModel: 4, k: 1 })).route(x, { training: false }),
    );
    const grouped = keep(
      track(
        identityRouter({
          type: 'topk',
          numExperts: 4,
          dModel: 4,
          k: 1,
          groupLimited: { numGroups: 2, groupTopK: 1 },
        }),
      ).route(x, { training: false }),
    );
    expect(Array.from(flat.expertIdx)).toEqual([0]);
    expect(Array.from(grouped.expertIdx)).toEqual([2]);
    expect(round(readPlan(grouped).w)).toEqual([[0.3]]);
  });

  it('composes with sigmoid scores and the selection bias (group scores use biased scores)', () => {
    const r = track(
      identityRouter({
        type: 'sigmoid',
        numExperts: 4,
        dModel: 4,
        k: 2,
        groupLimited: { numGroups: 2, groupTopK: 1 },
      }),
    );
    const x = track(tf.tensor2d([[3, 2, 0, 0]]));
    const unbiased = keep(r.route(x, { training: false }));
    expect(readPlan(unbiased).idx).toEqual([[0, 1]]);
    const biased = keep(r.route(x, { training: false, selectionBiasE: Float32Array.of(0, 0, 1, 1) }));
    expect(readPlan(biased).idx).toEqual([[2, 3]]);
    expect(round(readPlan(biased).w)).toEqual([[0.5, 0.5]]);
  });
});

describe('training options', () => {
  it('jitter multiplies the input by U(1-eps, 1+eps) in training only, reproducibly per seed', () => {
    const r = track(createRouter({ type: 'topk', numExperts: 4, dModel: 6, k: 2, jitterEps: 0.01, seed: 1 }));
    const x = track(new Rng(2).normalTensor([5, 6]) as Tensor2D);
    const ev = keep(r.route(x, { training: false }));
    const a = keep(r.route(x, { training: true, rng: new Rng(9) }));
    const b = keep(r.route(x, { training: true, rng: new Rng(9) }));
    const la = a.logitsTE.dataSync();
    const le = ev.logitsTE.dataSync();
    expect(Array.from(b.logitsTE.dataSync())).toEqual(Array.from(la));
    let maxRel = 0;
    let diff = 0;
    for (let i = 0; i < la.length; i++) {
      diff = Math.max(diff, Math.abs(la[i]! - le[i]!));
      maxRel = Math.max(maxRel, Math.abs(la[i]! - le[i]!) / (Math.abs(le[i]!) + 1e-3));
    }
    expect(diff).toBeGreaterThan(0);
    // |x W (1 +- eps)| perturbation stays within eps * sum |x_d W_de|, small against the logits.
    expect(maxRel).toBeLessThan(0.2);
    expect(() => r.route(x, { training: true })).toThrow(/options\.rng/);
  });

  it('random-routing warm-up routes at random for the first fraction of steps, then learns', () => {
    const r = track(
      identityRouter({ type: 'topk', numExperts: 4, dModel: 4, k: 1, randomRoutingWarmup: 0.1 }),
    );
    const T = 200;
    const x = track(tf.tensor2d(Array.from({ length: T }, () => [5, 0, 0, 0])));
    const warm = keep(r.route(x, { training: true, step: 9, totalSteps: 100, rng: new Rng(1) }));
    const after = keep(r.route(x, { training: true, step: 10, totalSteps: 100, rng: new Rng(1) }));
    const ev = keep(r.route(x, { training: false }));
    expect(warm.randomRouted).toBe(true);
    expect(after.randomRouted).toBe(false);
    expect(ev.randomRouted).toBe(false);
    for (let e = 0; e < 4; e++) expect(warm.countsE[e]!).toBeGreaterThan(25);
    expect(Array.from(after.countsE)).toEqual([T, 0, 0, 0]);
    // Weights stay the router's probabilities of the drawn experts (so the router keeps learning).
    const w = readPlan(warm).w;
    const p = readPlan(warm).probs;
    for (let t = 0; t < 5; t++) expect(w[t]![0]).toBeCloseTo(p[t]![warm.expertIdx[t]!]!, 6);
    expect(() => r.route(x, { training: true, rng: new Rng(1) })).toThrow(/`options\.step`/);
  });
});

describe('bad input', () => {
  const r = () => track(createRouter({ type: 'topk', numExperts: 4, dModel: 3, k: 2 }));

  it('rejects wrong shapes and dtypes, naming the argument', () => {
    expect(() => r().route(track(tf.zeros([2, 4])) as Tensor2D, { training: false })).toThrow(
      /`xTD` passed to Router\.route\(\) must have shape \[T, D=3\], got \[2, 4\]/,
    );
    expect(() => r().route(track(tf.zeros([3])) as unknown as Tensor2D, { training: false })).toThrow(
      /`xTD` passed to Router\.route\(\) must have shape/,
    );
    expect(() => r().route(track(tf.zeros([2, 3], 'int32')) as Tensor2D, { training: false })).toThrow(
      /`xTD` passed to Router\.route\(\) must have dtype float32, got int32/,
    );
    expect(() =>
      r().route(track(tf.zeros([2, 3])) as Tensor2D, {
        training: false,
        selectionBiasE: new Float32Array(3),
      }),
    ).toThrow(
      /`options\.selectionBiasE` passed to Router\.route\(\) must be a Float32Array of length numExperts \(4\)/,
    );
    expect(() => r().route(track(tf.zeros([2, 3])) as Tensor2D, {} as never)).toThrow(/`options\.training`/);
  });

  it('rejects non-finite router input as NON_FINITE naming xTD, and non-finite weights', () => {
    const x = track(tf.tensor2d([[0, 1, Number.NaN]]));
    expect(() => r().route(x, { training: false })).toThrow(
      /`xTD` passed to Router\.route\(\) must be finite, got NaN at flat index 2/,
    );
    const inf = track(tf.tensor2d([[0, Number.POSITIVE_INFINITY, 1]]));
    const sig = track(createRouter({ type: 'sigmoid', numExperts: 4, dModel: 3, k: 2 }));
    expect(() => sig.route(inf, { training: false })).toThrow(/`xTD` .* must be finite, got Infinity/);
    const bad = r();
    tf.tidy(() => bad.variables.weight!.assign(tf.fill([3, 4], Number.NaN)));
    expect(() => bad.route(track(tf.ones([1, 3])) as Tensor2D, { training: false })).toThrow(
      /router logits .* must be finite.*router weights/,
    );
  });
});

describe('gradients', () => {
  // Well-separated logits so the finite-difference steps never flip a top-k decision.
  const cases: [string, RouterConfig][] = [
    ['topk k=2', { type: 'topk', numExperts: 5, dModel: 3, k: 2 }],
    ['switch', { type: 'switch', numExperts: 4, dModel: 3 }],
    ['sigmoid routeScale 2.5', { type: 'sigmoid', numExperts: 5, dModel: 3, k: 2, routeScale: 2.5 }],
    ['gshard (eval)', { type: 'gshard', numExperts: 4, dModel: 3 }],
  ];
  for (const [name, config] of cases) {
    it(`combine weights differentiate w.r.t. the router weights and input: ${name}`, () => {
      const cfg = resolveRouterConfig(config);
      const rng = new Rng(21);
      const x = track(rng.normalTensor([4, 3]) as Tensor2D);
      const w = track(rng.normalTensor([3, cfg.numExperts], 0, 1.5) as Tensor2D);
      const f = (xi: tf.Tensor, wi: tf.Tensor) =>
        routeScored(cfg, wi as Tensor2D, xi as Tensor2D, { training: false }).topkWeightTK;
      const res = checkGradients(f, [x, w], { eps: 1e-3, atol: 3e-3, rtol: 3e-2 });
      expect(res.checked).toBeGreaterThan(0);
      // The gradient is not trivially zero (Switch's raw p and normalised K>1 both carry signal).
      const g = tf.tidy(
        () =>
          tf
            .grad((wi: tf.Tensor) => tf.sum(tf.square(f(x, wi))))(w)
            .abs()
            .sum()
            .dataSync()[0]!,
      );
      expect(g).toBeGreaterThan(1e-4);
    });
  }

  it('gradients reach the router variable through Router.route (tf.variableGrads)', () => {
    const r = track(createRouter({ type: 'topk', numExperts: 4, dModel: 3, k: 2, seed: 4, initStd: 0.5 }));
    const x = track(new Rng(3).normalTensor([6, 3]) as Tensor2D);
    const target = track(new Rng(4).normalTensor([6, 2]) as Tensor2D);
    const { grads, value } = tf.variableGrads(() =>
      tf.tidy(() => {
        const plan = r.route(x, { training: false });
        return tf.sum(tf.mul(plan.topkWeightTK, target)) as tf.Scalar;
      }),
    );
    expect(Object.keys(grads)).toContain(r.variables.weight!.name);
    expect(grads[r.variables.weight!.name]!.abs().sum().dataSync()[0]).toBeGreaterThan(0);
    tf.dispose([value, ...Object.values(grads)]);
  });
});

it('leaves no tensors behind (routing, gradients, errors)', async () => {
  const r = track(
    createRouter({ type: 'topk', numExperts: 8, dModel: 4, k: 2, capacityFactor: 1, jitterEps: 0.01 }),
  );
  const x = track(new Rng(1).normalTensor([16, 4]) as Tensor2D);
  await expectNoLeaks(() => {
    const plan = r.route(x, { training: true, rng: new Rng(2) });
    disposeRoutingPlan(plan);
  });
  await expectNoLeaks(() => {
    const { grads, value } = tf.variableGrads(
      () => tf.sum(r.route(x, { training: false }).topkWeightTK) as tf.Scalar,
    );
    tf.dispose([value, ...Object.values(grads)]);
  });
  const nan = track(tf.tensor2d([[Number.NaN, 0, 0, 0]]));
  await expectNoLeaks(() => {
    expect(() => r.route(nan, { training: false })).toThrow(/must be finite/);
  });
});
