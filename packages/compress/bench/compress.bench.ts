// Forward + backward time and memory of a compressed expert bank against the uncompressed experts it
// came from, at the same routing (same top-K plan), on the selected backend (wasm by default).
//   pnpm --filter @switchyard/compress bench
// Options (env): SWITCHYARD_BACKEND=wasm|cpu|tensorflow, BENCH_T (tokens, 4096), BENCH_REPS (rounds, 3),
//   BENCH_CASES (comma list of G:r, default 2:16,4:16,2:64).
//
// Layer: T tokens, D = 256, F = 512, E = 8 SwiGLU experts, softmax top-2 routing (dropless) from a
// fixed router. Every case computes the gradients of every weight and of the input. Cases run
// interleaved, round after round, and each reports its best round, so load from other processes
// inflates every case alike. Memory: the bank's weights, and the tensors held between the forward
// and the backward (what the backward keeps), both in bytes.
import { buildDispatch, RoutedExperts } from '@switchyard/experts';
import { createRouter, disposeRoutingPlan } from '@switchyard/routing';
import { initBackend, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { CompressedExperts, clusterExperts, compressionRatio, structuralSimilarity } from '../src/index';

const T = Number(process.env.BENCH_T ?? 4096);
const [D, F, E, K] = [256, 512, 8, 2];
const CASES = (process.env.BENCH_CASES ?? '2:16,4:16,2:64')
  .split(',')
  .map((c) => c.split(':').map(Number) as [number, number]);
const info = await initBackend({
  backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | 'tensorflow' | undefined) ?? 'wasm',
});
const reps = Number(process.env.BENCH_REPS ?? (info.name === 'cpu' ? 1 : 3));

const rng = new Rng('bench');
const x = tf.variable(rng.normalTensor([T, D]), true) as unknown as Tensor2D;
const dy = rng.normalTensor([T, D]);
const router = createRouter({ type: 'topk', numExperts: E, k: K, dModel: D, initStd: 0.5, seed: 1 });
const plan = router.route(x, { training: false });
const dispatchPlan = buildDispatch(plan);
const experts = new RoutedExperts(
  { numExperts: E, dModel: D, dFF: F, activation: 'swiglu' },
  rng.fork('experts'),
);

interface Case {
  readonly label: string;
  readonly bank: RoutedExperts | CompressedExperts;
  readonly times: number[];
  heldBytes: number;
}

const cases: Case[] = [{ label: 'uncompressed E=8', bank: experts, times: [], heldBytes: 0 }];
for (const [G, r] of CASES) {
  const grouping = clusterExperts(structuralSimilarity(experts.weights()), { numGroups: G, equalSize: true });
  const { bank } = CompressedExperts.fromWeights(experts.weights(), 'swiglu', { rank: r, grouping });
  cases.push({ label: `compressed G=${G} r=${r}`, bank, times: [], heldBytes: 0 });
}

/** One forward + backward; records the bytes live at the end of the forward above the baseline. */
function fwdBwd(c: Case): void {
  const base = tf.memory().numBytes;
  const { value, grads } = tf.variableGrads(() => {
    const y = c.bank.forwardWithDispatch(x, plan, dispatchPlan, 'auto').yTD;
    const loss = tf.sum(tf.mul(y, dy)) as tf.Scalar;
    c.heldBytes = Math.max(c.heldBytes, tf.memory().numBytes - base);
    return loss;
  });
  value.dataSync();
  tf.dispose([value, ...Object.values(grads)]);
}

for (const c of cases) fwdBwd(c); // warm-up
for (let round = 0; round < reps; round++) {
  for (const c of cases) {
    const t0 = performance.now();
    fwdBwd(c);
    c.times.push(performance.now() - t0);
  }
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(2)} MiB`;
const baseMs = Math.min(...cases[0]!.times);
console.log(
  `backend ${info.name}, T = ${T}, D = ${D}, F = ${F}, E = ${E}, top-${K}, dropless; best of ${reps} round(s)\n`,
);
console.log('| case | fwd+bwd | vs uncompressed | weights | held for backward | ratio (formula) |');
console.log('|---|---|---|---|---|---|');
for (const c of cases) {
  const ms = Math.min(...c.times);
  const weights = 4 * c.bank.numParams();
  const ratio =
    c.bank instanceof CompressedExperts
      ? `${(experts.numParams() / c.bank.numParams()).toFixed(3)}x (${compressionRatio({ groupSize: E / c.bank.grouping.numGroups, dIn: D, dOut: F, rank: c.bank.rank }).toFixed(3)}x)`
      : '1x';
  console.log(
    `| ${c.label} | ${ms.toFixed(1)} ms | ${(ms / baseMs).toFixed(2)} | ${mib(weights)} | ${mib(c.heldBytes)} | ${ratio} |`,
  );
}
const worst = Math.max(...cases.slice(1).map((c) => Math.min(...c.times) / baseMs));
console.log(`\ncompressed/uncompressed time ratio, worst case: ${worst.toFixed(2)} (target <= 1.2)`);
for (const c of cases) c.bank.dispose();
disposeRoutingPlan(plan);
router.dispose();
tf.dispose([x, dy]);
