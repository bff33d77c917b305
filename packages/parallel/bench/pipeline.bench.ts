// Pipeline schedules on 2 worker ranks: measured step time and bubble of each schedule, beside the
// replay of @switchyard/plan (`replayPipeline`, the simulator's pipeline model) fed with the op costs
// measured in the same run; and the cost of splitting B into Bi + W.
//   pnpm --filter @switchyard/parallel bench:pipeline        (SWITCHYARD_BACKEND=cpu for the pure-JS backend)
// Sizes: BENCH_PP_MICRO (N, default 8), BENCH_PP_BATCH (2), BENCH_PP_SEQ (64), BENCH_PP_DMODEL (96),
// BENCH_PP_LAYERS (4), BENCH_PP_STEPS (6, after 2 warm-up steps).
//
// Measured, per schedule: the step is the longest rank's time from its first op to its last (ranks
// start together after a barrier); a rank's bubble is the step minus its busy time (every op's
// duration less the time it waited for a message); both are medians over the measured steps.
// Predicted: each op costs the mean duration of the ops of its kind and stage on its rank, measured
// in the same steps, each cross-rank message the measured one-way latency of an activation; the replay gives the
// step and each rank's bubble the same way. Means, not medians: a rank's busy time is a sum of
// durations, and on a machine shared with other work a few slow ops weigh in it.
import { fileURLToPath } from 'node:url';
import { generateSchedule, replayPipeline, type ScheduleKind, type ScheduleOp } from '@switchyard/plan';
import { launch } from '../src/index';
import type { PipelineBenchArgs, PipelineBenchResult, TimedWork } from './pipeline.rank';

const module = fileURLToPath(new URL('./pipeline.rank.ts', import.meta.url));
const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const env = (name: string, d: number) => Number(process.env[name] ?? d);
const args: PipelineBenchArgs = {
  kinds: ['1f1b', 'zb-h1', 'dualpipe', 'dualpipev', 'gpipe', 'interleaved'],
  microBatches: env('BENCH_PP_MICRO', 8),
  batch: env('BENCH_PP_BATCH', 2),
  seqLen: env('BENCH_PP_SEQ', 64),
  dModel: env('BENCH_PP_DMODEL', 96),
  numLayers: env('BENCH_PP_LAYERS', 4),
  warmup: 2,
  steps: env('BENCH_PP_STEPS', 6),
};

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.floor(s.length / 2)]!;
};
const busy = (ops: readonly TimedWork[]) => ops.reduce((s, o) => s + (o.end - o.start - o.waitMs), 0);
const keyOf = (kind: string, stages: readonly number[]) => `${kind}:${stages.join('/')}`;
const opKey = (op: ScheduleOp) =>
  op.kind === 'F&B' ? keyOf('F&B', [op.forward.stage, op.backward.stage]) : keyOf(op.kind, [op.stage]);

const t0 = Date.now();
console.log(
  `backend: ${backend}; 2 worker ranks; model: ${args.numLayers} blocks, width ${args.dModel}, 8 experts top-2; ` +
    `N = ${args.microBatches} micro-batches of ${args.batch} x ${args.seqLen} tokens; ${args.steps} measured steps after ${args.warmup}`,
);
const { results } = await launch<PipelineBenchArgs, PipelineBenchResult>({
  module,
  exportName: 'pipelineBench',
  ranks: 2,
  backend,
  args,
  timeoutMs: 600_000,
});
const [r0, r1] = results as [PipelineBenchResult, PipelineBenchResult];
const transfer = r0.transferMs;
console.log(
  `one-rank step (rank 0 alone, same model and micro-batches): ${r0.oneRankMs.toFixed(1)} ms; ` +
    `one activation message (${((r0.activationFloats * 4) / 1024).toFixed(0)} KiB) one way: ${transfer.toFixed(2)} ms`,
);
console.log('');
console.log(
  '| schedule | stages | step, measured | step, predicted | error | bubble per rank, measured | bubble per rank, predicted | 1 rank / step |',
);
console.log('|---|---|---|---|---|---|---|---|');
const costs = new Map<string, Map<string, number>>();
for (const kind of args.kinds) {
  const schedule = generateSchedule({
    kind: kind as ScheduleKind,
    ranks: 2,
    microBatches: args.microBatches,
  });
  const steps = r0.runs[kind]!.map((s, i) => [s, r1.runs[kind]![i]!] as const);
  const stepMs = steps.map(([a, b]) => Math.max(a.opsMs, b.opsMs));
  const measuredStep = median(stepMs);
  const bubbles = [0, 1].map((r) => median(steps.map(([a, b], i) => stepMs[i]! - busy([a, b][r]!.ops))));
  // Each op kind and stage on each rank at the mean of its measured durations (every measured step):
  // ranks are kept apart because two ranks sharing a machine with other work do not run equally fast.
  const samples = new Map<string, number[]>();
  for (const pair of steps) {
    pair.forEach((r, rank) => {
      for (const o of r.ops) {
        const k = `${rank}|${keyOf(o.kind, o.stages)}`;
        samples.set(k, [...(samples.get(k) ?? []), o.end - o.start - o.waitMs]);
      }
    });
  }
  const cost = new Map([...samples].map(([k, v]) => [k, v.reduce((x, y) => x + y, 0) / v.length]));
  costs.set(kind, cost);
  const replay = replayPipeline(schedule, (op, rank) => cost.get(`${rank}|${opKey(op)}`)!, transfer);
  const predictedStep = Math.max(...replay.map((t) => t.at(-1)!.end));
  const predictedBubbles = replay.map((t) => predictedStep - t.reduce((s, o) => s + (o.end - o.start), 0));
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  const pct = (b: number, step: number) => `${ms(b)} (${((100 * b) / step).toFixed(0)}%)`;
  console.log(
    `| ${kind} | ${schedule.stages} | ${ms(measuredStep)} | ${ms(predictedStep)} | ${(((predictedStep - measuredStep) / measuredStep) * 100).toFixed(1)}% | ` +
      `${bubbles.map((b) => pct(b, measuredStep)).join(', ')} | ${predictedBubbles.map((b) => pct(b, predictedStep)).join(', ')} | ` +
      `${(r0.oneRankMs / measuredStep).toFixed(2)}x |`,
  );
}

// B split into Bi + W (ZB-H1) against the whole B (1F1B): same stages, same micro-batches.
console.log('');
console.log('| stage | B (1f1b) | Bi (zb-h1) | W (zb-h1) | (Bi + W) / B | W share of Bi + W |');
console.log('|---|---|---|---|---|---|');
const b1 = costs.get('1f1b')!;
const zb = costs.get('zb-h1')!;
for (const s of [0, 1]) {
  // stage s runs on rank s under both schedules
  const B = b1.get(`${s}|${keyOf('B', [s])}`)!;
  const Bi = zb.get(`${s}|${keyOf('Bi', [s])}`)!;
  const W = zb.get(`${s}|${keyOf('W', [s])}`)!;
  console.log(
    `| ${s} | ${B.toFixed(1)} ms | ${Bi.toFixed(1)} ms | ${W.toFixed(1)} ms | ${((Bi + W) / B).toFixed(2)} | ${(W / (Bi + W)).toFixed(2)} |`,
  );
}
console.log(`\nbench wall time: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
