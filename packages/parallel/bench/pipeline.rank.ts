// Rank function of the pipeline bench: times every op of a pipeline step under several schedules,
// the one-way latency of an activation-sized message, and (rank 0 alone) the one-rank step.
import { defineModelConfig, MoETransformerLM, presets } from '@switchyard/model';
import { generateSchedule, type ScheduleKind, type StageWork } from '@switchyard/plan';
import { disposeRoutingPlan } from '@switchyard/routing';
import { Rng, type Scalar, tf } from '@switchyard/tensor';
import { modelStages, PipelineExecutor, type RankContext } from '../src/index';

export interface PipelineBenchArgs {
  readonly kinds: readonly ScheduleKind[];
  /** N: micro-batches per step. */
  readonly microBatches: number;
  /** Sequences per micro-batch and tokens per sequence. */
  readonly batch: number;
  readonly seqLen: number;
  readonly dModel: number;
  readonly numLayers: number;
  readonly warmup: number;
  readonly steps: number;
}

/** One op of a measured step, as it ran on one rank (milliseconds from the rank's start of the step). */
export interface TimedWork {
  /** `F`, `B`, `Bi`, `W` or `F&B`. */
  readonly kind: string;
  /** The stage of each part (one, or two for F&B), and its micro-batch. */
  readonly stages: readonly number[];
  readonly microBatches: readonly number[];
  readonly start: number;
  readonly end: number;
  readonly waitMs: number;
}

export interface PipelineBenchResult {
  readonly rank: number;
  /** Per kind, per measured step: the rank's ops and the time from its first op's start to its last op's end. */
  readonly runs: Record<string, { readonly opsMs: number; readonly ops: readonly TimedWork[] }[]>;
  /** Median one-way time of one activation message (ms), from a ping-pong between ranks 0 and 1. */
  readonly transferMs: number;
  /** Rank 0: median one-rank step (forward and backward of the N micro-batches through the whole model), ms. */
  readonly oneRankMs: number;
  /** The activation message size, in floats. */
  readonly activationFloats: number;
}

export function benchConfig(args: Pick<PipelineBenchArgs, 'dModel' | 'numLayers' | 'seqLen'>) {
  return defineModelConfig({
    ...presets.small,
    vocabSize: 512,
    dModel: args.dModel,
    numLayers: args.numLayers,
    dFF: 2 * args.dModel,
    maxSeqLen: Math.max(args.seqLen, presets.small.maxSeqLen),
    moe: { ...presets.small.moe, experts: { ...presets.small.moe.experts, dFF: args.dModel } },
  });
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function pipelineBench(ctx: RankContext<PipelineBenchArgs>): PipelineBenchResult {
  const a = ctx.args;
  const config = benchConfig(a);
  const T = a.batch * a.seqLen;
  const rng = new Rng(7).fork('tokens');
  const data = Array.from({ length: a.microBatches }, () => {
    const inputs = Int32Array.from({ length: T }, () => rng.int(config.vocabSize));
    return { inputs, targets: inputs.map((t) => (t * 7 + 3) % config.vocabSize) };
  });
  const runs: PipelineBenchResult['runs'] = {};
  for (const kind of a.kinds) {
    const model = new MoETransformerLM(config, new Rng(1));
    const schedule = generateSchedule({ kind, ranks: ctx.worldSize, microBatches: a.microBatches });
    const stages = modelStages(model, {
      stages: schedule.stages,
      microBatch: { batch: a.batch, seqLen: a.seqLen },
      tokens: (m) => data[m]!,
      forwardOptions: () => ({ training: true }),
      lossScale: 1 / a.microBatches,
    });
    const executor = new PipelineExecutor(schedule, ctx.comm, stages);
    const measured: PipelineBenchResult['runs'][string] = [];
    for (let i = 0; i < a.warmup + a.steps; i++) {
      ctx.comm.barrier();
      const r = executor.run();
      tf.dispose([...r.grads.values()]);
      if (i < a.warmup) continue;
      measured.push({
        opsMs: r.opsMs,
        ops: r.timeline.map((t) => {
          const parts: StageWork[] = t.op.kind === 'F&B' ? [t.op.forward, t.op.backward] : [t.op];
          return {
            kind: t.op.kind,
            stages: parts.map((p) => p.stage),
            microBatches: parts.map((p) => p.microBatch),
            start: t.start,
            end: t.end,
            waitMs: t.waitMs,
          };
        }),
      });
    }
    runs[kind] = measured;
    model.dispose();
  }

  // One-way latency of an activation message: half the round trip 0 -> 1 -> 0.
  const msg = new Float32Array(T * config.dModel).fill(1);
  const trips: number[] = [];
  for (let i = 0; i < 12; i++) {
    ctx.comm.barrier();
    const t0 = performance.now();
    if (ctx.rank === 0) {
      ctx.comm.send(1, msg, 1);
      ctx.comm.recv(1, 2);
    } else if (ctx.rank === 1) {
      ctx.comm.recv(0, 1);
      ctx.comm.send(0, msg, 2);
    }
    if (i >= 2) trips.push((performance.now() - t0) / 2);
  }

  // The one-rank step on rank 0 while the other ranks wait at the barrier.
  let oneRankMs = 0;
  ctx.comm.barrier();
  if (ctx.rank === 0) {
    const model = new MoETransformerLM(config, new Rng(1));
    const vars = model.trainableVariables();
    const times: number[] = [];
    for (let i = 0; i < a.warmup + a.steps; i++) {
      const t0 = performance.now();
      for (const { inputs, targets } of data) {
        const x = tf.tensor2d(inputs, [a.batch, a.seqLen], 'int32');
        const y = tf.tensor2d(targets, [a.batch, a.seqLen], 'int32');
        const { value, grads } = tf.variableGrads(() => {
          const { loss, plans } = model.loss(x, y, { training: true });
          for (const p of plans) disposeRoutingPlan(p);
          return tf.mul(loss, 1 / a.microBatches) as Scalar;
        }, vars);
        tf.dispose([x, y, value, ...Object.values(grads)]);
      }
      if (i >= a.warmup) times.push(performance.now() - t0);
    }
    oneRankMs = median(times);
    model.dispose();
  }
  ctx.comm.barrier({ timeoutMs: 600_000 });
  return {
    rank: ctx.rank,
    runs,
    transferMs: ctx.rank === 0 ? median(trips) : 0,
    oneRankMs,
    activationFloats: msg.length,
  };
}
