import type { RoutingPlan } from '@switchyard/routing';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import type { BankOutput, ExpertBank } from './bank';
import type { ComputeMode, MoELayerConfig } from './config';
import type { DispatchPlan } from './dispatch';
import { RoutedExperts } from './experts';
import { MoELayer } from './layer';

const D = 8;
const config: MoELayerConfig = {
  dModel: D,
  router: { type: 'topk', numExperts: 4, k: 2, dModel: D },
  experts: { numExperts: 4, dModel: D, dFF: 12, activation: 'swiglu', initStd: 0.3 },
  shared: { count: 1, dFF: 6, gate: true },
};

/** A bank that wraps another and counts its calls: the layer must route through whatever bank it holds. */
class CountingBank implements ExpertBank {
  calls = 0;
  disposed = false;
  constructor(readonly inner: ExpertBank) {}
  get numExperts() {
    return this.inner.numExperts;
  }
  get dModel() {
    return this.inner.dModel;
  }
  get dFF() {
    return this.inner.dFF;
  }
  get activation() {
    return this.inner.activation;
  }
  get variables() {
    return this.inner.variables;
  }
  forwardWithDispatch(xTD: Tensor2D, plan: RoutingPlan, d: DispatchPlan, mode: ComputeMode): BankOutput {
    this.calls++;
    return this.inner.forwardWithDispatch(xTD, plan, d, mode);
  }
  paramsPerExpert() {
    return this.inner.paramsPerExpert();
  }
  numParams() {
    return this.inner.numParams();
  }
  flopsPerAssignment() {
    return this.inner.flopsPerAssignment();
  }
  dispose() {
    this.disposed = true;
    this.inner.dispose();
  }
}

function outputOf(layer: MoELayer, xTD: Tensor2D): Float32Array {
  const { yTD, plan } = layer.forward(xTD, { training: false });
  const y = yTD.dataSync() as Float32Array;
  yTD.dispose();
  disposeRoutingPlan(plan);
  return y;
}

describe('ExpertBank', () => {
  it('a layer computes through the bank it holds, and setExperts swaps it and its variables', () => {
    const layer = new MoELayer(config, new Rng(1));
    const x = new Rng(2).normalTensor([6, D]) as Tensor2D;
    const before = outputOf(layer, x);
    const local = layer.experts;
    const counting = new CountingBank(local);
    expect(layer.setExperts(counting)).toBe(local);
    expect(layer.experts).toBe(counting);
    expect(Array.from(outputOf(layer, x))).toEqual(Array.from(before));
    expect(counting.calls).toBe(1);
    expect(layer.variables['experts.w1']).toBe(local.variables.w1);

    // a bank with other weights changes the output and the layer's variables
    const other = new RoutedExperts(config.experts, new Rng(99));
    layer.setExperts(other);
    expect(layer.variables['experts.w1']).toBe(other.variables.w1);
    const changed = outputOf(layer, x);
    expect(Math.max(...changed.map((v, i) => Math.abs(v - before[i]!)))).toBeGreaterThan(1e-4);
    expect(layer.setExperts(counting)).toBe(other);
    other.dispose();
    layer.dispose();
    expect(counting.disposed).toBe(true); // the layer owns the bank it holds
    x.dispose();
  });

  it('a layer built with a bank uses it; RoutedExperts from given weights computes like the original', () => {
    const a = new MoELayer(config, new Rng(3));
    const copy = new RoutedExperts(config.experts, (a.experts as RoutedExperts).weights());
    const b = new MoELayer(config, new Rng(3), { experts: copy });
    expect(b.experts).toBe(copy);
    expect(copy.variables.w1).not.toBe(a.experts.variables.w1);
    const x = new Rng(4).normalTensor([5, D]) as Tensor2D;
    expect(Array.from(outputOf(b, x))).toEqual(Array.from(outputOf(a, x)));
    expect(b.numParams()).toBe(a.numParams());
    a.dispose();
    b.dispose();
    x.dispose();
  });

  it('rejects a bank that does not fit the layer', () => {
    const layer = new MoELayer(config, new Rng(5));
    const wide = new RoutedExperts({ ...config.experts, dFF: 16 }, new Rng(0));
    expect(() => layer.setExperts(wide)).toThrow(
      /`bank.dFF` passed to MoELayer.setExperts\(\) must be 12 like the layer's experts, got 16/,
    );
    expect(() => layer.setExperts({} as ExpertBank)).toThrow(
      /`bank` passed to MoELayer.setExperts\(\) must be an ExpertBank/,
    );
    expect(() => new MoELayer(config, new Rng(5), { experts: wide })).toThrow(
      /`options.experts.dFF` passed to MoELayer\(\) must be 12 like the layer's experts, got 16/,
    );
    const w = (layer.experts as RoutedExperts).weights();
    expect(() => new RoutedExperts({ ...config.experts, numExperts: 2 }, w)).toThrow(
      /`init.w1EDF` passed to RoutedExperts\(\) must be a tensor \[2, 8, 12\], got \[4, 8, 12\]/,
    );
    wide.dispose();
    layer.dispose();
    expect(() => layer.setExperts(wide)).toThrow(/MoELayer was disposed/);
  });

  it('releases everything it allocates', async () => {
    await expectNoLeaks(() => {
      const layer = new MoELayer(config, new Rng(6));
      const x = tf.ones([3, D]) as Tensor2D;
      const swapped = layer.setExperts(
        new RoutedExperts(config.experts, (layer.experts as RoutedExperts).weights()),
      );
      swapped.dispose();
      const { value, grads } = tf.variableGrads(
        () => tf.sum(layer.forward(x, { training: true }).yTD) as tf.Scalar,
        Object.values(layer.variables),
      );
      tf.dispose([x, value, grads]);
      layer.dispose();
    });
  });
});
