// Property tests: the invariants of SPEC section 1 over random T, E, K, capacity factors and seeds.
import { expectNoLeaks, Rng, type Tensor2D } from '@switchyard/tensor';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createRouter, disposeRoutingPlan, type RouterConfig, type RoutingPlan } from './index';

const RUNS = 25;
const D = 4;

/** Divisors of n. */
const divisors = (n: number) => Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);

const common = fc.record({
  T: fc.integer({ min: 1, max: 24 }),
  E: fc.integer({ min: 2, max: 12 }),
  kFrac: fc.double({ min: 0, max: 1, noNaN: true }),
  factor: fc.oneof(
    fc.constant(0),
    fc.constantFrom(0.5, 1, 1.25, 2),
    fc.double({ min: 0.05, max: 3, noNaN: true }),
  ),
  evalFactor: fc.oneof(fc.constant(undefined), fc.double({ min: 0, max: 3, noNaN: true })),
  dropPolicy: fc.constantFrom('position' as const, 'probs' as const),
  seed: fc.integer({ min: 0, max: 1_000_000 }),
  training: fc.boolean(),
  useBias: fc.boolean(),
  jitter: fc.constantFrom(0, 0.01),
  gPick: fc.double({ min: 0, max: 1, noNaN: true }),
  gtkPick: fc.double({ min: 0, max: 1, noNaN: true }),
  scale: fc.double({ min: 0.2, max: 4, noNaN: true }),
});
type Common = typeof common extends fc.Arbitrary<infer A> ? A : never;

const pick = <T>(xs: readonly T[], u: number): T => xs[Math.min(xs.length - 1, Math.floor(u * xs.length))]!;

function buildConfig(type: RouterConfig['type'], c: Common, grouped: boolean): RouterConfig {
  const E = type === 'gshard' ? Math.max(2, c.E) : c.E;
  const base = {
    numExperts: E,
    dModel: D,
    capacityFactor: c.factor,
    dropPolicy: c.dropPolicy,
    seed: c.seed,
    jitterEps: c.jitter,
    initStd: 1,
    ...(c.evalFactor === undefined ? {} : { evalCapacityFactor: c.evalFactor }),
  };
  let groupLimited: { numGroups: number; groupTopK: number } | undefined;
  let k = 1 + Math.floor(c.kFrac * E * 0.999);
  if (grouped) {
    // Non-trivial groups (1 < G < E where E allows), groupTopK < G, and K > groupTopK where
    // possible: the cases where picking experts from too many groups could happen.
    const nonTrivial = divisors(E).filter((d) => d > 1 && d < E);
    const G = pick(nonTrivial.length > 0 ? nonTrivial : divisors(E), c.gPick);
    const groupTopK = G > 1 ? 1 + Math.floor(c.gtkPick * (G - 1) * 0.999) : 1;
    groupLimited = { numGroups: G, groupTopK };
    const maxK = groupTopK * (E / G);
    const minK = Math.min(maxK, groupTopK + 1);
    k = minK + Math.floor(c.kFrac * (maxK - minK + 1) * 0.999);
  }
  const gl = groupLimited === undefined ? {} : { groupLimited };
  switch (type) {
    case 'topk':
      return { ...base, ...gl, type, k };
    case 'switch':
      return { ...base, ...gl, type };
    case 'gshard': {
      const ok = groupLimited === undefined || groupLimited.groupTopK * (E / groupLimited.numGroups) >= 2;
      return { ...base, ...(ok ? gl : {}), type };
    }
    case 'sigmoid':
      return { ...base, ...gl, type, k, routeScale: c.scale };
    case 'expert-choice':
      return { ...base, type, capacityFactor: c.factor === 0 ? 2 : c.factor };
    case 'hierarchical': {
      const G = pick(divisors(E), c.gPick);
      const groupK = 1 + Math.floor(c.gtkPick * G * 0.999);
      const kh = 1 + Math.floor(c.kFrac * groupK * (E / G) * 0.999);
      return { ...base, type, numGroups: G, groupK, k: kh };
    }
    case 'balanced':
      return { ...base, type, k, routeScale: c.scale };
  }
}

function route(
  config: RouterConfig,
  c: Common,
): { plan: RoutingPlan; again: RoutingPlan; biasE: Float32Array } {
  const router = createRouter(config);
  const x = new Rng(c.seed + 1).normalTensor([c.T, D]) as Tensor2D;
  const biasRng = new Rng(c.seed + 2);
  const biasE = Float32Array.from({ length: config.numExperts }, () =>
    c.useBias ? biasRng.normal(0, 0.3) : 0,
  );
  const opts = {
    training: c.training,
    ...(c.useBias ? { selectionBiasE: biasE } : {}),
  };
  const plan = router.route(x, { ...opts, rng: new Rng(c.seed + 3) });
  const again = router.route(x, { ...opts, rng: new Rng(c.seed + 3) });
  x.dispose();
  router.dispose();
  return { plan, again, biasE };
}

/** Checks every invariant that applies to this router; returns nothing, fails via expect. */
function checkInvariants(config: RouterConfig, c: Common, plan: RoutingPlan, again: RoutingPlan): void {
  const T = c.T;
  const E = plan.numExperts;
  const K = plan.k;
  const idx = plan.topkIdxTK.dataSync();
  const w = plan.topkWeightTK.dataSync();
  const mask = plan.keptMaskTK.dataSync();
  const probs = plan.probsTE.dataSync();
  expect(plan.topkIdxTK.shape).toEqual([T, K]);
  expect(plan.topkWeightTK.shape).toEqual([T, K]);
  expect(plan.probsTE.shape).toEqual([T, E]);
  expect(plan.logitsTE.dtype).toBe('float32');
  // Host copies match the tensors.
  expect(Array.from(plan.expertIdx)).toEqual(Array.from(idx));
  expect(Array.from(plan.kept)).toEqual(Array.from(mask));

  // Indices unique per token and in [0, E); weights finite and >= 0; dropped weights exactly 0.
  for (let t = 0; t < T; t++) {
    const seen = new Set<number>();
    for (let j = 0; j < K; j++) {
      const e = idx[t * K + j]!;
      expect(e >= 0 && e < E).toBe(true);
      seen.add(e);
      const wv = w[t * K + j]!;
      expect(Number.isFinite(wv) && wv >= 0).toBe(true);
      if (mask[t * K + j] === 0) expect(wv).toBe(0);
    }
    expect(seen.size).toBe(K);
  }

  // Kept counts: consistent with the mask, and <= capacity.
  const keptCounts = new Int32Array(E);
  for (let a = 0; a < T * K; a++) if (mask[a]) keptCounts[idx[a]!]! += 1;
  expect(Array.from(plan.keptCountsE)).toEqual(Array.from(keptCounts));
  if (plan.capacity !== null)
    for (let e = 0; e < E; e++) expect(keptCounts[e]!).toBeLessThanOrEqual(plan.capacity);

  const scale = 'routeScale' in config && config.routeScale !== undefined ? config.routeScale : 1;
  if (config.type === 'expert-choice') {
    // Every expert takes exactly k tokens.
    const kE = plan.capacity!;
    const cf = config.capacityFactor ?? 2;
    const factor = c.training || !c.evalFactor ? cf : c.evalFactor;
    expect(plan.capacityFactor).toBe(factor);
    expect(kE).toBe(Math.min(T, Math.max(1, Math.ceil(((T * factor) / E) * (1 - 1e-9)))));
    for (let e = 0; e < E; e++) expect(keptCounts[e]).toBe(kE);
    for (let a = 0; a < T * K; a++) {
      const t = Math.floor(a / K);
      expect(w[a]).toBeCloseTo(mask[a] ? probs[t * E + idx[a]!]! : 0, 6);
    }
  } else {
    // Token choice: counts are the top-K slots (sum T*K); drop rate matches the dropped slots.
    expect(Array.from(plan.countsE).reduce((s, v) => s + v, 0)).toBe(T * K);
    const dropped = T * K - plan.kept.reduce((s, v) => s + v, 0) - (plan.skipped ?? 0);
    expect(plan.dropRate).toBeCloseTo(dropped / (T * K), 12);
    if (plan.capacity === null) expect(plan.dropRate).toBe(0);
  }

  // Weights: bias never enters them. They are the chosen scores, renormalised over the K chosen
  // (sum to routeScale), raw for Switch, g/(g1+g2) for GShard, 1/K for the balanced router.
  if (config.type !== 'expert-choice') {
    for (let t = 0; t < T; t++) {
      let denom = 0;
      for (let j = 0; j < K; j++) denom += probs[t * E + idx[t * K + j]!]!;
      let sumKeptW = 0;
      for (let j = 0; j < K; j++) {
        const a = t * K + j;
        const p = probs[t * E + idx[a]!]!;
        let expected: number;
        if (config.type === 'balanced') expected = scale / K;
        else if (config.type === 'switch') expected = p;
        else expected = (K > 1 || config.type === 'hierarchical' ? p / denom : p) * scale;
        expect(w[a]!).toBeCloseTo(mask[a] ? expected : 0, 4);
        sumKeptW += w[a]!;
      }
      const allKept = Array.from({ length: K }, (_, j) => mask[t * K + j]).every((m) => m === 1);
      const normalised =
        config.type === 'balanced' || config.type === 'hierarchical' || (config.type !== 'switch' && K > 1);
      if (allKept && normalised) expect(sumKeptW).toBeCloseTo(scale, 4);
    }
  }

  // Group-limited and hierarchical: every token's experts lie in at most groupTopK (groupK) groups.
  const groups =
    config.type === 'hierarchical'
      ? { G: config.numGroups, keep: config.groupK ?? 1 }
      : 'groupLimited' in config && config.groupLimited !== undefined
        ? { G: config.groupLimited.numGroups, keep: config.groupLimited.groupTopK }
        : undefined;
  if (groups !== undefined) {
    const per = E / groups.G;
    for (let t = 0; t < T; t++) {
      const gs = new Set<number>();
      for (let j = 0; j < K; j++) gs.add(Math.floor(idx[t * K + j]! / per));
      expect(gs.size).toBeLessThanOrEqual(groups.keep);
    }
  }

  // The same seed gives the same routing.
  expect(Array.from(again.expertIdx)).toEqual(Array.from(plan.expertIdx));
  expect(Array.from(again.kept)).toEqual(Array.from(plan.kept));
  expect(Array.from(again.topkWeightTK.dataSync())).toEqual(Array.from(w));
}

const TYPES: RouterConfig['type'][] = [
  'topk',
  'switch',
  'gshard',
  'sigmoid',
  'expert-choice',
  'hierarchical',
  'balanced',
];

describe('router invariants (fast-check)', () => {
  for (const type of TYPES) {
    const groupedToo = type === 'topk' || type === 'switch' || type === 'gshard' || type === 'sigmoid';
    for (const grouped of groupedToo ? [false, true] : [false]) {
      it(`${type}${grouped ? ' + group-limited' : ''}`, () => {
        fc.assert(
          fc.property(common, (c) => {
            const config = buildConfig(type, c, grouped);
            const { plan, again } = route(config, c);
            try {
              checkInvariants(config, c, plan, again);
            } finally {
              disposeRoutingPlan(plan);
              disposeRoutingPlan(again);
            }
          }),
          { numRuns: RUNS, seed: 20_250_101 },
        );
      });
    }
  }

  it('bias changes selection only: with and without bias, weights are the renormalised scores of the chosen', () => {
    fc.assert(
      fc.property(common, (c) => {
        const config = buildConfig('sigmoid', { ...c, useBias: true }, false);
        const { plan, again } = route(config, { ...c, useBias: true });
        try {
          const K = plan.k;
          const E = plan.numExperts;
          const probs = plan.probsTE.dataSync();
          const w = plan.topkWeightTK.dataSync();
          for (let t = 0; t < c.T; t++) {
            let denom = 0;
            for (let j = 0; j < K; j++) denom += probs[t * E + plan.expertIdx[t * K + j]!]!;
            for (let j = 0; j < K; j++) {
              const a = t * K + j;
              const p = probs[t * E + plan.expertIdx[a]!]!;
              const scale = (config as { routeScale: number }).routeScale;
              expect(w[a]!).toBeCloseTo(plan.kept[a] ? (K > 1 ? p / denom : p) * scale : 0, 4);
            }
          }
        } finally {
          disposeRoutingPlan(plan);
          disposeRoutingPlan(again);
        }
      }),
      { numRuns: RUNS, seed: 7 },
    );
  });
});

it('routing every kind leaves no tensors behind', async () => {
  const c = {
    T: 9,
    E: 6,
    kFrac: 0.4,
    factor: 1,
    evalFactor: undefined,
    dropPolicy: 'probs',
    seed: 3,
    training: true,
    useBias: true,
    jitter: 0.01,
    gPick: 0.5,
    gtkPick: 0.5,
    scale: 1,
  } as const;
  for (const type of TYPES) {
    await expectNoLeaks(() => {
      const { plan, again } = route(buildConfig(type, c, false), c);
      disposeRoutingPlan(plan);
      disposeRoutingPlan(again);
    }, type);
  }
});
