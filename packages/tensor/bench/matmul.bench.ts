// Forward vs backward matMul throughput at 1024x1024 on the selected backend (wasm by default).
//   pnpm --filter @switchyard/tensor bench            (SWITCHYARD_BACKEND=cpu to compare)
// Backward = both operand gradients of C = A B (2 products), through the registered gradient.
import { initBackend, tf } from '../src/index';

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
