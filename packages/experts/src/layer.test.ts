import { disposeRoutingPlan, type RouteOptions, type RouterConfig } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { maxAbs, maxAbsDiff, naiveMoE, referenceFFN } from '../test/fakes';
import type { ComputeMode, ExpertActivation, MoELayerConfig, SharedExpertsConfig } from './config';
import { DenseFFN } from './ffn';
import { MoELayer } from './layer';

const D = 8;
const cpu = process.env.SWITCHYARD_BACKEND === 'cpu';

function layerConfig(
  router: Partial<RouterConfig> & { type: RouterConfig['type'] },
  E: number,
  activation: ExpertActivation = 'swiglu',
  shared?: SharedExpertsConfig,
  computeMode: ComputeMode = 'auto',
): MoELayerConfig {
  return {
    dModel: D,
    router: { numExperts: E, dModel: D, ...router } as RouterConfig,
    experts: { numExperts: E, dModel: D, dFF: 12, activation, initStd: 0.3 },
    ...(shared ? { shared } : {}),
    computeMode,
  };
}

/** The layer written out: route, naive loop over experts with index-add, plus shared experts. */
function naiveLayer(layer: MoELayer, xTD: Tensor2D, options: RouteOptions): Tensor2D {
  const v = layer.variables;
  const act = layer.experts.activation;
  const plan = layer.router.route(xTD, options);
  let y: tf.Tensor = naiveMoE(xTD, plan, v['experts.w1']!, v['experts.w3'], v['experts.w2']!, act);
  if (v['shared.w1']) {
    let s = referenceFFN(xTD, v['shared.w1'], v['shared.w3'], v['shared.w2']!, act);
    if (v['shared.gate']) s = tf.mul(s, tf.sigmoid(tf.matMul(xTD, v['shared.gate'])));
    y = tf.add(y, s);
  }
  return y as Tensor2D;
}

/** Loss value and gradients (by layer variable name, plus `x`) of sum(f(x) * probe). */
function lossAndGrads(layer: MoELayer, x: tf.Variable, probe: tf.Tensor, f: () => tf.Tensor) {
  const names = new Map<string, string>([[x.name, 'x']]);
  for (const [name, v] of Object.entries(layer.variables)) names.set(v.name, name);
  const varList = [x, ...Object.values(layer.variables)];
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(f(), probe)) as tf.Scalar, varList);
  const out: Record<string, tf.Tensor> = {};
  for (const [id, g] of Object.entries(grads)) out[names.get(id)!] = g;
  return { value, grads: out };
}

const equivalenceCases: [string, MoELayerConfig][] = [
  ['top-2 softmax, dropless, SwiGLU', layerConfig({ type: 'topk', k: 2 }, 4)],
  [
    'Switch top-1 with capacity drops, GELU',
    layerConfig({ type: 'switch', capacityFactor: 0.75 }, 4, 'gelu'),
  ],
  [
    'sigmoid top-2, gated shared experts',
    layerConfig({ type: 'sigmoid', k: 2 }, 6, 'swiglu', { count: 2, dFF: 4, gate: true }),
  ],
  [
    'expert choice, ReLU, shared expert',
    layerConfig({ type: 'expert-choice' }, 4, 'relu', { count: 1, dFF: 6, gate: false }),
  ],
];

describe('MoELayer equals the naive layer (forward and every gradient, router included)', () => {
  for (const [name, cfg] of equivalenceCases) {
    for (const mode of ['dropless', 'padded'] as const) {
      it(`${name}, ${mode}`, () => {
        const layer = new MoELayer({ ...cfg, computeMode: mode }, new Rng(name));
        const rng = new Rng(`${name}/data`);
        const T = 16;
        const x = tf.variable(rng.normalTensor([T, D]), true);
        const probe = rng.normalTensor([T, D]);
        const options = { training: true };
        let plan: ReturnType<MoELayer['forward']>['plan'] | undefined;
        const got = lossAndGrads(layer, x, probe, () => {
          const out = layer.forward(x as unknown as Tensor2D, options);
          plan = out.plan;
          expect(out.computeMode).toBe(mode);
          return out.yTD;
        });
        const ref = lossAndGrads(layer, x, probe, () => naiveLayer(layer, x as unknown as Tensor2D, options));
        expect(Object.keys(got.grads).sort()).toEqual(Object.keys(ref.grads).sort());
        expect(Object.keys(got.grads)).toContain('router.weight');
        const tol = (t: tf.Tensor) => 2e-5 * Math.max(1, maxAbs(t));
        expect(Math.abs(got.value.dataSync()[0]! - ref.value.dataSync()[0]!)).toBeLessThan(tol(ref.value));
        for (const [k, g] of Object.entries(ref.grads)) {
          expect(maxAbsDiff(got.grads[k]!, g), k).toBeLessThan(tol(g));
        }
        expect(plan!.numTokens).toBe(T);
        tf.dispose([
          got.value,
          ref.value,
          ...Object.values(got.grads),
          ...Object.values(ref.grads),
          x,
          probe,
        ]);
        layer.dispose();
      });
    }
  }
});

describe('MoELayer equivalences', () => {
  for (const activation of ['swiglu', 'gelu', 'relu'] as const) {
    it(`one expert at K = 1 equals the dense FFN with the same weights (${activation})`, () => {
      const layer = new MoELayer(layerConfig({ type: 'topk', k: 1 }, 1, activation), new Rng(1));
      const dense = new DenseFFN({ dModel: D, dFF: 12, activation }, new Rng(2));
      for (const name of Object.keys(dense.variables)) {
        const w = layer.variables[`experts.${name}`]!;
        dense.variables[name]!.assign(w.reshape(w.shape.slice(1)));
      }
      const x = new Rng(3).normalTensor([10, D]) as Tensor2D;
      const { yTD, plan } = layer.forward(x, { training: false });
      const ref = dense.forward(x);
      expect(maxAbsDiff(yTD, ref)).toBeLessThan(1e-6);
      const gx = tf.grads((a: tf.Tensor) =>
        tf.sum(tf.square(layer.forward(a as Tensor2D, { training: false }).yTD)),
      );
      const gd = tf.grads((a: tf.Tensor) => tf.sum(tf.square(dense.forward(a as Tensor2D))));
      const [g1, g2] = [gx([x])[0]!, gd([x])[0]!];
      expect(maxAbsDiff(g1, g2)).toBeLessThan(1e-5);
      tf.dispose([x, yTD, ref, g1, g2]);
      disposeRoutingPlan(plan);
      layer.dispose();
      dense.dispose();
    });
  }

  it('dropless equals capacity factor infinity (dropless and padded compute)', () => {
    const E = 4;
    const T = 20;
    const x = new Rng(5).normalTensor([T, D]) as Tensor2D;
    const dropless = new MoELayer(layerConfig({ type: 'topk', k: 2, capacityFactor: 0 }, E), new Rng(9));
    const { yTD: y0, plan: p0 } = dropless.forward(x, { training: true });
    expect(p0.capacity).toBeNull();
    for (const mode of ['dropless', 'padded'] as const) {
      // capacityFactor = E gives C = T * K: no expert can overflow.
      const big = new MoELayer(
        layerConfig({ type: 'topk', k: 2, capacityFactor: E }, E, 'swiglu', undefined, mode),
        new Rng(9),
      );
      const { yTD: y1, plan: p1 } = big.forward(x, { training: true });
      expect(p1.capacity).toBe(T * 2);
      expect(p1.dropRate).toBe(0);
      expect(Array.from(p1.topkIdxTK.dataSync())).toEqual(Array.from(p0.topkIdxTK.dataSync()));
      expect(maxAbsDiff(y0, y1)).toBeLessThan(1e-6);
      tf.dispose(y1);
      disposeRoutingPlan(p1);
      big.dispose();
    }
    tf.dispose([x, y0]);
    disposeRoutingPlan(p0);
    dropless.dispose();
  });

  it('dropped assignments change the output only through their own tokens', () => {
    // Capacity 1 per expert keeps few assignments; tokens whose every slot was dropped output exactly 0.
    const layer = new MoELayer(layerConfig({ type: 'switch', capacityFactor: 0.25 }, 2), new Rng(11));
    const x = new Rng(12).normalTensor([8, D]) as Tensor2D;
    const { yTD, plan } = layer.forward(x, { training: true });
    const rows = yTD.arraySync() as number[][];
    let droppedTokens = 0;
    for (let t = 0; t < 8; t++) {
      if (plan.kept[t] === 0) {
        droppedTokens++;
        expect(rows[t]!.every((v) => v === 0)).toBe(true);
      } else {
        expect(rows[t]!.some((v) => v !== 0)).toBe(true);
      }
    }
    expect(droppedTokens).toBe(6);
    tf.dispose([x, yTD]);
    disposeRoutingPlan(plan);
    layer.dispose();
  });
});

describe('MoELayer API', () => {
  it('names its variables as the model package expects', () => {
    const layer = new MoELayer(
      layerConfig({ type: 'topk', k: 2 }, 4, 'swiglu', { count: 2, dFF: 3, gate: true }),
      new Rng(0),
    );
    const shapes = Object.fromEntries(Object.entries(layer.variables).map(([k, v]) => [k, v.shape]));
    expect(shapes).toEqual({
      'router.weight': [D, 4],
      'experts.w1': [4, D, 12],
      'experts.w3': [4, D, 12],
      'experts.w2': [4, 12, D],
      'shared.w1': [D, 6],
      'shared.w3': [D, 6],
      'shared.w2': [6, D],
      'shared.gate': [D, 1],
    });
    layer.dispose();
  });

  it('reports parameters, active parameters and FLOPs per token', () => {
    const E = 4;
    const layer = new MoELayer(
      layerConfig({ type: 'topk', k: 2 }, E, 'swiglu', { count: 2, dFF: 3, gate: true }),
      new Rng(0),
    );
    const expert = 3 * D * 12;
    const shared = 3 * D * 6 + D;
    const router = D * E;
    expect(layer.numParams()).toBe(router + E * expert + shared);
    expect(layer.activeParamsPerToken()).toBe(router + 2 * expert + shared);
    expect(layer.flopsPerToken()).toBe(2 * router + 2 * 2 * expert + 2 * shared);
    const total = Object.values(layer.variables).reduce((n, v) => n + v.size, 0);
    expect(layer.numParams()).toBe(total);
    layer.dispose();
  });

  it('returns an empty output and plan for an empty batch (T = 0)', () => {
    const layer = new MoELayer(layerConfig({ type: 'topk', k: 2, capacityFactor: 1.25 }, 4), new Rng(0));
    const x = tf.zeros([0, D]) as Tensor2D;
    const { yTD, plan } = layer.forward(x, { training: true });
    expect(yTD.shape).toEqual([0, D]);
    expect(plan.numTokens).toBe(0);
    expect(plan.topkIdxTK.shape).toEqual([0, 2]);
    expect(plan.capacity).toBe(0);
    expect(Array.from(plan.countsE)).toEqual([0, 0, 0, 0]);
    tf.dispose([x, yTD]);
    disposeRoutingPlan(plan);
    layer.dispose();
  });

  it('rejects bad input and bad configs with clear errors', () => {
    const layer = new MoELayer(layerConfig({ type: 'topk', k: 2 }, 4), new Rng(0));
    const wide = tf.zeros([3, D + 1]) as Tensor2D;
    const ints = tf.zeros([3, D], 'int32') as Tensor2D;
    expect(() => layer.forward(wide, { training: true })).toThrow(
      /`xTD` passed to MoELayer.forward\(\) must have shape \[T, D=8\], got \[3, 9\]/,
    );
    expect(() => layer.forward(ints, { training: true })).toThrow(
      /`xTD` passed to MoELayer.forward\(\) must have dtype float32, got int32/,
    );
    expect(() => layer.forward([[1]] as never, { training: true })).toThrow(
      /`xTD` passed to MoELayer.forward\(\) must be a 2-D float32 tensor/,
    );
    const x = tf.zeros([3, D]) as Tensor2D;
    expect(() => layer.forward(x, undefined as never)).toThrow(
      /`options` passed to MoELayer.forward\(\) must be a RouteOptions object/,
    );
    x.dispose();
    layer.dispose();
    expect(() => layer.forward(wide, { training: true })).toThrow(/MoELayer was disposed/);
    tf.dispose([wide, ints]);

    const base = layerConfig({ type: 'topk', k: 2 }, 4);
    const bad = (cfg: unknown) => () => new MoELayer(cfg as MoELayerConfig, new Rng(0));
    expect(bad({ ...base, experts: { ...base.experts, numExperts: 0 } })).toThrow(
      /`experts.numExperts` passed to MoELayer\(\) must be an integer >= 1, got 0/,
    );
    expect(
      bad({
        ...base,
        router: { ...base.router, numExperts: 0 },
        experts: { ...base.experts, numExperts: 0 },
      }),
    ).toThrow(/SwitchyardError|must be an integer >= 1, got 0/);
    expect(bad({ ...base, router: { ...base.router, numExperts: 5 } })).toThrow(
      /`router.numExperts` passed to MoELayer\(\) must be equal to experts.numExperts \(4\), got 5/,
    );
    expect(bad({ ...base, experts: { ...base.experts, dModel: 4 } })).toThrow(
      /`experts.dModel` passed to MoELayer\(\) must be equal to dModel \(8\), got 4/,
    );
    expect(bad({ ...base, router: { ...base.router, dModel: 4 } })).toThrow(
      /`router.dModel` .* equal to dModel \(8\), got 4/,
    );
    expect(bad({ ...base, computeMode: 'fast' })).toThrow(
      /`computeMode` passed to MoELayer\(\) must be one of/,
    );
    expect(bad({ ...base, shared: { count: 1, dFF: 0, gate: false } })).toThrow(
      /`shared.dFF` passed to MoELayer\(\)/,
    );
    expect(bad({ ...base, router: { ...base.router, k: 9 } })).toThrow(/`k` passed to createRouter\(\)/);
  });

  it('leaks no tensors across forward, backward and disposal', async () => {
    const cfg = layerConfig({ type: 'topk', k: 2, capacityFactor: 1 }, 4, 'swiglu', {
      count: 1,
      dFF: 4,
      gate: true,
    });
    const x = new Rng(4).normalTensor([12, D]) as Tensor2D;
    await expectNoLeaks(() => {
      const layer = new MoELayer(cfg, new Rng(0));
      const vars = Object.values(layer.variables);
      const { value, grads } = tf.variableGrads(() => {
        const { yTD, plan } = layer.forward(x, { training: true });
        return tf.add(tf.sum(yTD), tf.mul(0.01, tf.sum(plan.probsTE))) as tf.Scalar;
      }, vars);
      const { yTD, plan } = layer.forward(x, { training: false });
      disposeRoutingPlan(plan);
      tf.dispose([value, yTD, ...Object.values(grads)]);
      layer.dispose();
    });
    x.dispose();
  });
});

describe('MoELayer training', () => {
  it.skipIf(cpu)('fits a teacher MoE with Adam (loss falls by more than half)', () => {
    const cfg = layerConfig({ type: 'topk', k: 2 }, 4, 'swiglu', { count: 1, dFF: 4, gate: false });
    const teacher = new MoELayer(cfg, new Rng('teacher'));
    const student = new MoELayer(cfg, new Rng('student'));
    const rng = new Rng('fit');
    const x = rng.normalTensor([64, D]) as Tensor2D;
    const target = tf.tidy(() => teacher.forward(x, { training: false }).yTD);
    const opt = tf.train.adam(0.02);
    const vars = Object.values(student.variables);
    const lossAt = () =>
      tf.tidy(
        () => tf.mean(tf.square(tf.sub(student.forward(x, { training: true }).yTD, target))) as tf.Scalar,
      );
    const first = lossAt();
    const initial = first.dataSync()[0]!;
    first.dispose();
    for (let step = 0; step < 60; step++) opt.minimize(lossAt, false, vars);
    const last = lossAt();
    expect(last.dataSync()[0]!).toBeLessThan(0.5 * initial);
    tf.dispose([x, target, last]);
    opt.dispose();
    teacher.dispose();
    student.dispose();
  });
});
