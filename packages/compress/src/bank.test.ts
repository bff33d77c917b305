import { type ComputeMode, type ExpertActivation, RoutedExperts } from '@switchyard/experts';
import type { RoutingPlan } from '@switchyard/routing';
import { checkGradients, expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { disposePlan, fixedPlan, maxAbs, maxAbsDiff, randomIdx } from '../test/plans';
import { CompressedExperts, type MaterializeMode } from './bank';
import { groupingFromAssignment } from './cluster';
import { factorizeExperts } from './factorize';

const [E, D, F] = [4, 6, 8];
const grouping = groupingFromAssignment([0, 1, 1, 0]);

function experts(activation: ExpertActivation, seed = 1): RoutedExperts {
  return new RoutedExperts({ numExperts: E, dModel: D, dFF: F, activation, initStd: 0.3 }, new Rng(seed));
}

interface Batch {
  readonly x: tf.Variable;
  readonly w: tf.Variable;
  readonly plan: RoutingPlan;
  readonly probe: tf.Tensor;
  dispose(): void;
}

function batch(idx: number[][], seed = 2): Batch {
  const rng = new Rng(seed);
  const T = idx.length;
  const [x0, w0] = [rng.normalTensor([T, D]), rng.uniformTensor([T, idx[0]!.length], 0.2, 1)];
  const [x, w] = [tf.variable(x0), tf.variable(w0)];
  tf.dispose([x0, w0]);
  const plan = fixedPlan(idx, E, w as unknown as Tensor2D);
  const probe = rng.normalTensor([T, D]);
  return {
    x,
    w,
    plan,
    probe,
    dispose: () => {
      disposePlan(plan);
      tf.dispose([x, w, probe]);
    },
  };
}

/** Loss sum(bank(x) * probe) and its gradients by name: `x`, `w` (combine weights) and the bank's variables. */
function lossAndGrads(
  bank: RoutedExperts | CompressedExperts,
  b: Batch,
  mode: ComputeMode = 'dropless',
): { value: number; y: tf.Tensor; grads: Record<string, tf.Tensor> } {
  const names = new Map<string, string>([
    [b.x.name, 'x'],
    [b.w.name, 'w'],
  ]);
  for (const [n, v] of Object.entries(bank.variables)) names.set(v.name, n);
  const y = bank.forward(b.x as unknown as Tensor2D, b.plan, mode);
  const { value, grads } = tf.variableGrads(
    () => tf.sum(tf.mul(bank.forward(b.x as unknown as Tensor2D, b.plan, mode), b.probe)) as tf.Scalar,
    [b.x, b.w, ...Object.values(bank.variables)],
  );
  const out: Record<string, tf.Tensor> = {};
  for (const [id, g] of Object.entries(grads)) out[names.get(id)!] = g;
  const v = value.dataSync()[0]!;
  value.dispose();
  return { value: v, y, grads: out };
}

/** The chain rule from full-expert gradients dW_e to factor gradients: dS_g = sum dW_e, dU = dW Vt^T, dVt = U^T dW. */
function expectedFactorGrads(
  bank: CompressedExperts,
  full: Record<string, tf.Tensor>,
  m: 'w1' | 'w3' | 'w2',
): { shared: tf.Tensor; u: tf.Tensor; vt: tf.Tensor } {
  return tf.tidy(() => {
    const dW = tf.unstack(full[m]!);
    const u = tf.unstack(bank.variables[`${m}_u`]!);
    const vt = tf.unstack(bank.variables[`${m}_vt`]!);
    const shared = tf.stack(bank.grouping.groups.map((members) => tf.addN(members.map((e) => dW[e]!))));
    return {
      shared,
      u: tf.stack(dW.map((g, e) => tf.matMul(g, vt[e]!, false, true))),
      vt: tf.stack(dW.map((g, e) => tf.matMul(u[e]!, g, true, false))),
    };
  });
}

const relTol = (t: tf.Tensor) => 2e-4 * Math.max(1, maxAbs(t));

describe('CompressedExperts', () => {
  for (const activation of ['swiglu', 'gelu'] as const) {
    for (const materialize of ['never', 'always'] as MaterializeMode[]) {
      it(`at full rank reproduces the original outputs and gradients (${activation}, materialize ${materialize})`, () => {
        const original = experts(activation);
        const { bank, errors } = CompressedExperts.fromWeights(
          original.weights(),
          activation,
          { rank: Math.min(D, F), grouping },
          { materialize },
        );
        expect(Math.max(...errors.map((e) => e.total))).toBeLessThan(1e-5);
        const b = batch(randomIdx(new Rng(3), 9, 2, [0, 1, 2, 3]));
        const ref = lossAndGrads(original, b);
        const got = lossAndGrads(bank, b);
        expect(maxAbsDiff(got.y, ref.y)).toBeLessThan(relTol(ref.y));
        expect(got.value).toBeCloseTo(ref.value, 3);
        for (const n of ['x', 'w'])
          expect(maxAbsDiff(got.grads[n]!, ref.grads[n]!)).toBeLessThan(relTol(ref.grads[n]!));
        for (const m of activation === 'swiglu' ? (['w1', 'w3', 'w2'] as const) : (['w1', 'w2'] as const)) {
          const want = expectedFactorGrads(bank, ref.grads, m);
          expect(maxAbsDiff(got.grads[`${m}_shared`]!, want.shared)).toBeLessThan(relTol(want.shared));
          expect(maxAbsDiff(got.grads[`${m}_u`]!, want.u)).toBeLessThan(relTol(want.u));
          expect(maxAbsDiff(got.grads[`${m}_vt`]!, want.vt)).toBeLessThan(relTol(want.vt));
          tf.dispose(want);
        }
        tf.dispose([ref.y, got.y, ...Object.values(ref.grads), ...Object.values(got.grads)]);
        b.dispose();
        bank.dispose();
        original.dispose();
      });
    }
  }

  it('with one group of one expert it equals the original expert, at any rank', () => {
    const original = experts('swiglu', 4);
    const { bank, errors } = CompressedExperts.fromWeights(original.weights(), 'swiglu', {
      rank: 1,
      grouping: groupingFromAssignment([0, 1, 2, 3]),
    });
    expect(errors.every((e) => e.total < 1e-7)).toBe(true);
    const b = batch(randomIdx(new Rng(5), 7, 2, [0, 1, 2, 3]));
    const ref = lossAndGrads(original, b);
    const got = lossAndGrads(bank, b);
    expect(maxAbsDiff(got.y, ref.y)).toBeLessThan(relTol(ref.y));
    expect(maxAbsDiff(got.grads.x!, ref.grads.x!)).toBeLessThan(relTol(ref.grads.x!));
    // the bases receive exactly the experts' gradients
    expect(maxAbsDiff(got.grads.w1_shared!, ref.grads.w1!)).toBeLessThan(relTol(ref.grads.w1!));
    tf.dispose([ref.y, got.y, ...Object.values(ref.grads), ...Object.values(got.grads)]);
    b.dispose();
    bank.dispose();
    original.dispose();
  });

  it('below full rank computes the materialised experts, factored or not, and its errors fall with rank', () => {
    const original = experts('swiglu', 6);
    const totals = [1, 3, 6].map((rank) => {
      const { errors } = factorizeExperts(original.weights(), 'swiglu', { rank, grouping });
      return Math.max(...errors.map((e) => e.total));
    });
    expect(totals[0]).toBeGreaterThan(totals[1]!);
    expect(totals[1]).toBeGreaterThan(totals[2]!);
    const { factors } = factorizeExperts(original.weights(), 'swiglu', { rank: 2, grouping });
    const b = batch(randomIdx(new Rng(7), 40, 2, [0, 1, 2, 3]));
    const materialized = new CompressedExperts(factors).materializedWeights();
    const full = new RoutedExperts({ numExperts: E, dModel: D, dFF: F, activation: 'swiglu' }, materialized);
    tf.dispose(Object.values(materialized));
    const ref = full.forward(b.x as unknown as Tensor2D, b.plan);
    for (const materialize of ['never', 'always', 'auto'] as const) {
      const bank = new CompressedExperts(factors, { materialize });
      const y = bank.forward(b.x as unknown as Tensor2D, b.plan);
      expect(maxAbsDiff(y, ref)).toBeLessThan(relTol(ref));
      tf.dispose(y);
      bank.dispose();
    }
    // the padded path (batched products over materialised experts) agrees too
    const bank = new CompressedExperts(factors);
    const padded = lossAndGrads(bank, b, 'padded');
    const dropless = lossAndGrads(bank, b, 'dropless');
    expect(maxAbsDiff(padded.y, ref)).toBeLessThan(relTol(ref));
    for (const n of Object.keys(dropless.grads))
      expect(maxAbsDiff(padded.grads[n]!, dropless.grads[n]!)).toBeLessThan(relTol(dropless.grads[n]!));
    tf.dispose([ref, padded.y, dropless.y, ...Object.values(padded.grads), ...Object.values(dropless.grads)]);
    bank.dispose();
    full.dispose();
    b.dispose();
    original.dispose();
  });

  it('its input gradient matches finite differences', () => {
    const original = experts('swiglu', 8);
    const { factors } = factorizeExperts(original.weights(), 'swiglu', { rank: 2, grouping });
    for (const materialize of ['never', 'always'] as const) {
      const bank = new CompressedExperts(factors, { materialize });
      const b = batch(randomIdx(new Rng(9), 5, 2, [0, 1, 2, 3]));
      checkGradients((x) => bank.forward(x as Tensor2D, b.plan), [b.x], {
        eps: 1e-2,
        atol: 5e-3,
        rtol: 3e-2,
      });
      b.dispose();
      bank.dispose();
    }
    original.dispose();
  });

  it('does not touch groups a batch does not route to', () => {
    const original = experts('swiglu', 10);
    const { bank } = CompressedExperts.fromWeights(original.weights(), 'swiglu', { rank: 2, grouping });
    const b = batch(randomIdx(new Rng(11), 6, 2, grouping.groups[0]!)); // experts 0 and 3 only
    const got = lossAndGrads(bank, b);
    expect(bank.stats().groupUses).toEqual([2, 0]); // the output and the loss: two forwards
    expect(maxAbs(tf.slice(got.grads.w1_shared!, [1], [1]))).toBe(0);
    expect(maxAbs(tf.slice(got.grads.w2_u!, [1], [2]))).toBe(0); // experts 1 and 2 (group 1)
    expect(maxAbs(tf.slice(got.grads.w1_shared!, [0], [1]))).toBeGreaterThan(0);
    tf.dispose([got.y, ...Object.values(got.grads)]);
    b.dispose();
    bank.dispose();
    original.dispose();
  });

  it('offloads cold groups: loads on use, counts loads and evictions, same outputs', () => {
    const original = experts('swiglu', 12);
    const { factors } = factorizeExperts(original.weights(), 'swiglu', { rank: 2, grouping });
    const resident = new CompressedExperts(factors);
    const offloaded = new CompressedExperts(factors, { offload: { residentGroups: 1 } });
    expect(Object.keys(offloaded.variables)).toEqual([]);
    expect(offloaded.numParams()).toBe(resident.numParams());
    const runs = [grouping.groups[0]!, grouping.groups[0]!, grouping.groups[1]!, [0, 1, 2, 3]];
    const expected = [
      { loads: 1, evictions: 0, resident: [0] },
      { loads: 1, evictions: 0, resident: [0] },
      { loads: 2, evictions: 1, resident: [1] },
      { loads: 3, evictions: 2, resident: [1] }, // both groups needed: group 0 loaded, then the LRU evicted
    ];
    runs.forEach((allowed, i) => {
      const b = batch(randomIdx(new Rng(13 + i), 5, 2, allowed));
      const y = offloaded.forward(b.x as unknown as Tensor2D, b.plan);
      const ref = resident.forward(b.x as unknown as Tensor2D, b.plan);
      expect(maxAbsDiff(y, ref)).toBeLessThan(relTol(ref));
      const { loads, evictions, resident: res } = offloaded.stats();
      expect({ loads, evictions, resident: res }).toEqual(expected[i]);
      tf.dispose([y, ref]);
      b.dispose();
    });
    resident.dispose();
    offloaded.dispose();
    original.dispose();
  });

  it('counts its parameters from the formula', () => {
    const original = experts('swiglu');
    const { bank } = CompressedExperts.fromWeights(original.weights(), 'swiglu', { rank: 3, grouping });
    expect(bank.numParams()).toBe(2 * 3 * D * F + E * 3 * 3 * (D + F));
    expect(bank.numParams()).toBe(Object.values(bank.variables).reduce((n, v) => n + v.size, 0));
    expect(bank.paramsPerExpert()).toBe(3 * (D * F + 3 * (D + F)));
    bank.dispose();
    original.dispose();
  });

  it('rejects bad input, naming the constraint', () => {
    const original = experts('swiglu');
    const w = original.weights();
    expect(() => factorizeExperts(w, 'swiglu', { rank: 7, grouping })).toThrow(
      /`rank` passed to factorizeExperts\(\) must be <= min\(d_in, d_out\) = min\(6, 8\) = 6.*got 7/,
    );
    expect(() =>
      factorizeExperts(w, 'swiglu', { rank: 2, grouping: groupingFromAssignment([0, 1]) }),
    ).toThrow(/options.grouping.groupOf.*one group index per expert \(4\), got 2/);
    expect(() => factorizeExperts(w, 'swiglu', { rank: 0, grouping })).toThrow(/`rank`.*>= 1, got 0/);
    const { factors } = factorizeExperts(w, 'swiglu', { rank: 2, grouping });
    expect(() => new CompressedExperts({ ...factors, rank: 3 })).toThrow(/factors.matrices.w1/);
    expect(() => new CompressedExperts(factors, { offload: { residentGroups: 3 } })).toThrow(
      /residentGroups.*\[1, 2\], got 3/,
    );
    const bank = new CompressedExperts(factors);
    bank.dispose();
    const b = batch([[0, 1]]);
    expect(() => bank.forward(b.x as unknown as Tensor2D, b.plan)).toThrow(/CompressedExperts was disposed/);
    b.dispose();
    original.dispose();
  });

  it('releases everything it allocates (training step, offloaded inference)', async () => {
    const original = experts('swiglu');
    const { factors } = factorizeExperts(original.weights(), 'swiglu', { rank: 2, grouping });
    await expectNoLeaks(() => {
      for (const options of [{}, { materialize: 'always' as const }, { offload: { residentGroups: 1 } }]) {
        const bank = new CompressedExperts(factors, options);
        const b = batch(randomIdx(new Rng(20), 6, 2, [0, 1, 2, 3]));
        const got = lossAndGrads(bank, b);
        tf.dispose([got.y, ...Object.values(got.grads)]);
        const x0 = tf.zeros([0, D]) as Tensor2D;
        const w0 = tf.zeros([0, 2]) as Tensor2D;
        const empty = fixedPlan([], E, w0);
        tf.dispose(bank.forward(x0, empty));
        disposePlan(empty);
        tf.dispose([x0, w0]);
        b.dispose();
        bank.dispose();
      }
    });
    original.dispose();
  });
});
