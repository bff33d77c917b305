import type { RoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { BalanceController, type BalanceSettings } from './balance';

/** A plan of T tokens where every token picks expert `e` (K = 1) with uniform scores over E experts. */
function plan(
  T: number,
  E: number,
  e: number,
): Pick<RoutingPlan, 'probsTE' | 'logitsTE' | 'countsE' | 'expertIdx' | 'k'> {
  const countsE = new Int32Array(E);
  countsE[e] = T;
  return {
    probsTE: tf.fill([T, E], 1 / E) as tf.Tensor2D,
    logitsTE: tf.zeros([T, E]) as tf.Tensor2D,
    countsE,
    expertIdx: new Int32Array(T).fill(e),
    k: 1,
  };
}

const base: BalanceSettings = {
  method: 'micro',
  alpha: 0.01,
  localRatio: 0.01,
  biasUpdateRate: 1e-3,
  zLoss: 0,
  numLayers: 1,
  numExperts: 4,
  seqLen: 4,
  seed: 1,
};

function lossOf(c: BalanceController, plans: ReturnType<typeof plan>[], micro: number): number {
  return tf.tidy(() => {
    c.observe(plans as RoutingPlan[], micro);
    const l = c.loss(plans as RoutingPlan[], micro);
    const v = l ? l.dataSync()[0]! : 0;
    return v;
  });
}

describe('BalanceController', () => {
  it('micro: alpha * E * sum f P, from this micro-batch alone', () => {
    const c = new BalanceController(base);
    // f = (1, 0, 0, 0), P = 1/4 each: loss = 0.01 * 4 * 1/4 = 0.01
    expect(lossOf(c, [plan(8, 4, 0)], 0)).toBeCloseTo(0.01, 6);
  });

  it('global: frequencies pooled over the micro-batches of the step, reset after it', () => {
    const c = new BalanceController({ ...base, method: 'global' });
    expect(lossOf(c, [plan(8, 4, 0)], 0)).toBeCloseTo(0.01, 6);
    // Pooled counts now (8, 8, 0, 0): f = (1/2, 1/2, 0, 0): loss = 0.01 * 4 * (1/2 * 1/4 * 2) = 0.01
    expect(lossOf(c, [plan(8, 4, 1)], 1)).toBeCloseTo(0.01, 6);
    c.afterStep();
    expect(lossOf(c, [plan(8, 4, 2)], 0)).toBeCloseTo(0.01, 6);
  });

  it('none and loss-free add no loss; the z-loss adds coef * mean LSE^2', () => {
    expect(
      new BalanceController({ ...base, method: 'none' }).loss([plan(4, 4, 0) as RoutingPlan], 0),
    ).toBeNull();
    const z = new BalanceController({ ...base, method: 'none', zLoss: 1e-3 });
    // logits all zero: LSE = log 4
    expect(lossOf(z, [plan(4, 4, 0)], 0)).toBeCloseTo(1e-3 * Math.log(4) ** 2, 6);
  });

  it('loss-free: moves the bias of overloaded experts down once per step, and restores its state', () => {
    const c = new BalanceController({ ...base, method: 'loss-free' });
    tf.tidy(() => {
      c.observe([plan(8, 4, 0) as RoutingPlan], 0);
      c.observe([plan(8, 4, 0) as RoutingPlan], 1);
    });
    expect(Array.from(c.selectionBias(0)!)).toEqual([0, 0, 0, 0]);
    c.afterStep();
    const b = Array.from(c.selectionBias(0)!);
    expect(b[0]).toBeCloseTo(-1e-3, 8);
    expect(b[1]).toBeCloseTo(1e-3, 8);
    const again = new BalanceController({ ...base, method: 'loss-free' });
    again.loadState(JSON.parse(JSON.stringify(c.state())));
    expect(Array.from(again.selectionBias(0)!)).toEqual(Array.from(c.selectionBias(0)!));
  });

  it('shuffled: resumes with the same random draws', () => {
    const a = new BalanceController({ ...base, method: 'shuffled', numExperts: 4 });
    lossOf(a, [plan(4, 4, 0)], 0);
    a.afterStep();
    const state = JSON.parse(JSON.stringify(a.state()));
    const b = new BalanceController({ ...base, method: 'shuffled', numExperts: 4 });
    b.loadState(state);
    const mixed = (): ReturnType<typeof plan> => {
      const p = plan(8, 4, 0);
      const idx = Int32Array.from([0, 1, 2, 3, 0, 1, 2, 0]);
      return { ...p, expertIdx: idx, countsE: Int32Array.from([3, 2, 2, 1]) };
    };
    expect(lossOf(b, [mixed()], 0)).toBeCloseTo(lossOf(a, [mixed()], 0), 7);
  });

  it('leaks no tensors inside the gradient tape, as the trainer uses it', async () => {
    const init = tf.zeros([4]);
    const w = tf.variable(init, true, 'balance-test-w');
    init.dispose();
    const step = (c: BalanceController): void => {
      for (let m = 0; m < 2; m++) {
        const { value, grads } = tf.variableGrads(() => {
          const logitsTE = tf.tile(w.reshape([1, 4]), [4, 1]) as tf.Tensor2D;
          const p = {
            ...plan(4, 4, m),
            logitsTE,
            probsTE: tf.softmax(logitsTE) as tf.Tensor2D,
          } as RoutingPlan;
          c.observe([p], m);
          return c.loss([p], m)!;
        }, [w]);
        value.dispose();
        tf.dispose(grads);
      }
      c.afterStep();
    };
    for (const method of ['micro', 'global+local', 'shuffled', 'sequence'] as const) {
      const c = new BalanceController({ ...base, method, zLoss: 1e-3 });
      step(c);
      await expectNoLeaks(() => step(c), method);
    }
    w.dispose();
  });
});
