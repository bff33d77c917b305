// Cost of the balance losses next to the router they regularise, on the selected backend (wasm by default).
//   pnpm --filter @switchyard/balance bench       (SWITCHYARD_BACKEND=cpu, BENCH_T, BENCH_D, BENCH_E, BENCH_K to change)
// 1. Router forward + backward (logits = x W, softmax, gradient w.r.t. W) alone, then with each loss added:
//    prints the loss's overhead as a ratio of the router's own time.
// 2. Host-side pieces: GlobalAuxLoss.accumulate, a LossFreeBalancer step over 16 layers, the Monte Carlo
//    noise floor.
import { initBackend, matMul, Rng, softmax, type Tensor2D, tf, topK } from '@switchyard/tensor';
import {
  GlobalAuxLoss,
  LossFreeBalancer,
  maxVioNoiseFloor,
  microBatchAuxLoss,
  routerZLoss,
  sequenceAuxLoss,
} from '../src/index';

const T = Number(process.env.BENCH_T ?? 4096);
const D = Number(process.env.BENCH_D ?? 512);
const E = Number(process.env.BENCH_E ?? 64);
const K = Number(process.env.BENCH_K ?? 8);
const info = await initBackend({
  backend: (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm',
});
const reps = info.name === 'cpu' ? 3 : 9;

function median(fn: () => void): number {
  fn(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

const rng = new Rng(1);
const xTD = rng.normalTensor([T, D]) as Tensor2D;
const wDE = tf.variable(rng.normalTensor([D, E], 0, 0.02));
const probeTE = rng.normalTensor([T, E]);
// fixed selections (top-K of the initial scores): routing decisions are host work outside the tape
const expertIdx = tf.tidy(() => topK(matMul(xTD, wDE), K).indices).dataSync() as Int32Array;
const countsE = new Int32Array(E);
for (const e of expertIdx) countsE[e]! += 1;
const plan = { countsE, expertIdx, k: K };

type Extra = (logitsTE: Tensor2D, probsTE: Tensor2D) => tf.Scalar | null;
function routerStep(extra: Extra): number {
  return median(() => {
    const { value, grads } = tf.variableGrads(() => {
      const logitsTE = matMul(xTD, wDE) as Tensor2D;
      const probsTE = softmax(logitsTE) as Tensor2D;
      const task = tf.sum(tf.mul(probsTE, probeTE)) as tf.Scalar;
      const loss = extra(logitsTE, probsTE);
      return loss ? (tf.add(task, loss) as tf.Scalar) : task;
    });
    grads[wDE.name]!.dataSync();
    tf.dispose([value, ...Object.values(grads)]);
  });
}

const gb = new GlobalAuxLoss({ numExperts: E });
gb.accumulate(countsE);

console.log(`backend: ${info.name} (${info.reason}); T=${T} D=${D} E=${E} K=${K}; median of ${reps}`);
const base = routerStep(() => null);
console.log(`${'router fwd+bwd alone'.padEnd(40)} ${base.toFixed(2).padStart(8)} ms`);
const cases: [string, Extra][] = [
  ['+ microBatchAuxLoss', (_l, p) => microBatchAuxLoss({ probsTE: p, countsE })],
  ['+ sequenceAuxLoss (seqLen 256)', (_l, p) => sequenceAuxLoss({ ...plan, probsTE: p }, Math.min(256, T))],
  ['+ GlobalAuxLoss.loss', (_l, p) => gb.loss({ probsTE: p, countsE })],
  ['+ routerZLoss', (l) => routerZLoss({ logitsTE: l })],
];
for (const [label, extra] of cases) {
  const ms = routerStep(extra);
  console.log(
    `${label.padEnd(40)} ${ms.toFixed(2).padStart(8)} ms   overhead vs router fwd+bwd: ${((ms - base) / base).toFixed(3)}`,
  );
}

const accumulateMs = median(() => {
  for (let i = 0; i < 100; i++) gb.accumulate(countsE);
  gb.resetAfterStep();
});
console.log(
  `${'GlobalAuxLoss.accumulate (per call)'.padEnd(40)} ${(accumulateMs / 100).toFixed(4).padStart(8)} ms`,
);
const lf = new LossFreeBalancer({ numLayers: 16, numExperts: E });
const lfMs = median(() => {
  for (let l = 0; l < 16; l++) lf.observe(l, countsE);
  lf.step();
});
console.log(`${'LossFreeBalancer observe x16 + step'.padEnd(40)} ${lfMs.toFixed(4).padStart(8)} ms`);
const floorMs = median(() => {
  maxVioNoiseFloor({ numTokens: T, numExperts: E, k: K, method: 'monte-carlo', trials: 64 });
});
console.log(`${'maxVioNoiseFloor (Monte Carlo, 64 trials)'.padEnd(40)} ${floorMs.toFixed(1).padStart(8)} ms`);
tf.dispose([xTD, wDE, probeTE]);
