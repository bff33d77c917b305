import { createLocalCommunicator, flatLayout, flatRange, readFlat } from '@switchyard/parallel';
import { expectNoLeaks, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { AdamW, HostAdamW, momentTensors } from './adamw';
import { OptimizerStep, resolvePlacement } from './optimizer-step';

const CFG = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

/** A matrix (decayed) and a vector (not decayed), with the same values in every call. */
function makeVars(tag: string): Map<string, tf.Variable> {
  return new Map<string, tf.Variable>([
    ['mat', tf.variable(tf.tensor2d([0.5, -1, 2, 0.1, 0.3, -0.7], [2, 3]), true, `${tag}-mat`)],
    ['vec', tf.variable(tf.tensor1d([1, -2, 0.25]), true, `${tag}-vec`)],
  ]);
}

/** Gradients of step t: fixed values, large enough at t = 1 to be clipped at norm 1. */
function gradsAt(t: number): Map<string, tf.Tensor> {
  const s = t === 1 ? 5 : 0.3;
  return new Map<string, tf.Tensor>([
    ['mat', tf.tensor2d([0.1 * s, -0.2, 0.3 * s, 0.05, -t * 0.1, 0.2], [2, 3])],
    ['vec', tf.tensor1d([s, -0.5, 0.1 * t])],
  ]);
}

function values(vars: Map<string, tf.Variable>): number[] {
  return [...vars.values()].flatMap((v) => Array.from(v.dataSync()));
}

describe('HostAdamW', () => {
  it('computes the tensor AdamW update, also split into ranges', () => {
    const ref = makeVars('ref');
    const host = makeVars('host');
    const adam = new AdamW(ref, CFG);
    const layout = flatLayout(host);
    // two owners of [0, 4) and [4, 9): the matrix is cut across them
    const halves = [0, 1].map((r) => new HostAdamW(layout, flatRange(layout, r, 2), CFG));
    expect(halves.map((h) => h.range)).toEqual([
      { start: 0, end: 5 },
      { start: 5, end: 9 },
    ]);
    for (let t = 0; t < 4; t++) {
      const g = gradsAt(t);
      adam.step(g, 0.01, 0.5);
      const gradN = new Float32Array([...g.values()].flatMap((x) => Array.from(x.dataSync())));
      const all = readFlat(layout);
      for (const h of halves) {
        const { start, end } = h.range;
        const part = all.slice(start, end);
        h.step(gradN.slice(start, end), part, 0.01, 0.5);
        all.set(part, start);
      }
      [...host.values()].forEach((v, j) => {
        const { offset, size } = layout.entries[j]!;
        v.assign(tf.tensor(all.subarray(offset, offset + size), v.shape));
      });
      tf.dispose([...g.values()]);
    }
    const a = values(ref);
    values(host).forEach((x, i) => {
      expect(x).toBeCloseTo(a[i]!, 6);
    });
    // Checkpoints are interchangeable: the tensor optimizer's moments load into a range.
    const saved = adam.stateTensors();
    const restored = new HostAdamW(layout, flatRange(layout, 1, 2), CFG);
    restored.loadState(4, saved);
    expect(restored.stepCount).toBe(4);
    for (const kind of ['m', 'v'] as const) {
      restored[kind].forEach((x, i) => {
        expect(x).toBeCloseTo(halves[1]![kind][i]!, 7);
      });
    }
    const whole = new Float32Array(9);
    whole.set(halves[0]!.m, 0);
    whole.set(halves[1]!.m, 5);
    const named = momentTensors(layout, whole, whole);
    expect(named['m/mat']!.shape).toEqual([2, 3]);
    named['m/mat']!.dataSync().forEach((x, i) => {
      expect(x).toBeCloseTo(saved['m/mat']!.dataSync()[i]!, 7);
    });
    expect(() => restored.loadState(1, { 'm/mat': saved['m/mat']! })).toThrow(/optimizer state lacks m\/vec/);
    expect(() => halves[0]!.step(new Float32Array(3), new Float32Array(5), 0.1)).toThrow(
      /HostAdamW.step: expected 5 gradient and parameter values \(the range \[0, 5\)\), got 3 and 5/,
    );
    expect(() => new HostAdamW(layout, { start: 4, end: 12 }, CFG)).toThrow(/range \[4, 12\) is not inside/);
    tf.dispose(Object.values(named));
    adam.dispose();
    tf.dispose([...ref.values(), ...host.values()]);
  });
});

describe('OptimizerStep', () => {
  it('gives the same weights on the host and on the backend, clipping alike', () => {
    const comm = createLocalCommunicator();
    const onHost = makeVars('on-host');
    const onBackend = makeVars('on-backend');
    const host = new OptimizerStep(comm, onHost, CFG, 'host', 1);
    const backend = new OptimizerStep(comm, onBackend, CFG, 'backend', 1);
    for (let t = 0; t < 3; t++) {
      const a = host.apply(gradsAt(t), 0.02);
      const b = backend.apply(gradsAt(t), 0.02);
      expect(a.norm).toBeCloseTo(b.norm, 4);
      expect(a.nonFinite).toEqual([]);
      expect(a.syncMs).toBe(0);
      if (t === 1) expect(a.norm).toBeGreaterThan(1); // the clipped step
    }
    expect(host.stepCount).toBe(3);
    const w = values(onBackend);
    values(onHost).forEach((x, i) => {
      expect(x).toBeCloseTo(w[i]!, 6);
    });
    const s1 = host.stateTensors();
    const s2 = backend.stateTensors();
    expect(Object.keys(s1).sort()).toEqual(Object.keys(s2).sort());
    for (const k of Object.keys(s1)) {
      Array.from(s1[k]!.dataSync()).forEach((x, i) => {
        expect(x).toBeCloseTo(s2[k]!.dataSync()[i]!, 6);
      });
    }
    host.releaseState(s1);
    backend.releaseState(s2);
    backend.dispose();
    host.dispose();
    tf.dispose([...onHost.values(), ...onBackend.values()]);
  });

  it('names non-finite gradients and leaves the weights alone', () => {
    const comm = createLocalCommunicator();
    for (const placement of ['host', 'backend'] as const) {
      const vars = makeVars(`nan-${placement}`);
      const before = values(vars);
      const opt = new OptimizerStep(comm, vars, CFG, placement, 1);
      const g = gradsAt(0);
      const bad = tf.tensor1d([0, Number.NaN, 1]);
      g.get('vec')!.dispose();
      g.set('vec', bad);
      const r = opt.apply(g, 0.01);
      expect(r.nonFinite).toEqual(['vec']);
      expect(Number.isFinite(r.norm)).toBe(false);
      expect(values(vars)).toEqual(before);
      opt.dispose();
      tf.dispose([...vars.values()]);
    }
  });

  it('runs AdamW as tensor ops unless sharding on the host is asked for', () => {
    expect(resolvePlacement('auto')).toBe('backend');
    expect(resolvePlacement('host')).toBe('host');
    expect(resolvePlacement('backend')).toBe('backend');
  });

  it('leaks no tensors', async () => {
    const comm = createLocalCommunicator();
    for (const placement of ['host', 'backend'] as const) {
      const vars = makeVars(`leak-${placement}`);
      await expectNoLeaks(() => {
        const opt = new OptimizerStep(comm, vars, CFG, placement, 1);
        opt.apply(gradsAt(0), 0.01);
        opt.releaseState(opt.stateTensors());
        opt.dispose();
      });
      tf.dispose([...vars.values()]);
    }
  });
});
