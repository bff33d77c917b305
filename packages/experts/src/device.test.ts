// A layer whose router decides on the device (`decideOn: 'device'`) against the same layer deciding
// on the host: same outputs and gradients, the same plan, and no read to the host in its forward.
import { disposeRoutingPlan, type RouteOptions, type RouterConfig } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it, vi } from 'vitest';
import { maxAbs, maxAbsDiff } from '../test/fakes';
import type { ExpertActivation, MoELayerConfig } from './config';
import { deviceCapacity } from './device';
import { RoutedExperts } from './experts';
import { MoELayer } from './layer';

const D = 8;
const E = 6;
const T = 40;

function layerConfig(
  router: Partial<RouterConfig> & { type: RouterConfig['type'] },
  activation: ExpertActivation = 'swiglu',
): MoELayerConfig {
  return {
    dModel: D,
    router: { numExperts: E, dModel: D, ...router } as RouterConfig,
    experts: { numExperts: E, dModel: D, dFF: 12, activation, initStd: 0.3 },
  };
}

/** The layer's output, its plan's decisions and the gradients of sum(y * probe) by variable name and `x`. */
function run(config: MoELayerConfig, decideOn: 'host' | 'device', options: RouteOptions) {
  const layer = new MoELayer(
    { ...config, router: { ...config.router, decideOn, initStd: 0.5 } as RouterConfig },
    new Rng(4),
  );
  const x = tf.variable(new Rng(5).normalTensor([T, D]) as Tensor2D, true);
  const probe = new Rng(6).normalTensor([T, D]);
  const names = new Map<string, string>([[x.name, 'x']]);
  for (const [name, v] of Object.entries(layer.variables)) names.set(v.name, name);
  let decisions: unknown;
  const { value, grads } = tf.variableGrads(() => {
    const { yTD, plan } = layer.forward(x, options);
    decisions = {
      idx: plan.topkIdxTK.arraySync(),
      kept: plan.keptMaskTK.arraySync(),
      countsE: Array.from(plan.countsE),
      keptCountsE: Array.from(plan.keptCountsE),
      dropRate: plan.dropRate,
    };
    return tf.sum(tf.mul(yTD, probe)) as tf.Scalar;
  }, [x, ...Object.values(layer.variables)]);
  const out: Record<string, tf.Tensor> = {};
  for (const [id, g] of Object.entries(grads)) out[names.get(id)!] = g;
  const y = tf.tidy(() => {
    const { yTD, plan } = layer.forward(x, { ...options, ...(options.rng ? { rng: new Rng(7) } : {}) });
    disposeRoutingPlan(plan);
    return yTD;
  });
  tf.dispose([x, probe]);
  layer.dispose();
  return { value, grads: out, decisions, y };
}

const CASES: [string, MoELayerConfig][] = [
  ['top-2 dropless (C = T)', layerConfig({ type: 'topk', k: 2 })],
  ['top-2, capacity 0.75, position drops', layerConfig({ type: 'topk', k: 2, capacityFactor: 0.75 })],
  [
    'top-3, capacity 1, probs drops',
    layerConfig({ type: 'topk', k: 3, capacityFactor: 1, dropPolicy: 'probs' }),
  ],
  ['switch, capacity 1, GELU', layerConfig({ type: 'switch', capacityFactor: 1 }, 'gelu')],
  ['gshard, capacity 1', layerConfig({ type: 'gshard', capacityFactor: 1 })],
  [
    'sigmoid, group-limited, capacity 1.25',
    layerConfig({
      type: 'sigmoid',
      k: 2,
      groupLimited: { numGroups: 3, groupTopK: 2 },
      capacityFactor: 1.25,
    }),
  ],
];

describe("MoELayer with decideOn: 'device'", () => {
  for (const [name, config] of CASES) {
    it(`${name}: the host path's decisions, output and gradients`, () => {
      const options: RouteOptions = { training: true, rng: new Rng(8), step: 1, totalSteps: 10 };
      const host = run(config, 'host', { ...options, rng: new Rng(8) });
      const device = run(config, 'device', { ...options, rng: new Rng(8) });
      try {
        expect(device.decisions).toEqual(host.decisions);
        const scale = Math.max(1, maxAbs(host.value));
        expect(maxAbsDiff(device.value, host.value) / scale).toBeLessThan(1e-5);
        expect(maxAbsDiff(device.y, host.y) / Math.max(1e-3, maxAbs(host.y))).toBeLessThan(1e-5);
        expect(Object.keys(device.grads).sort()).toEqual(Object.keys(host.grads).sort());
        for (const [k, g] of Object.entries(host.grads)) {
          const rel = maxAbsDiff(device.grads[k]!, g) / Math.max(1e-3, maxAbs(g));
          expect(rel, `gradient of ${k}`).toBeLessThan(1e-5);
        }
      } finally {
        tf.dispose([
          host.value,
          device.value,
          host.y,
          device.y,
          ...Object.values(host.grads),
          ...Object.values(device.grads),
        ]);
      }
    });
  }

  it('reads nothing to the host in the forward (router, dispatch, experts, combine)', () => {
    const layer = new MoELayer(
      { ...CASES[1]![1], router: { ...CASES[1]![1].router, decideOn: 'device' } as RouterConfig },
      new Rng(4),
    );
    const x = new Rng(5).normalTensor([T, D]) as Tensor2D;
    const reads = ['dataSync', 'data', 'arraySync', 'array', 'bufferSync', 'buffer'] as const;
    const spies = reads.map((m) => vi.spyOn(tf.Tensor.prototype, m));
    try {
      const { yTD, plan, computeMode } = layer.forward(x, { training: true });
      const { grads, value } = tf.variableGrads(
        () => tf.sum(layer.forward(x, { training: true }).yTD) as tf.Scalar,
        Object.values(layer.variables),
      );
      expect(spies.map((s) => s.mock.calls.length)).toEqual(reads.map(() => 0));
      expect(computeMode).toBe('padded');
      expect(deviceCapacity(plan)).toBe(Math.ceil(((T * 2) / E) * 0.75));
      tf.dispose([yTD, value, ...Object.values(grads)]);
      disposeRoutingPlan(plan);
    } finally {
      for (const s of spies) s.mockRestore();
      x.dispose();
      layer.dispose();
    }
  });

  it('refuses a bank installed with setExperts(), naming the way out', () => {
    const cfg = CASES[0]![1];
    const layer = new MoELayer(
      { ...cfg, router: { ...cfg.router, decideOn: 'device' } as RouterConfig },
      new Rng(4),
    );
    class OtherBank extends RoutedExperts {}
    const old = layer.setExperts(new OtherBank(cfg.experts, new Rng(1)));
    const x = new Rng(5).normalTensor([T, D]) as Tensor2D;
    try {
      // A subclass of RoutedExperts still holds stacked weights; a bank that is not one is refused.
      const { yTD, plan } = layer.forward(x, { training: false });
      tf.dispose(yTD);
      disposeRoutingPlan(plan);
      const foreign = {
        ...Object.fromEntries(
          ['numExperts', 'dModel', 'dFF', 'activation', 'variables'].map((k) => [
            k,
            (layer.experts as never)[k],
          ]),
        ),
        forwardWithDispatch: () => {
          throw new Error('not used');
        },
        paramsPerExpert: () => layer.experts.paramsPerExpert(),
        numParams: () => layer.experts.numParams(),
        flopsPerAssignment: () => layer.experts.flopsPerAssignment(),
        dispose: () => undefined,
      } as unknown as RoutedExperts;
      const mine = layer.setExperts(foreign);
      expect(() => layer.forward(x, { training: false })).toThrow(
        /decideOn 'device' needs the layer's own RoutedExperts bank.*use decideOn 'host'/,
      );
      layer.setExperts(mine);
    } finally {
      old.dispose();
      x.dispose();
      layer.dispose();
    }
  });

  it('leaves no tensors behind (forward, gradients)', async () => {
    const cfg = CASES[4]![1];
    const layer = new MoELayer(
      { ...cfg, router: { ...cfg.router, decideOn: 'device' } as RouterConfig },
      new Rng(4),
    );
    const x = new Rng(5).normalTensor([T, D]) as Tensor2D;
    await expectNoLeaks(() => {
      const { yTD, plan } = layer.forward(x, { training: true, rng: new Rng(1) });
      yTD.dispose();
      disposeRoutingPlan(plan);
    });
    await expectNoLeaks(() => {
      const { grads, value } = tf.variableGrads(
        () => tf.sum(layer.forward(x, { training: true, rng: new Rng(1) }).yTD) as tf.Scalar,
        Object.values(layer.variables),
      );
      tf.dispose([value, ...Object.values(grads)]);
    });
    x.dispose();
    layer.dispose();
  });
});
