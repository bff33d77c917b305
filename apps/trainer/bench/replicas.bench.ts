// Redundant experts on a skewed run: the default preset (`small`, 8 experts top-2 in each of 4 MoE
// layers) with load balancing off (balance.method none, so routing skews), trained three ways on the
// same seed and global batch: one rank; 2 ranks with expert parallelism and a fixed placement (4
// experts per rank); 2 ranks with 4 redundant slots (6 per rank) that EPLB re-places every
// BENCH_REBALANCE steps from the loads the trainer counts, moving weights and AdamW moments.
// Prints the loss curves' largest gap to the one-rank curve, the per-step balancedness of the
// ranks' loads (mean / max over the 2 ranks, mean over layers) with and without copies, each
// rebalance (balancedness of the window's loads before and after) and the migration times.
//   pnpm --filter switchyard-train bench:replicas   (BENCH_STEPS=20, BENCH_REBALANCE=5; SWITCHYARD_BACKEND=cpu to compare)

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { launch } from '@switchyard/parallel';
import { RANK_MODULE_URL, type TrainRankArgs } from '../src/rank';
import type { StepRecord } from '../src/report/records';
import { median } from '../src/report/report';
import type { TrainResult } from '../src/train/trainer';
import { benchConfig } from './launched';

const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const steps = Number(process.env.BENCH_STEPS ?? 20);
const every = Number(process.env.BENCH_REBALANCE ?? 5);

async function run(ranks: number, sets: readonly string[]): Promise<StepRecord[]> {
  const dir = mkdtempSync(join(tmpdir(), 'switchyard-bench-'));
  const config = benchConfig(dir, backend, steps, ['log.progress=quiet', 'balance.method=none', ...sets]);
  try {
    const res = await launch<TrainRankArgs, TrainResult>({
      module: RANK_MODULE_URL,
      exportName: 'trainRank',
      ranks,
      inProcess: false,
      backend,
      args: { config },
      timeoutMs: 600_000,
    });
    return [...res.results[0]!.steps];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const one = await run(1, []);
const plain = await run(2, ['parallel.expertParallel=2']);
const copies = await run(2, [
  'parallel.expertParallel=2',
  'parallel.redundantExperts=4',
  `parallel.rebalanceEvery=${every}`,
]);

const gap = (a: readonly StepRecord[], b: readonly StepRecord[]) =>
  Math.max(...a.map((s, i) => Math.abs(s.loss - b[i]!.loss)));
const mean = (xs: readonly number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
const balanceOf = (r: readonly StepRecord[], from: number, to: number) =>
  mean(r.slice(from, to).map((s) => s.expertBalance ?? Number.NaN));

console.log(`backend ${backend}; small preset, balance none, ${steps} steps, 2 ranks x expert parallel 2`);
console.log(
  `loss: step 1 ${one[0]!.loss.toFixed(4)} -> step ${steps} ${one.at(-1)!.loss.toFixed(4)} (1 rank); ` +
    `largest gap to the 1-rank curve: fixed placement ${gap(plain, one).toExponential(2)}, ` +
    `with copies ${gap(copies, one).toExponential(2)}`,
);
console.log(
  "balancedness of the ranks' loads (mean/max rows per rank, mean over layers), per window of steps:",
);
for (let from = 0; from < steps; from += every) {
  const to = Math.min(steps, from + every);
  console.log(
    `  steps ${from + 1}-${to}: fixed placement ${balanceOf(plain, from, to).toFixed(3)}, with copies ${balanceOf(copies, from, to).toFixed(3)}`,
  );
}
const moves = copies.filter((s) => s.rebalance !== undefined);
for (const s of moves) {
  const r = s.rebalance!;
  console.log(
    `  rebalance after step ${s.step}: window balancedness ${r.before.toFixed(3)} -> ${r.after.toFixed(3)}` +
      (r.migrated ? `, migration ${r.migrationMs.toFixed(1)} ms` : ' (EPLB no better: kept)'),
  );
}
const migrations = moves.filter((s) => s.rebalance!.migrated).map((s) => s.rebalance!.migrationMs);
const stepMs = median(copies.map((s) => 1000 * (s.tokens / s.step / s.tokensPerSec)));
console.log(
  `migration: median ${migrations.length > 0 ? median(migrations).toFixed(1) : 'n/a'} ms over ${migrations.length} move(s) ` +
    `(4 layers, weights + AdamW moments); median step ${stepMs.toFixed(0)} ms`,
);
