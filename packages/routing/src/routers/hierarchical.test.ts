import { checkGradients, expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { describe, expect, it } from 'vitest';
import { createRouter, disposeRoutingPlan, resolveRouterConfig, UNEVALUATED_LOGIT } from '../index';
import { routeHierarchical } from './hierarchical';

/** Host reference: full group and expert softmaxes from the weights, in float64. */
function reference(x: number[][], wg: number[][], we: number[][], G: number, P: number, K: number) {
  const E = we[0]!.length;
  const M = E / G;
  const dot = (row: number[], w: number[][], c: number) => row.reduce((s, v, d) => s + v * w[d]![c]!, 0);
  const softmaxRow = (v: number[]) => {
    const m = Math.max(...v);
    const e = v.map((z) => Math.exp(z - m));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((z) => z / s);
  };
  return x.map((row) => {
    const pg = softmaxRow(Array.from({ length: G }, (_, g) => dot(row, wg, g)));
    const groups = pg
      .map((p, g) => [p, g] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, P)
      .map(([, g]) => g);
    const probs = new Array(E).fill(0);
    for (const g of groups) {
      const pe = softmaxRow(Array.from({ length: M }, (_, i) => dot(row, we, g * M + i)));
      for (let i = 0; i < M; i++) probs[g * M + i] = pg[g]! * pe[i]!;
    }
    const chosen = probs
      .map((p, e) => [p, e] as const)
      .filter(([p]) => p > 0)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, K);
    const denom = chosen.reduce((s, [p]) => s + p, 0);
    return { groups, probs, idx: chosen.map(([, e]) => e), w: chosen.map(([p]) => p / denom) };
  });
}

describe('hierarchical router', () => {
  for (const [G, P, K] of [
    [4, 1, 2],
    [4, 2, 3],
    [2, 1, 1],
  ] as const) {
    it(`matches a float64 reference: G=${G}, groupK=${P}, K=${K}, E=8`, () => {
      const r = createRouter({
        type: 'hierarchical',
        numExperts: 8,
        numGroups: G,
        groupK: P,
        k: K,
        dModel: 5,
        initStd: 1,
        seed: 9,
      });
      const x = new Rng(G * 10 + P).normalTensor([7, 5]) as Tensor2D;
      const plan = r.route(x, { training: false });
      const ref = reference(
        x.arraySync(),
        r.variables.groupWeight!.arraySync() as number[][],
        r.variables.expertWeight!.arraySync() as number[][],
        G,
        P,
        K,
      );
      const probs = plan.probsTE.arraySync();
      const w = plan.topkWeightTK.arraySync();
      const logits = plan.logitsTE.arraySync();
      for (let t = 0; t < 7; t++) {
        expect(Array.from(plan.groupIdx!.subarray(t * P, (t + 1) * P)).sort()).toEqual(
          [...ref[t]!.groups].sort(),
        );
        expect(Array.from(plan.expertIdx.subarray(t * K, (t + 1) * K))).toEqual(ref[t]!.idx);
        for (let e = 0; e < 8; e++) {
          expect(probs[t]![e]!).toBeCloseTo(ref[t]!.probs[e]!, 5);
          const evaluated = ref[t]!.groups.includes(Math.floor(e / (8 / G)));
          if (evaluated) expect(logits[t]![e]!).toBeGreaterThan(-1e3);
          else expect(logits[t]![e]!).toBe(UNEVALUATED_LOGIT);
        }
        for (let j = 0; j < K; j++) expect(w[t]![j]!).toBeCloseTo(ref[t]!.w[j]!, 5);
      }
      expect(plan.groupProbsTG!.shape).toEqual([7, G]);
      disposeRoutingPlan(plan);
      x.dispose();
      r.dispose();
    });
  }

  it('reports the O(G*D + groupK*(E/G)*D) cost, and its variables', () => {
    const r = createRouter({ type: 'hierarchical', numExperts: 256, numGroups: 16, k: 2, dModel: 64 });
    const flat = createRouter({ type: 'topk', numExperts: 256, k: 2, dModel: 64 });
    expect(r.flopsPerToken()).toBe(2 * (16 * 64 + 16 * 64));
    expect(flat.flopsPerToken()).toBe(2 * 256 * 64);
    expect(r.variables.groupWeight!.shape).toEqual([64, 16]);
    expect(r.variables.expertWeight!.shape).toEqual([64, 256]);
    expect(r.numParams()).toBe(64 * 16 + 64 * 256);
    r.dispose();
    flat.dispose();
  });

  it('selection bias shifts the choice inside the group, not the weights', () => {
    const r = createRouter({
      type: 'hierarchical',
      numExperts: 4,
      numGroups: 2,
      k: 1,
      dModel: 3,
      initStd: 1,
      seed: 1,
    });
    const x = new Rng(4).normalTensor([5, 3]) as Tensor2D;
    const plain = r.route(x, { training: false });
    // Prefer the second expert of each group (experts 1 and 3).
    const bias = Float32Array.of(0, 10, 0, 10);
    const biased = r.route(x, { training: false, selectionBiasE: bias });
    for (let t = 0; t < 5; t++) expect(biased.expertIdx[t]! % 2).toBe(1);
    // K = 1 renormalised: the weight is 1 whichever expert is chosen.
    expect(Array.from(biased.topkWeightTK.dataSync()).map((v) => Math.round(v * 1e5) / 1e5)).toEqual([
      1, 1, 1, 1, 1,
    ]);
    expect(Array.from(biased.groupIdx!)).toEqual(Array.from(plain.groupIdx!));
    disposeRoutingPlan(plain);
    disposeRoutingPlan(biased);
    x.dispose();
    r.dispose();
  });

  it('gradients flow to both levels and the input', () => {
    const cfg = resolveRouterConfig({
      type: 'hierarchical',
      numExperts: 6,
      numGroups: 3,
      groupK: 2,
      k: 3,
      dModel: 3,
    });
    const rng = new Rng(8);
    const x = rng.normalTensor([4, 3]);
    const wg = rng.normalTensor([3, 3], 0, 1.5);
    const we = rng.normalTensor([3, 6], 0, 1.5);
    const f = (xi: tf.Tensor, g: tf.Tensor, e: tf.Tensor) =>
      routeHierarchical(cfg, g as Tensor2D, e as Tensor2D, xi as Tensor2D, { training: false }).topkWeightTK;
    checkGradients(f, [x, wg, we], { eps: 1e-3, atol: 3e-3, rtol: 3e-2 });
    // The group prototypes also reach the probabilities (what balance losses read).
    const gProbs = tf.tidy(
      () =>
        tf
          .grad((g: tf.Tensor) =>
            tf.sum(
              tf.square(
                routeHierarchical(cfg, g as Tensor2D, we as Tensor2D, x as Tensor2D, { training: false })
                  .probsTE,
              ),
            ),
          )(wg)
          .abs()
          .sum()
          .dataSync()[0]!,
    );
    expect(gProbs).toBeGreaterThan(1e-4);
    tf.dispose([x, wg, we]);
  });

  it('random-routing warm-up picks random groups', () => {
    const r = createRouter({
      type: 'hierarchical',
      numExperts: 8,
      numGroups: 4,
      k: 1,
      dModel: 2,
      randomRoutingWarmup: 0.5,
    });
    const x = tf.tidy(() => tf.tile(tf.tensor2d([[1, 2]]), [200, 1])) as Tensor2D;
    const warm = r.route(x, { training: true, step: 0, totalSteps: 10, rng: new Rng(3) });
    const learned = r.route(x, { training: true, step: 5, totalSteps: 10, rng: new Rng(3) });
    expect(new Set(warm.groupIdx).size).toBe(4);
    expect(new Set(learned.groupIdx).size).toBe(1);
    expect(warm.randomRouted).toBe(true);
    disposeRoutingPlan(warm);
    disposeRoutingPlan(learned);
    x.dispose();
    r.dispose();
  });

  it('leaves no tensors behind (routing and gradients)', async () => {
    const r = createRouter({
      type: 'hierarchical',
      numExperts: 8,
      numGroups: 4,
      k: 2,
      dModel: 3,
      capacityFactor: 1,
    });
    const x = new Rng(1).normalTensor([9, 3]) as Tensor2D;
    await expectNoLeaks(() => disposeRoutingPlan(r.route(x, { training: true })));
    await expectNoLeaks(() => {
      const { value, grads } = tf.variableGrads(
        () => tf.sum(r.route(x, { training: true }).topkWeightTK) as tf.Scalar,
      );
      tf.dispose([value, ...Object.values(grads)]);
    });
    x.dispose();
    r.dispose();
  });
});
