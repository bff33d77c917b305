import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { identityRouter, logRows, readPlan, round } from '../../test/helpers';
import { createRouter, disposeRoutingPlan } from '../index';
import { expertChoiceCapacity } from './expertChoice';

describe('expert choice', () => {
  it('each expert takes its top k = ceil(T*c/E) tokens; K of the plan is E', () => {
    const r = identityRouter({ type: 'expert-choice', numExperts: 2, dModel: 2, capacityFactor: 1 });
    // 4 tokens, 2 experts, c = 1: k = 2 tokens per expert.
    const x = logRows([
      [0.9, 0.1],
      [0.6, 0.4],
      [0.3, 0.7],
      [0.8, 0.2],
    ]);
    const plan = r.route(x, { training: true });
    expect(plan.k).toBe(2);
    expect(plan.capacity).toBe(2);
    expect(r.k).toBe(1);
    // Expert 0 takes tokens 0 (0.9) and 3 (0.8); expert 1 takes tokens 2 (0.7) and 1 (0.4).
    expect(readPlan(plan).kept).toEqual([
      [1, 0],
      [0, 1],
      [0, 1],
      [1, 0],
    ]);
    expect(round(readPlan(plan).w)).toEqual([
      [0.9, 0],
      [0, 0.4],
      [0, 0.7],
      [0.8, 0],
    ]);
    expect(Array.from(plan.keptCountsE)).toEqual([2, 2]);
    expect(plan.unroutedTokens).toBe(0);
    expect(plan.dropRate).toBe(0);
    disposeRoutingPlan(plan);
    x.dispose();
    r.dispose();
  });

  it('a token can get no expert, or several', () => {
    const r = identityRouter({ type: 'expert-choice', numExperts: 2, dModel: 2, capacityFactor: 1 });
    const x = logRows([
      [0.5, 0.5],
      [0.5, 0.5],
      [0.1, 0.9],
      [0.9, 0.1],
    ]);
    const plan = r.route(x, { training: false });
    // Both experts prefer tokens 0 and 1 after their favourite; token 0 (earlier) wins ties.
    expect(readPlan(plan).kept).toEqual([
      [1, 1],
      [0, 0],
      [0, 1],
      [1, 0],
    ]);
    expect(plan.unroutedTokens).toBe(1);
    disposeRoutingPlan(plan);
    x.dispose();
    r.dispose();
  });

  it('capacity k = ceil(T*c/E) is clamped to [1, T]', () => {
    expect(expertChoiceCapacity(16, 8, 2)).toBe(4);
    expect(expertChoiceCapacity(10, 4, 1.25)).toBe(4);
    expect(expertChoiceCapacity(2, 8, 0.1)).toBe(1);
    expect(expertChoiceCapacity(3, 2, 8)).toBe(3);
  });

  it('leaks the future: token 0 loses its expert when a later token changes', () => {
    // Causal-LM hazard: expert choice ranks all T tokens against each other, so changing token 3
    // (a future position for token 0) changes where token 0 is routed.
    const r = identityRouter({ type: 'expert-choice', numExperts: 2, dModel: 2, capacityFactor: 0.5 });
    // T = 4, E = 2, c = 0.5: each expert takes k = 1 token.
    const before = logRows([
      [0.8, 0.2],
      [0.5, 0.5],
      [0.4, 0.6],
      [0.3, 0.7],
    ]);
    const after = logRows([
      [0.8, 0.2],
      [0.5, 0.5],
      [0.4, 0.6],
      [0.95, 0.05], // only the last token differs
    ]);
    const p1 = r.route(before, { training: false });
    const p2 = r.route(after, { training: false });
    const token0 = (p: typeof p1) => Array.from(p.kept.subarray(0, 2));
    expect(token0(p1)).toEqual([1, 0]);
    expect(token0(p2)).toEqual([0, 0]);
    // Token 0's combine weights change too, although its own input did not.
    expect(readPlan(p1).w[0]![0]!).toBeGreaterThan(0);
    expect(readPlan(p2).w[0]![0]!).toBe(0);
    // Token-choice routing (dropless) of token 0 does not depend on later tokens.
    const tc = identityRouter({ type: 'topk', numExperts: 2, dModel: 2, k: 1 });
    const q1 = tc.route(before, { training: false });
    const q2 = tc.route(after, { training: false });
    expect(Array.from(q1.expertIdx.subarray(0, 1))).toEqual(Array.from(q2.expertIdx.subarray(0, 1)));
    expect(readPlan(q1).w[0]).toEqual(readPlan(q2).w[0]);
    for (const p of [p1, p2, q1, q2]) disposeRoutingPlan(p);
    tf.dispose([before, after]);
    r.dispose();
    tc.dispose();
  });

  it("evalRouting 'causal': each token takes its own top round(c) experts, whatever the later tokens", () => {
    const cfg = { type: 'expert-choice', numExperts: 3, dModel: 3, capacityFactor: 0.5 } as const;
    const causal = identityRouter({ ...cfg, evalCapacityFactor: 1.6, evalRouting: 'causal' });
    const rows = [
      [0.7, 0.2, 0.1],
      [0.1, 0.3, 0.6],
      [0.2, 0.5, 0.3],
    ];
    const a = logRows(rows);
    const b = logRows([...rows.slice(0, 2), [0.9, 0.05, 0.05]]);
    const p1 = causal.route(a, { training: false });
    const p2 = causal.route(b, { training: false });
    // c = 1.6 at evaluation: round(c) = 2 experts per token, weights the raw probabilities.
    expect(round(readPlan(p1).w)).toEqual([
      [0.7, 0.2, 0],
      [0, 0.3, 0.6],
      [0, 0.5, 0.3],
    ]);
    expect(Array.from(p1.countsE)).toEqual([1, 3, 2]);
    expect(p1.capacity).toBeNull();
    expect(p1.unroutedTokens).toBe(0);
    // The first two tokens route the same when the third changes.
    expect(readPlan(p2).w.slice(0, 2)).toEqual(readPlan(p1).w.slice(0, 2));
    // Training still routes by expert: c = 0.5, T = 3: each expert takes ceil(0.5) = 1 token.
    const t = causal.route(a, { training: true });
    expect(Array.from(t.countsE)).toEqual([1, 1, 1]);
    expect(t.capacity).toBe(1);
    for (const p of [p1, p2, t]) disposeRoutingPlan(p);
    tf.dispose([a, b]);
    causal.dispose();
    expect(() => createRouter({ ...cfg, evalRouting: 'future' as never })).toThrow(
      /`evalRouting` passed to createRouter\(\) must be one of/,
    );
  });

  it('rejects the options it cannot honour', () => {
    expect(() =>
      createRouter({
        type: 'expert-choice',
        numExperts: 4,
        dModel: 2,
        groupLimited: { numGroups: 2, groupTopK: 1 },
      } as never),
    ).toThrow(/`groupLimited` passed to createRouter\(\) must be undefined for a expert-choice router/);
    expect(() =>
      createRouter({ type: 'expert-choice', numExperts: 4, dModel: 2, randomRoutingWarmup: 0.1 }),
    ).toThrow(
      /`randomRoutingWarmup` passed to createRouter\(\) must be 0 for a expert-choice router, got 0\.1/,
    );
  });

  it('weights differentiate w.r.t. the router weight', () => {
    const r = createRouter({ type: 'expert-choice', numExperts: 3, dModel: 4, initStd: 1, seed: 2 });
    const x = new Rng(5).normalTensor([6, 4]) as Tensor2D;
    const { grads, value } = tf.variableGrads(
      () => tf.sum(tf.square(r.route(x, { training: true }).topkWeightTK)) as tf.Scalar,
    );
    expect(grads[r.variables.weight!.name]!.abs().sum().dataSync()[0]).toBeGreaterThan(0);
    tf.dispose([value, ...Object.values(grads), x]);
    r.dispose();
  });

  it('leaves no tensors behind', async () => {
    const r = createRouter({ type: 'expert-choice', numExperts: 4, dModel: 3 });
    const x = new Rng(1).normalTensor([10, 3]) as Tensor2D;
    await expectNoLeaks(() => disposeRoutingPlan(r.route(x, { training: true })));
    x.dispose();
    r.dispose();
  });
});
