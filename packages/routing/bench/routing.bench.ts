// Router cost per token on the selected backend (wasm by default).
//   pnpm --filter @switchyard/routing bench          (SWITCHYARD_BACKEND=cpu, BENCH_T, BENCH_D to change)
// 1. Softmax top-k routing (scores, decisions, combine weights; inference) for E in {8, 64, 256}, K in {1, 2, 8}.
// 2. Hierarchical (G = 16 groups of 16) vs flat top-k at E = 256, against the O(G*d + (E/G)*d) prediction.
import { initBackend, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { createRouter, disposeRoutingPlan, type RouterConfig } from '../src/index';

const T = Number(process.env.BENCH_T ?? 1024);
const D = Number(process.env.BENCH_D ?? 512);
const info = await initBackend({
  backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm',
});
const reps = info.name === 'cpu' ? 3 : 9;

/** Median wall time in ms of one route call (plan tensors read back, then disposed). */
function timeRoute(config: RouterConfig, x: Tensor2D, training: boolean): number {
  const router = createRouter(config);
  const run = () => {
    const plan = router.route(x, { training, rng: new Rng(1) });
    plan.topkWeightTK.dataSync();
    disposeRoutingPlan(plan);
  };
  run(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  router.dispose();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Median ms of two routers' calls, alternating between them. */
function timeRoutePair(a: RouterConfig, b: RouterConfig, xTD: Tensor2D): [number, number] {
  const routers = [createRouter(a), createRouter(b)];
  const times: number[][] = [[], []];
  for (let i = 0; i <= 2 * reps; i++) {
    routers.forEach((router, j) => {
      const t0 = performance.now();
      const plan = router.route(xTD, { training: false });
      plan.topkWeightTK.dataSync();
      disposeRoutingPlan(plan);
      if (i > 0) times[j]!.push(performance.now() - t0); // the first round warms up
    });
  }
  for (const r of routers) r.dispose();
  return times.map((ts) => ts.sort((p, q) => p - q)[Math.floor(ts.length / 2)]!) as [number, number];
}

const x = new Rng(0).normalTensor([T, D]) as Tensor2D;
console.log(`backend: ${info.name} (${info.reason}); T=${T}, D=${D}; median of ${reps}`);
console.log('');
timeRoute({ type: 'topk', numExperts: 8, k: 1, dModel: D }, x, false); // JIT warm-up, discarded
console.log('softmax top-k router, inference (scores + decisions + combine weights)');
console.log(`${'E'.padStart(5)} ${'K'.padStart(3)} ${'ms/call'.padStart(9)} ${'us/token'.padStart(9)}`);
for (const E of [8, 64, 256]) {
  for (const K of [1, 2, 8]) {
    if (K > E) continue;
    const ms = timeRoute({ type: 'topk', numExperts: E, k: K, dModel: D, capacityFactor: 1.25 }, x, false);
    console.log(
      `${String(E).padStart(5)} ${String(K).padStart(3)} ${ms.toFixed(2).padStart(9)} ${((ms * 1000) / T).toFixed(2).padStart(9)}`,
    );
  }
}

const E = 256;
const G = 16;
const flatCfg: RouterConfig = { type: 'topk', numExperts: E, k: 2, dModel: D };
const hierCfg: RouterConfig = {
  type: 'hierarchical',
  numExperts: E,
  numGroups: G,
  groupK: 1,
  k: 2,
  dModel: D,
};
// Interleaved (flat, hierarchical, flat, ...) so load drift on a shared machine hits both alike.
const [flatMs, hierMs] = timeRoutePair(flatCfg, hierCfg, x);
const flat = createRouter(flatCfg);
const hier = createRouter(hierCfg);
const predicted = hier.flopsPerToken() / flat.flopsPerToken(); // (G*d + (E/G)*d) / (E*d)
flat.dispose();
hier.dispose();

// The score products alone (what the cost formula counts): x @ W [D, E] against x @ Wg [D, G] plus,
// per group, [T/G, D] @ [D, E/G] over a balanced split of the tokens (blocks prepared in advance).
const wFlat = tf.randomNormal([D, E]);
const wGroup = tf.randomNormal([D, G]);
const per = T / G;
const xBlocks = Array.from({ length: G }, () => tf.randomNormal([per, D]));
const wBlocks = Array.from({ length: G }, () => tf.randomNormal([D, E / G]));
const timeOps = (fn: () => tf.Tensor): number => {
  const once = () => tf.tidy(() => void fn().dataSync());
  once();
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    once();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
};
const flatOpsMs = timeOps(() => tf.matMul(x, wFlat));
const hierOpsMs = timeOps(() => {
  const parts = [tf.matMul(x, wGroup).sum()];
  for (let g = 0; g < G; g++) parts.push(tf.matMul(xBlocks[g]!, wBlocks[g]!).sum());
  return tf.addN(parts);
});
tf.dispose([wFlat, wGroup, ...xBlocks, ...wBlocks, x]);

console.log('');
console.log(
  `E=${E}, K=2: flat top-k vs hierarchical (G=${G}, ${E / G} experts per group, 1 group per token)`,
);
console.log(`${'router'.padEnd(34)} ${'ms/call'.padStart(9)} ${'us/token'.padStart(9)}`);
const row = (name: string, ms: number) =>
  console.log(`${name.padEnd(34)} ${ms.toFixed(2).padStart(9)} ${((ms * 1000) / T).toFixed(2).padStart(9)}`);
row('flat route()', flatMs);
row('hierarchical route()', hierMs);
row('flat score product', flatOpsMs);
row('hierarchical score products', hierOpsMs);
console.log('');
console.log(`predicted router-cost ratio (G*d + (E/G)*d) / (E*d): ${predicted.toFixed(3)}`);
console.log(`hierarchical/flat score-product time ratio E=256: ${(hierOpsMs / flatOpsMs).toFixed(3)}`);
console.log(`hierarchical/flat router time ratio E=256: ${(hierMs / flatMs).toFixed(3)}`);
