import { checkGradients, expectNoLeaks, Rng, type Tensor2D, type Tensor3D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import {
  disposePlanExceptWeights,
  fixedPlan,
  maxAbs,
  maxAbsDiff,
  naiveMoE,
  randomRouting,
} from '../test/fakes';
import type { ExpertActivation } from './config';
import { buildDispatch, combine, dispatch } from './dispatch';
import { groupedExperts, resolveComputeMode } from './grouped';

const rng = new Rng('grouped');
const cpu = process.env.SWITCHYARD_BACKEND === 'cpu';

interface Case {
  readonly T: number;
  readonly D: number;
  readonly F: number;
  readonly E: number;
  readonly K: number;
  readonly drop: number;
  readonly capacity: number | null;
}

function setup(c: Case, activation: ExpertActivation) {
  const r = rng.fork(`${activation}/${c.T}/${c.E}/${c.drop}`);
  const x = r.normalTensor([c.T, c.D]) as Tensor2D;
  const w1 = r.normalTensor([c.E, c.D, c.F], 0, 0.5) as Tensor3D;
  const w3 = activation === 'swiglu' ? (r.normalTensor([c.E, c.D, c.F], 0, 0.5) as Tensor3D) : undefined;
  const w2 = r.normalTensor([c.E, c.F, c.D], 0, 0.5) as Tensor3D;
  const wTK = r.uniformTensor([c.T, c.K], 0.1, 1) as Tensor2D;
  const routing = randomRouting(r, c.T, c.K, c.E, c.drop);
  const plan = fixedPlan({ ...routing, capacity: c.capacity }, wTK);
  const inputs = [x, wTK, w1, ...(w3 ? [w3] : []), w2];
  const dispose = () => {
    tf.dispose(inputs);
    disposePlanExceptWeights(plan);
  };
  return { x, w1, w3, w2, wTK, plan, inputs, dispose };
}

/** Layer output as a function of (x, combine weights, w1, [w3], w2), through the grouped path or the naive loop. */
function layerFn(
  plan: ReturnType<typeof setup>['plan'],
  activation: ExpertActivation,
  mode: 'dropless' | 'padded' | 'naive',
) {
  const d = buildDispatch(plan);
  return (...t: tf.Tensor[]): tf.Tensor => {
    const [x, wTK, w1] = t as [Tensor2D, Tensor2D, Tensor3D];
    const w3 = activation === 'swiglu' ? (t[3] as Tensor3D) : undefined;
    const w2 = t[t.length - 1] as Tensor3D;
    const p = { ...plan, topkWeightTK: wTK };
    if (mode === 'naive') return naiveMoE(x, p, w1, w3, w2, activation);
    const weights = w3 ? { w1EDF: w1, w3EDF: w3, w2EFD: w2 } : { w1EDF: w1, w2EFD: w2 };
    return combine(groupedExperts(dispatch(x, d), d, weights, activation, mode), wTK, d);
  };
}

/** Forward value and the gradient of every input for a fixed random output weighting. */
function valueAndGrads(f: (...t: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], probe: tf.Tensor) {
  return tf.tidy(() => {
    const y = f(...inputs);
    const grads = tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(f(...t), probe)))(inputs);
    return [y, ...grads];
  });
}

const cases: Record<string, Case> = {
  'dropless routing': { T: 24, D: 8, F: 12, E: 5, K: 2, drop: 0, capacity: null },
  'capacity with drops': { T: 24, D: 8, F: 12, E: 4, K: 3, drop: 0.3, capacity: 16 },
  'more experts than tokens (empty experts)': { T: 3, D: 6, F: 4, E: 9, K: 2, drop: 0, capacity: null },
};

describe('groupedExperts equals a naive loop over experts with index-add (forward and every gradient)', () => {
  for (const activation of ['swiglu', 'gelu', 'relu'] as const) {
    for (const [name, c] of Object.entries(cases)) {
      it(`${activation}, ${name}`, () => {
        const s = setup(c, activation);
        const probe = rng.normalTensor([c.T, c.D]);
        const ref = valueAndGrads(layerFn(s.plan, activation, 'naive'), s.inputs, probe);
        for (const mode of ['dropless', 'padded'] as const) {
          const got = valueAndGrads(layerFn(s.plan, activation, mode), s.inputs, probe);
          got.forEach((g, i) => {
            expect(g.shape).toEqual(ref[i]!.shape);
            const scale = Math.max(1, maxAbs(ref[i]!));
            expect(maxAbsDiff(g, ref[i]!) / scale, `${mode} output ${i}`).toBeLessThan(2e-5);
          });
          tf.dispose(got);
        }
        tf.dispose([...ref, probe]);
        s.dispose();
      });
    }
  }

  it('gradients match finite differences (SwiGLU, both modes)', () => {
    const c: Case = { T: 6, D: 4, F: 5, E: 3, K: 2, drop: 0.2, capacity: 5 };
    const s = setup(c, 'swiglu');
    for (const mode of ['dropless', 'padded'] as const) {
      const res = checkGradients(layerFn(s.plan, 'swiglu', mode), s.inputs, {
        maxChecksPerInput: cpu ? 8 : 16,
      });
      expect(res.checked).toBeGreaterThan(0);
    }
    s.dispose();
  });
});

describe('groupedExperts edge cases and errors', () => {
  it('an empty dispatch (every slot dropped) gives [0, D] rows and a zero layer output', () => {
    const wTK = tf.ones([2, 1]) as Tensor2D;
    const plan = fixedPlan({ idx: [[0], [1]], kept: [[0], [0]], numExperts: 2 }, wTK);
    const d = buildDispatch(plan);
    const x = tf.ones([2, 3]) as Tensor2D;
    const w = { w1EDF: tf.ones([2, 3, 4]) as Tensor3D, w2EFD: tf.ones([2, 4, 3]) as Tensor3D };
    const ySD = groupedExperts(dispatch(x, d), d, w, 'relu', 'dropless');
    expect(ySD.shape).toEqual([0, 3]);
    expect(combine(ySD, wTK, d).arraySync()).toEqual([
      [0, 0, 0],
      [0, 0, 0],
    ]);
    tf.dispose([wTK, x, w.w1EDF, w.w2EFD, ySD]);
    disposePlanExceptWeights(plan);
  });

  it('rejects weights of the wrong shape, kind or dtype', () => {
    const s = setup({ T: 4, D: 3, F: 2, E: 2, K: 1, drop: 0, capacity: null }, 'swiglu');
    const d = buildDispatch(s.plan);
    const xSD = dispatch(s.x, d);
    const bad = tf.zeros([2, 4, 2]) as Tensor3D;
    const int = tf.zeros([2, 3, 2], 'int32') as Tensor3D;
    expect(() => groupedExperts(xSD, d, { w1EDF: s.w1, w2EFD: s.w2 }, 'swiglu')).toThrow(
      /`weights.w3EDF` passed to groupedExperts\(\) must be a tensor \[E, D, F\] for SwiGLU experts, got undefined/,
    );
    expect(() => groupedExperts(xSD, d, { w1EDF: bad, w3EDF: s.w3!, w2EFD: s.w2 }, 'swiglu')).toThrow(
      /`weights.w1EDF` passed to groupedExperts\(\) must have shape \[E=2, D=3, F\], got \[2, 4, 2\]/,
    );
    expect(() => groupedExperts(xSD, d, { w1EDF: int, w3EDF: s.w3!, w2EFD: s.w2 }, 'swiglu')).toThrow(
      /`weights.w1EDF` passed to groupedExperts\(\) must have dtype float32, got int32/,
    );
    expect(() => groupedExperts(xSD, d, { w1EDF: s.w1, w3EDF: s.w3!, w2EFD: s.w2 }, 'gelu')).toThrow(
      /`weights.w3EDF` .* must be undefined for gelu experts/,
    );
    expect(() => groupedExperts(xSD, d, { w1EDF: s.w1, w3EDF: s.w3!, w2EFD: s.w2 }, 'tanh' as never)).toThrow(
      /`activation` passed to groupedExperts\(\) must be one of "swiglu", "gelu", "relu", got "tanh"/,
    );
    expect(() => resolveComputeMode('fast' as never, null)).toThrow(
      /`mode` passed to resolveComputeMode\(\)/,
    );
    tf.dispose([xSD, bad, int]);
    s.dispose();
  });

  it('auto resolves to dropless on wasm and cpu', () => {
    expect(resolveComputeMode('auto', null)).toBe('dropless');
    expect(resolveComputeMode('auto', 12)).toBe('dropless');
    expect(resolveComputeMode('padded', null)).toBe('padded');
  });

  it('leaks no tensors, forward or backward, in either mode', async () => {
    const s = setup({ T: 10, D: 4, F: 6, E: 4, K: 2, drop: 0.2, capacity: 6 }, 'swiglu');
    for (const mode of ['dropless', 'padded'] as const) {
      const f = layerFn(s.plan, 'swiglu', mode);
      await expectNoLeaks(() => tf.grads((...t: tf.Tensor[]) => tf.sum(f(...t)))(s.inputs), mode);
      await expectNoLeaks(() => tf.tidy(() => f(...s.inputs)), `${mode} forward`);
    }
    s.dispose();
  });
});
