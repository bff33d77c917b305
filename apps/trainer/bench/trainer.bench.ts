// Training throughput of the default preset (`small` on the Brown corpus) through the real training
// loop, the model's achieved FLOP/s, and the backend's matMul GFLOP/s measured in the same process;
// then the same preset through launch() at --ranks 1 and --ranks 2 (data parallel, worker threads,
// the same global batch; at 2 ranks also with AdamW sharded on the host, ZeRO-1), two independent
// 1-rank runs at half the batch side by side (the machine's ceiling for 2 ranks), and the ratio of
// their training tokens/s.
//   pnpm --filter switchyard-train bench   (SWITCHYARD_BACKEND=cpu to compare; BENCH_STEPS=20, BENCH_ROUNDS=2)
// The first BENCH_WARMUP steps (default 4) are left out: JavaScript's hot loops (gradient exchange,
// the host AdamW) are compiled while they run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend, tf } from '@switchyard/tensor';
import type { StepPhases } from '../src/report/records';
import { median } from '../src/report/report';
import { createReporter } from '../src/reporter';
import { train } from '../src/train/trainer';
import { benchConfig, launchRun, PHASES } from './launched';

const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const steps = Number(process.env.BENCH_STEPS ?? 20);
const warmup = Number(process.env.BENCH_WARMUP ?? 4);
const info = await initBackend({ backend });

function matMulGflops(N: number, reps: number): number {
  const a = tf.randomNormal([N, N], 0, 1, 'float32', 1);
  const b = tf.randomNormal([N, N], 0, 1, 'float32', 2);
  const once = (): number => {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
    return performance.now() - t0;
  };
  once();
  const times = Array.from({ length: reps }, once).sort((x, y) => x - y);
  tf.dispose([a, b]);
  return (2 * N * N * N) / (times[Math.floor(reps / 2)]! / 1000) / 1e9;
}

const out = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));
const config = benchConfig(out, backend, steps);
const matmulBefore = matMulGflops(1024, backend === 'cpu' ? 3 : 7);
const result = await train({ config, reporter: createReporter({ mode: 'quiet' }) });
const matmulAfter = matMulGflops(1024, backend === 'cpu' ? 3 : 7);
rmSync(out, { recursive: true, force: true });

const tokensPerSec = median(result.steps.slice(warmup).map((s) => s.tokensPerSec));
const trainFlopsPerToken = 3 * result.flopsPerToken;
const achieved = (tokensPerSec * trainFlopsPerToken) / 1e9;
const matmul = (matmulBefore + matmulAfter) / 2;
const { seqLen, microBatchSize, gradAccum } = config.train;

console.log(`backend: ${info.name} (${info.reason})`);
console.log(
  `preset small: ${(result.numParams / 1e6).toFixed(2)}M parameters, batch ${gradAccum} x ${microBatchSize} x ${seqLen} tokens, ` +
    `median of steps ${warmup + 1}..${steps}`,
);
console.log(`training tokens/s: ${tokensPerSec.toFixed(0)}`);
console.log(
  `model achieved: ${achieved.toFixed(2)} GFLOP/s (${(trainFlopsPerToken / 1e6).toFixed(2)} MFLOP per training token = 3 x forward)`,
);
console.log(
  `backend matMul 1024x1024: ${matmul.toFixed(2)} GFLOP/s (before ${matmulBefore.toFixed(2)}, after ${matmulAfter.toFixed(2)})`,
);
console.log(`achieved / matMul: ${(achieved / matmul).toFixed(3)}`);

// Data parallel through the launcher: the same global batch on 1 and on 2 worker ranks, alternated
// over BENCH_ROUNDS rounds (default 2) so that a slow spell on the machine hits both; then 1 rank at
// half the batch, the work each of 2 ranks does, to show where the rest of the time goes.
interface Launched {
  readonly tokensPerSec: number;
  /** Median of each phase over the measured steps (rank 0), milliseconds. */
  readonly phases: Record<keyof StepPhases, number>;
}
async function launched(ranks: number, extra: readonly string[] = [], runSteps = steps): Promise<Launched> {
  const run = await launchRun({ ranks, backend, runSteps, measuredSteps: steps, warmup, sets: extra });
  return { tokensPerSec: median(run.measured.map((s) => s.tokensPerSec)), phases: run.phases };
}
const showPhases = (p: Launched['phases']): string =>
  PHASES.map((k) => `${k} ${p[k].toFixed(0)} ms`).join(', ');
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const halfBatch = Math.max(1, Math.floor(microBatchSize / 2));
const halfSets = [`train.microBatchSize=${halfBatch}`];
/**
 * Two 1-rank launches at half the batch, side by side: each rank's share of the compute on its own
 * worker with nothing exchanged, the most that data parallelism can reach on this machine at that
 * moment. Both run 4 steps past the measured ones so that the measured steps overlap in time.
 */
async function independentPair(): Promise<number> {
  const pair = await Promise.all([launched(1, halfSets, steps + 4), launched(1, halfSets, steps + 4)]);
  return pair[0]!.tokensPerSec + pair[1]!.tokensPerSec;
}
const ones: Launched[] = [];
const twos: Launched[] = [];
// The same 2-rank run with AdamW sharded on the host (ZeRO-1: reduce-scatter, 1/R of the update,
// all-gather), against the default: an all-reduce, then AdamW as tensor ops on every rank.
const sharded: Launched[] = [];
const pairs: number[] = [];
for (let i = 0; i < rounds; i++) {
  ones.push(await launched(1));
  twos.push(await launched(2));
  sharded.push(await launched(2, ['train.optimizerOn=host']));
  pairs.push(await independentPair());
  console.log(
    `round ${i + 1}: launch --ranks 1 ${ones[i]!.tokensPerSec.toFixed(0)} tokens/s, --ranks 2 ${twos[i]!.tokensPerSec.toFixed(0)} tokens/s ` +
      `(global batch split 2 ways; AdamW on every rank), ${sharded[i]!.tokensPerSec.toFixed(0)} tokens/s with AdamW sharded on the host, ` +
      `${pairs[i]!.toFixed(0)} tokens/s from two independent ranks at ${halfBatch} sequences`,
  );
}
const ranks1 = median(ones.map((r) => r.tokensPerSec));
const ranks2 = median(twos.map((r) => r.tokensPerSec));
const halfRun = await launched(1, halfSets);
const half = halfRun.tokensPerSec;
console.log(`step phases, --ranks 1: ${showPhases(ones[ones.length - 1]!.phases)}`);
console.log(`step phases, --ranks 1 at ${halfBatch} sequences: ${showPhases(halfRun.phases)}`);
console.log(`step phases, --ranks 2 (rank 0): ${showPhases(twos[twos.length - 1]!.phases)}`);
console.log(
  `step phases, --ranks 2 with AdamW sharded on the host (rank 0): ${showPhases(sharded[sharded.length - 1]!.phases)}`,
);
const ranks2Sharded = median(sharded.map((r) => r.tokensPerSec));
console.log(
  `--ranks 2 tokens/s, sharded host AdamW / AdamW on every rank: ${(ranks2Sharded / ranks2).toFixed(2)} (medians of ${rounds})`,
);
console.log(
  `launch --ranks 1 at ${halfBatch} sequences per micro-batch (one rank's share): ${half.toFixed(0)} tokens/s, ` +
    `${(half / ranks1).toFixed(2)} of the full batch's rate`,
);
console.log(
  `ranks 2 / (2 x that rate): ${(ranks2 / (2 * half)).toFixed(2)} (the rest: two threads sharing memory bandwidth, ` +
    'waiting for the slower rank, the gradient all-reduce and the update each rank repeats)',
);
// A round's launches run back to back: a ratio within a round is less exposed to the machine's slow
// spells than a ratio of medians over rounds.
const rates = (runs: readonly Launched[]): number[] => runs.map((r) => r.tokensPerSec);
const perRound = (num: readonly number[], den: readonly number[]): number =>
  median(num.map((x, i) => x / den[i]!));
console.log(
  `two independent ranks at ${halfBatch} sequences, nothing exchanged (the most --ranks 2 can reach on this machine): ` +
    `${median(pairs).toFixed(0)} tokens/s (median of ${rounds}), ${perRound(pairs, rates(ones)).toFixed(2)} x --ranks 1 (median of the rounds' ratios)`,
);
console.log(
  `data-parallel efficiency, --ranks 2 / that: ${perRound(rates(twos), pairs).toFixed(2)} (median of the rounds' ratios)`,
);
console.log(`launch --ranks 1 training tokens/s: ${ranks1.toFixed(0)} (median of ${rounds})`);
console.log(`launch --ranks 2 training tokens/s: ${ranks2.toFixed(0)} (median of ${rounds})`);
console.log(`ranks2/ranks1 tokens/s ratio: ${(ranks2 / ranks1).toFixed(2)}`);
