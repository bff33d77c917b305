// Collective and data-parallel throughput on this machine.
//   pnpm --filter @switchyard/parallel bench        (SWITCHYARD_BACKEND=cpu to use the pure-JS backend)
// 1. allToAllV between 2 worker ranks at 1 MiB and 64 MiB per peer, and allReduce (mean) of 16 MiB,
//    about the gradients of the small preset (median of BENCH_A2A_ITERS calls).
// 2. Training tokens/s of the default (small) preset LM at 1 and 2 worker ranks, data parallel, and
//    data + expert parallel at 2 ranks. Global batch BENCH_BATCH sequences of BENCH_SEQ tokens.
//    Also tokens per CPU-second of the process: on a machine shared with other work the wall-clock
//    ratio reflects the cores actually free; the CPU cost per token shows the overhead of the ranks.
import { fileURLToPath } from 'node:url';
import { launch } from '../src/index';
import type { AllToAllArgs, AllToAllResult, TrainArgs, TrainResult } from './bench.rank';

const module = fileURLToPath(new URL('./bench.rank.ts', import.meta.url));
const MiB = 1024 * 1024;
const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const iters = Number(process.env.BENCH_A2A_ITERS ?? 9);

console.log(`backend: ${backend}; ranks are worker threads, one TensorFlow.js instance each`);
const a2a = await launch<AllToAllArgs, AllToAllResult[]>({
  module,
  exportName: 'allToAll',
  ranks: 2,
  backend,
  args: { bytes: [MiB, 64 * MiB], iters },
});
for (const { bytes, ms } of a2a.results[0]!) {
  const mib = bytes / MiB;
  // each rank sends `bytes` and receives `bytes`
  console.log(
    `allToAllV 2 ranks, ${String(mib).padStart(2)} MiB per peer: ${ms.toFixed(2).padStart(8)} ms, ${(mib / (ms / 1000)).toFixed(0).padStart(6)} MiB/s sent per rank`,
  );
}

const ar = await launch<AllToAllArgs, AllToAllResult[]>({
  module,
  exportName: 'allReduce',
  ranks: 2,
  backend,
  args: { bytes: [16 * MiB], iters },
});
for (const { bytes, ms } of ar.results[0]!) {
  console.log(`allReduce 2 ranks, ${bytes / MiB} MiB (mean):   ${ms.toFixed(2).padStart(8)} ms`);
}

const train: Omit<TrainArgs, 'expertParallel'> = {
  preset: 'small',
  batch: Number(process.env.BENCH_BATCH ?? 8),
  seqLen: Number(process.env.BENCH_SEQ ?? 128),
  warmup: 2,
  steps: Number(process.env.BENCH_STEPS ?? 6),
};
async function throughput(ranks: number, expertParallel: boolean): Promise<TrainResult> {
  const res = await launch<TrainArgs, TrainResult>({
    module,
    exportName: 'trainThroughput',
    ranks,
    inProcess: false,
    backend,
    args: { ...train, expertParallel },
    timeoutMs: 300_000,
  });
  return res.results[0]!;
}
const line = (label: string, r: TrainResult): void =>
  console.log(
    `${label.padEnd(40)} ${r.tokensPerSec.toFixed(0).padStart(7)} tokens/s  (${r.tokensPerCpuSec.toFixed(0)} tokens per CPU-second)`,
  );
const r1 = await throughput(1, false);
line('train small preset, 1 rank:', r1);
const r2 = await throughput(2, false);
line('train small preset, 2 ranks (DP):', r2);
const r2ep = await throughput(2, true);
line('train small preset, 2 ranks (DP + EP):', r2ep);
// Work per token: 2 ranks spend this share of the CPU time 1 rank spends (1.0 = no parallel overhead).
console.log(
  `2-rank CPU cost per token vs 1 rank: DP ${(r1.tokensPerCpuSec / r2.tokensPerCpuSec).toFixed(2)}, DP + EP ${(r1.tokensPerCpuSec / r2ep.tokensPerCpuSec).toFixed(2)}`,
);
console.log(
  `data+expert-parallel ranks2/ranks1 tokens/s ratio: ${(r2ep.tokensPerSec / r1.tokensPerSec).toFixed(2)}`,
);
console.log(`data-parallel ranks2/ranks1 tokens/s ratio: ${(r2.tokensPerSec / r1.tokensPerSec).toFixed(2)}`);
