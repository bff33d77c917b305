import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { createRouter, disposeRoutingPlan, ROUTER_TYPES, type RouterConfig } from './index';

const configs: RouterConfig[] = [
  { type: 'topk', numExperts: 8, dModel: 6, k: 2 },
  { type: 'switch', numExperts: 8, dModel: 6 },
  { type: 'gshard', numExperts: 8, dModel: 6 },
  {
    type: 'sigmoid',
    numExperts: 8,
    dModel: 6,
    k: 2,
    groupLimited: { numGroups: 4, groupTopK: 2 },
    routeScale: 2.5,
  },
  { type: 'expert-choice', numExperts: 8, dModel: 6 },
  { type: 'hierarchical', numExperts: 8, dModel: 6, numGroups: 4, k: 2 },
  { type: 'balanced', numExperts: 8, dModel: 6, k: 2 },
];

describe('createRouter', () => {
  it('covers every router type', () => {
    expect(configs.map((c) => c.type).sort()).toEqual([...ROUTER_TYPES].sort());
  });

  for (const config of configs) {
    it(`${config.type}: plan shapes, dtypes, metadata, and reproducible init`, () => {
      const r = createRouter(config);
      const r2 = createRouter(config);
      const x = new Rng(1).normalTensor([10, 6]) as Tensor2D;
      const plan = r.route(x, { training: true, rng: new Rng(2) });
      const K = config.type === 'expert-choice' ? 8 : config.type === 'switch' ? 1 : 2;
      expect(plan.router).toBe(config.type);
      expect(plan.numTokens).toBe(10);
      expect(plan.numExperts).toBe(8);
      expect(plan.k).toBe(K);
      expect(plan.logitsTE.shape).toEqual([10, 8]);
      expect(plan.probsTE.shape).toEqual([10, 8]);
      expect(plan.topkIdxTK.dtype).toBe('int32');
      expect(plan.topkIdxTK.shape).toEqual([10, K]);
      expect(plan.topkWeightTK.dtype).toBe('float32');
      expect(plan.keptMaskTK.dtype).toBe('float32');
      expect(plan.expertIdx.length).toBe(10 * K);
      expect(plan.kept.length).toBe(10 * K);
      expect(r.type).toBe(config.type);
      expect(r.dModel).toBe(6);
      for (const [name, v] of Object.entries(r.variables)) {
        expect(Array.from(v.dataSync())).toEqual(Array.from(r2.variables[name]!.dataSync()));
        expect(v.trainable).toBe(true);
      }
      expect(r.numParams()).toBe(Object.values(r.variables).reduce((s, v) => s + v.size, 0));
      disposeRoutingPlan(plan);
      x.dispose();
      r.dispose();
      r2.dispose();
    });
  }

  it('names variables under `name`, and refuses to route after dispose', () => {
    const r = createRouter({ type: 'topk', numExperts: 4, dModel: 2, name: 'layer3.router' });
    expect(r.variables.weight!.name).toBe('layer3.router/weight');
    expect(r.variables.weight!.shape).toEqual([2, 4]);
    expect(r.flopsPerToken()).toBe(2 * 2 * 4);
    r.dispose();
    expect(r.variables.weight!.isDisposed).toBe(true);
    const x = tf.zeros([1, 2]) as Tensor2D;
    expect(() => r.route(x, { training: false })).toThrow(/topk router was disposed/);
    x.dispose();
  });

  it('different seeds give different weights; zeros init routes uniformly', () => {
    const a = createRouter({ type: 'topk', numExperts: 4, dModel: 3, seed: 1 });
    const b = createRouter({ type: 'topk', numExperts: 4, dModel: 3, seed: 2 });
    expect(Array.from(a.variables.weight!.dataSync())).not.toEqual(
      Array.from(b.variables.weight!.dataSync()),
    );
    const z = createRouter({ type: 'topk', numExperts: 4, dModel: 3, init: 'zeros' });
    const x = new Rng(0).normalTensor([2, 3]) as Tensor2D;
    const plan = z.route(x, { training: false });
    expect(Array.from(plan.probsTE.dataSync())).toEqual(new Array(8).fill(0.25));
    disposeRoutingPlan(plan);
    tf.dispose([x]);
    for (const r of [a, b, z]) r.dispose();
  });

  it('a plan inside tf.tidy is released with the scope', () => {
    const r = createRouter({ type: 'topk', numExperts: 4, dModel: 3 });
    const x = new Rng(0).normalTensor([5, 3]) as Tensor2D;
    const before = tf.memory().numTensors;
    const sum = tf.tidy(() => tf.sum(r.route(x, { training: false }).topkWeightTK));
    expect(tf.memory().numTensors).toBe(before + 1);
    sum.dispose();
    x.dispose();
    r.dispose();
  });

  it('creating, routing and disposing every kind leaves no tensors behind', async () => {
    await expectNoLeaks(() => {
      const x = new Rng(3).normalTensor([7, 6]) as Tensor2D;
      for (const config of configs) {
        const r = createRouter(config);
        disposeRoutingPlan(r.route(x, { training: true, rng: new Rng(1) }));
        disposeRoutingPlan(r.route(x, { training: false }));
        r.dispose();
      }
      x.dispose();
    });
  });
});
