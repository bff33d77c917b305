// Forward + backward time of one MoE layer against a dense SwiGLU FFN with the same active FLOPs,
// on the selected backend (wasm by default), plus achieved GFLOP/s next to plain matMul GFLOP/s.
//   pnpm --filter @switchyard/experts bench
// Options (env): SWITCHYARD_BACKEND=wasm|cpu|tensorflow, BENCH_T (4096), BENCH_REPS (rounds, 3),
//   BENCH_E (comma list, default 8,32,64), BENCH_MODE (auto|dropless|padded).
//
// Layer: T tokens, D = 256, F = 512 SwiGLU experts, softmax top-2 router, dropless. Dense baseline:
// SwiGLU with hidden K * F = 1024. Both compute the gradients of every weight and of the input.
// Cases run interleaved, round after round, and each reports its best round: load from other
// processes then inflates every case alike instead of whichever ran during a spike.
import { initBackend, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { type ComputeMode, DenseFFN, MoELayer } from '../src/index';

const T = Number(process.env.BENCH_T ?? 4096);
const D = 256;
const F = 512;
const K = 2;
const EXPERTS = (process.env.BENCH_E ?? '8,32,64').split(',').map(Number);
const MODE = (process.env.BENCH_MODE ?? 'auto') as ComputeMode;
const info = await initBackend({
  backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | 'tensorflow' | undefined) ?? 'wasm',
});
const reps = Number(process.env.BENCH_REPS ?? (info.name === 'cpu' ? 1 : 3));

function gflops(flop: number, ms: number): string {
  return (flop / (ms / 1000) / 1e9).toFixed(2).padStart(7);
}

function line(label: string, ms: number, flop: number, extra = ''): void {
  console.log(`${label.padEnd(40)} ${ms.toFixed(1).padStart(9)} ms ${gflops(flop, ms)} GFLOP/s${extra}`);
}

const rng = new Rng('bench');
const x = tf.variable(rng.normalTensor([T, D]), true) as unknown as Tensor2D;
const dy = rng.normalTensor([T, D]);

/** Forward + backward of `forward` (sum(y * dy) as the loss), gradients of every trainable variable and x. */
function fwdBwd(forward: () => tf.Tensor): tf.Tensor[] {
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(forward(), dy)) as tf.Scalar);
  return [value, ...Object.values(grads)];
}

interface Case {
  readonly label: string;
  readonly flop: number;
  readonly run: () => tf.Tensor[];
  readonly note?: () => string;
  readonly times: number[];
}

const a = rng.normalTensor([T, D]);
const b = rng.normalTensor([D, K * F]);
const dense = new DenseFFN({ dModel: D, dFF: K * F, activation: 'swiglu' }, rng.fork('dense'));
const cases: Case[] = [
  {
    label: `matMul [${T},${D}]x[${D},${K * F}]`,
    flop: 2 * T * D * K * F,
    run: () => [tf.matMul(a, b)],
    times: [],
  },
  {
    label: `dense SwiGLU FFN hidden ${K * F}`,
    flop: 3 * T * dense.flopsPerToken(),
    run: () => fwdBwd(() => dense.forward(x)),
    times: [],
  },
];
const layers: MoELayer[] = [];
for (const E of EXPERTS) {
  const layer = new MoELayer(
    {
      dModel: D,
      router: { type: 'topk', numExperts: E, k: K, dModel: D },
      experts: { numExperts: E, dModel: D, dFF: F, activation: 'swiglu' },
      computeMode: MODE,
    },
    rng.fork(`moe${E}`),
  );
  layers.push(layer);
  let mode = '';
  let maxLoad = 0;
  cases.push({
    label: `moe E=${E}`,
    flop: 3 * T * layer.flopsPerToken(),
    run: () =>
      fwdBwd(() => {
        const { yTD, plan, computeMode } = layer.forward(x, { training: true });
        mode = computeMode;
        maxLoad = Math.max(...plan.keptCountsE) / ((T * K) / E);
        return yTD;
      }),
    note: () => `  ${mode}, max load/mean ${maxLoad.toFixed(2)}`,
    times: [],
  });
}

/** Runs `fn`, reads every output back, returns the wall time in ms. */
function timeOnce(fn: () => tf.Tensor[]): number {
  const t0 = performance.now();
  const out = fn();
  for (const t of out) t.dataSync();
  const ms = performance.now() - t0;
  tf.dispose(out);
  return ms;
}

console.log(
  `backend: ${info.name} (${info.reason}); T=${T} D=${D} F=${F} K=${K} SwiGLU; fwd+bwd; best of ${reps} interleaved rounds after 1 warm-up`,
);
for (const c of cases) timeOnce(c.run); // warm-up
for (let r = 0; r < reps; r++) for (const c of cases) c.times.push(timeOnce(c.run));

const best = (c: Case) => Math.min(...c.times);
const denseMs = best(cases[1]!);
for (const c of cases) {
  const ms = best(c);
  const vsDense = c.label.startsWith('moe') ? `  moe/dense ${(ms / denseMs).toFixed(2)}` : '';
  line(c.label, ms, c.flop, `${vsDense}${c.note?.() ?? ''}`);
}
tf.dispose([a, b, x, dy]);
dense.dispose();
for (const layer of layers) layer.dispose();

const moeMs = (E: number) => {
  const c = cases.find((k) => k.label === `moe E=${E}`);
  return c ? best(c) : undefined;
};
const ratio = (num: number | undefined, den: number | undefined) =>
  num !== undefined && den !== undefined ? (num / den).toFixed(2) : 'n/a';
console.log(`moe/dense time ratio E=8: ${ratio(moeMs(8), denseMs)}`);
console.log(`moe/dense time ratio E=64: ${ratio(moeMs(64), denseMs)}`);
console.log(`moe E=64/E=8 time ratio: ${ratio(moeMs(64), moeMs(8))}`);
