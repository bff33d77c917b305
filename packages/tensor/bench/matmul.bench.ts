// Forward vs backward matMul throughput at 1024x1024 on the selected backend (wasm by default).
//   pnpm --filter @switchyard/tensor bench            (SWITCHYARD_BACKEND=cpu to compare)
// Backward = both operand gradients of C = A B (2 products), through the registered gradient.
// Then grouped products at mixture-of-experts shapes (D 256, F 512): Switchyard's kernel
// (groupedMatMul, one segment) against tfjs's XNNPACK product (for NT and TN: an explicit transpose,
// then the NN product, since tf.matMul with a transpose flag runs Switchyard's kernel on wasm), and
// all E experts' products in one call at E = 8 and 64 over the same rows. BENCH_GEMM_REPS (5) interleaved rounds, best kept.
import { groupedMatMul, groupedMatMulIsFused, groupedMatMulTransposeA, initBackend, tf } from '../src/index';

const N = Number(process.env.BENCH_N ?? 1024);
const info = await initBackend({
  backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm',
});

function timeIt(label: string, flops: number, fn: () => tf.Tensor | tf.Tensor[], reps: number): number {
  const run = () => {
    const out = fn();
    const list = Array.isArray(out) ? out : [out];
    for (const t of list) t.dataSync();
    tf.dispose(list);
  };
  run(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    run();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)]!;
  const gflops = flops / (median / 1000) / 1e9;
  console.log(
    `${label.padEnd(44)} ${median.toFixed(1).padStart(8)} ms  ${gflops.toFixed(2).padStart(7)} GFLOP/s`,
  );
  return gflops;
}

const a = tf.randomNormal([N, N], 0, 1, 'float32', 1);
const b = tf.randomNormal([N, N], 0, 1, 'float32', 2);
const dy = tf.randomNormal([N, N], 0, 1, 'float32', 3);
const reps = info.name === 'cpu' ? 3 : 7;
const flop = 2 * N * N * N;
const grad = tf.getGradient('BatchMatMul')!;

console.log(`backend: ${info.name} (${info.reason}); N=${N}; median of ${reps}`);
const fwd = timeIt('forward  A@B', flop, () => tf.matMul(a, b), reps);
timeIt('forward  A@B^T (transposed operand)', flop, () => tf.matMul(a, b, false, true), reps);
const bwd = timeIt(
  'backward dA = dC B^T, dB = A^T dC',
  2 * flop,
  () => {
    const g = grad.gradFunc(dy, [a, b], { transposeA: false, transposeB: false }) as Record<
      string,
      () => tf.Tensor
    >;
    return tf.tidy(() => [g.a!(), g.b!()]);
  },
  reps,
);
const total = timeIt(
  'tf.grads of sum(A@B * dC) (fwd + bwd)',
  3 * flop,
  () => tf.tidy(() => tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y), dy)))([a, b])),
  reps,
);
// Attention-shaped batched products: one call with batch 32 vs the same FLOPs as one 2-D product.
const qa = tf.randomNormal([32, 128, 32], 0, 1, 'float32', 4);
const kb = tf.randomNormal([32, 32, 128], 0, 1, 'float32', 5);
const flat = tf.randomNormal([32 * 128, 32], 0, 1, 'float32', 6);
const w = tf.randomNormal([32, 128], 0, 1, 'float32', 7);
const bflop = 2 * 32 * 128 * 32 * 128;
const batched = timeIt('batched [32,128,32]@[32,32,128]', bflop, () => tf.matMul(qa, kb), reps);
const plain = timeIt('2-D [4096,32]@[32,128] (same FLOPs)', bflop, () => tf.matMul(flat, w), reps);
tf.dispose([a, b, dy, qa, kb, flat, w]);
console.log(`batched/2-D matmul GFLOP/s ratio: ${(batched / plain).toFixed(2)}`);
void total;
console.log(`matmul backward/forward GFLOP/s ratio: ${(bwd / fwd).toFixed(2)}`);

// ---------------------------------------------------------------------------------------------
// Grouped products at expert shapes.

/** Runs the cases round after round (load spikes then hit every case alike); best time of each, ms. */
function interleaved(cases: (() => tf.Tensor)[], rounds: number): number[] {
  const best = cases.map(() => Number.POSITIVE_INFINITY);
  for (let r = -1; r < rounds; r++) {
    cases.forEach((fn, i) => {
      const t0 = performance.now();
      const out = fn();
      out.dataSync();
      const ms = performance.now() - t0;
      out.dispose();
      if (r >= 0) best[i] = Math.min(best[i]!, ms);
    });
  }
  return best;
}

const gemmReps = Number(process.env.BENCH_GEMM_REPS ?? (info.name === 'cpu' ? 1 : 5));
const gf = (flop: number, ms: number) => (flop / (ms / 1000) / 1e9).toFixed(2).padStart(6);
console.log(
  `\ngrouped products (${groupedMatMulIsFused() ? "Switchyard's wasm kernel" : 'per-segment tf.matMul'}); best of ${gemmReps} interleaved rounds; GFLOP/s`,
);
console.log('(tf: XNNPACK; NT and TN as an explicit transpose, then the NN product)');
console.log(
  `${'shape'.padEnd(28)} ${'NN tf'.padStart(6)} ${'ours'.padStart(6)} ${'NT tf'.padStart(6)} ${'ours'.padStart(6)} ${'TN tf'.padStart(6)} ${'ours'.padStart(6)}`,
);
for (const [M, K, Nn] of [
  [128, 256, 512],
  [1024, 256, 512],
  [128, 512, 256],
  [1024, 512, 256],
] as const) {
  const x = tf.randomNormal([M, K], 0, 1, 'float32', 8) as tf.Tensor2D;
  const w = tf.randomNormal([1, K, Nn], 0, 1, 'float32', 9) as tf.Tensor3D;
  const wT = tf.randomNormal([1, Nn, K], 0, 1, 'float32', 10) as tf.Tensor3D;
  const g = tf.randomNormal([M, Nn], 0, 1, 'float32', 11) as tf.Tensor2D;
  const [w2, wT2] = [w.reshape([K, Nn]), wT.reshape([Nn, K])];
  const ms = interleaved(
    [
      () => tf.matMul(x, w2),
      () => groupedMatMul(x, [M], w),
      () => tf.tidy(() => tf.matMul(x, tf.transpose(wT2))),
      () => groupedMatMul(x, [M], wT, { transposeB: true }),
      () => tf.tidy(() => tf.matMul(tf.transpose(x), g)),
      () => groupedMatMulTransposeA(x, [M], g),
    ],
    gemmReps,
  );
  const flop = 2 * M * K * Nn;
  console.log(`[${M},${K}]x[${K},${Nn}]`.padEnd(28), ms.map((t) => gf(flop, t)).join(' '));
  tf.dispose([x, w, wT, g, w2, wT2]);
}
{
  const [S, D, F] = [8192, 256, 512];
  const x = tf.randomNormal([S, D], 0, 1, 'float32', 12) as tf.Tensor2D;
  const g = tf.randomNormal([S, F], 0, 1, 'float32', 13) as tf.Tensor2D;
  const flop = 2 * S * D * F;
  const stacks = [8, 64].map((E) => ({
    E,
    counts: Array.from({ length: E }, (_, e) => S / E + (e % 2 === 0 ? 7 : -7)), // ragged
    w: tf.randomNormal([E, D, F], 0, 1, 'float32', 14) as tf.Tensor3D,
  }));
  const ms = interleaved(
    stacks.flatMap(({ counts, w }) => [
      () => groupedMatMul(x, counts, w),
      () => groupedMatMul(g, counts, w, { transposeB: true }),
      () => groupedMatMulTransposeA(x, counts, g),
    ]),
    gemmReps,
  );
  stacks.forEach(({ E }, i) => {
    const [nn, nt, tn] = ms.slice(3 * i, 3 * i + 3).map((t) => gf(flop, t));
    console.log(`grouped E=${E}, ${S} rows, D ${D}, F ${F}: NN ${nn}  NT ${nt}  TN ${tn} GFLOP/s`);
  });
  const total = (i: number) => ms.slice(3 * i, 3 * i + 3).reduce((a, b) => a + b, 0);
  console.log(`grouped E=64/E=8 time ratio (NN + NT + TN): ${(total(1) / total(0)).toFixed(2)}`);
  tf.dispose([x, g, ...stacks.map((s) => s.w)]);
}
