// Decisions on the device (`decideOn: 'device'`) against the host path: same selections, drops,
// counts, combine weights and gradients for every supported router, ties included; no host read.
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { identityRouter, logRows } from '../../test/helpers';
import {
  createRouter,
  disposeRoutingPlan,
  type RouteOptions,
  type RouterConfig,
  type RoutingPlan,
} from '../index';

const live: { dispose(): void }[] = [];
const track = <T extends { dispose(): void }>(x: T): T => {
  live.push(x);
  return x;
};
afterEach(() => {
  for (const x of live.splice(0)) x.dispose();
});

/** Everything a plan decided, read to the host. */
function decided(p: RoutingPlan) {
  return {
    idx: p.topkIdxTK.arraySync(),
    kept: p.keptMaskTK.arraySync(),
    weights: p.topkWeightTK.arraySync(),
    expertIdx: Array.from(p.expertIdx),
    keptHost: Array.from(p.kept),
    countsE: Array.from(p.countsE),
    keptCountsE: Array.from(p.keptCountsE),
    dropRate: p.dropRate,
    skipped: p.skipped ?? 0,
    capacity: p.capacity,
    randomRouted: p.randomRouted,
  };
}

/** Routes x through a host router and a device router of the same config and weights. */
function both(config: RouterConfig, x: Tensor2D, options: () => RouteOptions, identity = false) {
  const make = (decideOn: 'host' | 'device') =>
    track(
      identity ? identityRouter({ ...config, decideOn }) : createRouter({ ...config, decideOn, seed: 5 }),
    );
  const host = make('host').route(x, options());
  const device = make('device').route(x, options());
  try {
    expect(device.decidedOn).toBe('device');
    return { host: decided(host), device: decided(device) };
  } finally {
    disposeRoutingPlan(host);
    disposeRoutingPlan(device);
  }
}

const T = 64;
const D = 16;
const E = 8;
const training =
  (step = 5): (() => RouteOptions) =>
  () => ({ training: true, rng: new Rng(9), step, totalSteps: 100 });
const CASES: [string, RouterConfig][] = [
  ['topk dropless', { type: 'topk', numExperts: E, dModel: D, k: 2 }],
  ['topk k=3, capacity 0.5, position', { type: 'topk', numExperts: E, dModel: D, k: 3, capacityFactor: 0.5 }],
  [
    'topk capacity 0.75, probs',
    { type: 'topk', numExperts: E, dModel: D, k: 2, capacityFactor: 0.75, dropPolicy: 'probs' },
  ],
  ['switch capacity 1', { type: 'switch', numExperts: E, dModel: D, capacityFactor: 1 }],
  [
    'gshard capacity 1 (random second expert)',
    { type: 'gshard', numExperts: E, dModel: D, capacityFactor: 1 },
  ],
  [
    'gshard probs policy',
    { type: 'gshard', numExperts: E, dModel: D, capacityFactor: 0.5, dropPolicy: 'probs' },
  ],
  [
    'sigmoid group-limited, routeScale',
    {
      type: 'sigmoid',
      numExperts: E,
      dModel: D,
      k: 2,
      groupLimited: { numGroups: 4, groupTopK: 2 },
      routeScale: 2.5,
      capacityFactor: 1,
    },
  ],
  [
    'topk random-routing warm-up, jitter',
    {
      type: 'topk',
      numExperts: E,
      dModel: D,
      k: 2,
      capacityFactor: 1,
      randomRoutingWarmup: 0.5,
      jitterEps: 0.1,
    },
  ],
];

describe("decideOn: 'device' decides as the host does", () => {
  const x = new Rng(3).normalTensor([T, D]) as Tensor2D;
  afterAll(() => x.dispose());
  for (const [name, config] of CASES) {
    it(`${name}: training and evaluation`, () => {
      for (const options of [training(), () => ({ training: false })]) {
        const { host, device } = both(config, x, options);
        if ((config.capacityFactor ?? 0) > 0 && (config.capacityFactor ?? 0) < 1)
          expect(host.dropRate).toBeGreaterThan(0);
        expect(device).toEqual(host);
      }
    });
  }

  it('sigmoid with a selection bias, and gshard at evaluation with a threshold', () => {
    const bias = Float32Array.from({ length: E }, (_, e) => (e % 3) * 0.05);
    const sig = both({ type: 'sigmoid', numExperts: E, dModel: D, k: 2, capacityFactor: 1 }, x, () => ({
      training: true,
      selectionBiasE: bias,
    }));
    expect(sig.device).toEqual(sig.host);
    const gs = both(
      { type: 'gshard', numExperts: E, dModel: D, capacityFactor: 1, evalSecondExpertThreshold: 0.5 },
      x,
      () => ({ training: false }),
    );
    expect(gs.host.skipped).toBeGreaterThan(0);
    expect(gs.device).toEqual(gs.host);
  });

  it('ties go to the lower expert, and equal gates drop the later assignment, as on the host', () => {
    // Every row has tied scores: experts 1, 2 and 5 tie at the top, 0 and 3 below.
    const rows = Array.from({ length: 12 }, (_, t) =>
      Array.from(
        { length: 6 },
        (_, e) => ([1, 2, 5].includes(e) ? 0.25 : e === 0 || e === 3 ? 0.1 : 0.05) + 0 * t,
      ),
    );
    const tied = track(logRows(rows));
    for (const dropPolicy of ['position', 'probs'] as const) {
      const cfg: RouterConfig = {
        type: 'topk',
        numExperts: 6,
        dModel: 6,
        k: 2,
        capacityFactor: 1,
        dropPolicy,
      };
      const { host, device } = both(cfg, tied, () => ({ training: false }), true);
      expect(host.idx[0]).toEqual([1, 2]);
      expect(host.dropRate).toBeGreaterThan(0);
      expect(device).toEqual(host);
    }
  });

  it('gives the same gradients with respect to the router weights and the input', () => {
    for (const config of [CASES[2]![1], CASES[6]![1]]) {
      const grads = (decideOn: 'host' | 'device') => {
        const r = track(createRouter({ ...config, decideOn, seed: 5 }));
        const w = r.variables.weight!;
        const xv = track(tf.variable(x.clone(), true, `x-${decideOn}-${config.type}`));
        const { value, grads } = tf.variableGrads(() => {
          const plan = r.route(xv, { training: true, rng: new Rng(9), step: 5, totalSteps: 100 });
          // Weights and probabilities both reach the loss (as combine weights and an aux loss do).
          const coeff = tf.linspace(0.5, 1.5, T * plan.k).reshape(plan.topkWeightTK.shape);
          return tf.add(
            tf.sum(tf.mul(plan.topkWeightTK, coeff)),
            tf.sum(tf.square(plan.probsTE)),
          ) as tf.Scalar;
        }, [w, xv]);
        const out = [grads[w.name]!.arraySync(), grads[xv.name]!.arraySync()];
        tf.dispose([value, ...Object.values(grads)]);
        return out;
      };
      expect(grads('device')).toEqual(grads('host'));
    }
  });

  it('reads nothing to the host while routing; the host arrays are read once, on first access', () => {
    const r = track(createRouter({ ...CASES[4]![1], decideOn: 'device' }));
    const reads = ['dataSync', 'data', 'arraySync', 'array', 'bufferSync', 'buffer'] as const;
    const spies = reads.map((m) => vi.spyOn(tf.Tensor.prototype, m));
    try {
      const plan = r.route(x, training()());
      expect(spies.reduce((n, s) => n + s.mock.calls.length, 0)).toBe(0);
      disposeRoutingPlan(plan); // disposing reads nothing either
      expect(spies.reduce((n, s) => n + s.mock.calls.length, 0)).toBe(0);
      const again = r.route(x, training()());
      void again.countsE;
      const afterFirst = spies.reduce((n, s) => n + s.mock.calls.length, 0);
      expect(afterFirst).toBeGreaterThan(0);
      void again.kept;
      void again.dropRate;
      expect(spies.reduce((n, s) => n + s.mock.calls.length, 0)).toBe(afterFirst);
      disposeRoutingPlan(again);
    } finally {
      for (const s of spies) s.mockRestore();
    }
  });

  it('refuses routers it does not support, naming the supported ones', () => {
    expect(() =>
      createRouter({ type: 'expert-choice', numExperts: E, dModel: D, decideOn: 'device' }),
    ).toThrow(
      /decideOn.*'host' for a expert-choice router \('device' is supported by the topk, switch, gshard, sigmoid routers\)/,
    );
    expect(() =>
      createRouter({ type: 'topk', numExperts: E, dModel: D, decideOn: 'gpu' as 'device' }),
    ).toThrow(/decideOn/);
  });

  it('leaves no tensors behind (routing, gradients)', async () => {
    const r = track(createRouter({ ...CASES[4]![1], decideOn: 'device' }));
    await expectNoLeaks(() => {
      const plan = r.route(x, training()());
      void plan.countsE;
      disposeRoutingPlan(plan);
    });
    await expectNoLeaks(() => {
      const { grads, value } = tf.variableGrads(
        () => tf.sum(r.route(x, training()()).topkWeightTK) as tf.Scalar,
      );
      tf.dispose([value, ...Object.values(grads)]);
    });
  });
});
