// Rank functions of the parallel bench: allToAllV throughput, and MoE LM training throughput.
import { MoETransformerLM, type PresetName, presets } from '@switchyard/model';
import { Rng, tf } from '@switchyard/tensor';
import { allReduceGradients, applyExpertParallel, type RankContext, shardRange } from '../src/index';

export interface AllToAllArgs {
  /** Bytes each rank sends to every other rank per call. */
  readonly bytes: readonly number[];
  readonly iters: number;
}

export interface AllToAllResult {
  readonly bytes: number;
  /** Median milliseconds per allToAllV call (rank 0). */
  readonly ms: number;
}

/** Times allToAllV with `bytes` to every peer (median of `iters` calls after one warm-up). */
export function allToAll(ctx: RankContext<AllToAllArgs>): AllToAllResult[] {
  const out: AllToAllResult[] = [];
  for (const bytes of ctx.args.bytes) {
    const send = Array.from({ length: ctx.worldSize }, (_, j) =>
      new Float32Array(bytes / 4).fill(ctx.rank * 10 + j),
    );
    ctx.comm.allToAllV(send);
    const times: number[] = [];
    for (let i = 0; i < ctx.args.iters; i++) {
      ctx.comm.barrier();
      const t0 = performance.now();
      const recv = ctx.comm.allToAllV(send);
      times.push(performance.now() - t0);
      if (recv[(ctx.rank + 1) % ctx.worldSize]![0] !== ((ctx.rank + 1) % ctx.worldSize) * 10 + ctx.rank) {
        throw new Error('allToAllV delivered the wrong data');
      }
    }
    times.sort((a, b) => a - b);
    out.push({ bytes, ms: times[Math.floor(times.length / 2)]! });
  }
  return out;
}

/** Times an in-place allReduce (mean) of a Float32Array of `bytes`, as gradient sync runs it (median of `iters` calls after one warm-up). */
export function allReduce(ctx: RankContext<AllToAllArgs>): AllToAllResult[] {
  return ctx.args.bytes.map((bytes) => {
    const buf = new Float32Array(bytes / 4);
    const times: number[] = [];
    for (let i = 0; i <= ctx.args.iters; i++) {
      buf.fill(ctx.rank + 1);
      ctx.comm.barrier();
      const t0 = performance.now();
      ctx.comm.allReduce(buf, 'mean', { inPlace: true });
      if (i > 0) times.push(performance.now() - t0);
      if (buf[0] !== (ctx.worldSize + 1) / 2) throw new Error('allReduce returned the wrong mean');
    }
    times.sort((a, b) => a - b);
    return { bytes, ms: times[Math.floor(times.length / 2)]! };
  });
}

export interface TrainArgs {
  readonly preset: PresetName;
  /** Sequences per global batch (split over the ranks). */
  readonly batch: number;
  readonly seqLen: number;
  readonly warmup: number;
  readonly steps: number;
  readonly expertParallel: boolean;
}

export interface TrainResult {
  /** Global training tokens per wall-clock second. */
  readonly tokensPerSec: number;
  /** Global training tokens per CPU-second of the whole process (every rank's thread together). */
  readonly tokensPerCpuSec: number;
}

/** Training throughput of the preset LM (forward, backward, gradient sync, Adam) over the timed steps. */
export function trainThroughput(ctx: RankContext<TrainArgs>): TrainResult {
  const { preset, batch, seqLen, warmup, steps } = ctx.args;
  const config = presets[preset];
  const model = new MoETransformerLM(config, new Rng(0));
  if (ctx.args.expertParallel) applyExpertParallel(model, ctx.comm);
  const vars = model.trainableVariables();
  const optimizer: tf.Optimizer = tf.train.adam(1e-3);
  const { start, end } = shardRange(batch, ctx.rank, ctx.worldSize);
  const rng = new Rng(1).fork(`rank${ctx.rank}`);
  const step = (): void => {
    const ids = Int32Array.from({ length: (end - start) * (seqLen + 1) }, () => rng.int(config.vocabSize));
    const all = tf.tensor2d(ids, [end - start, seqLen + 1], 'int32');
    const x = all.slice([0, 0], [end - start, seqLen]) as tf.Tensor2D;
    const y = all.slice([0, 1], [end - start, seqLen]) as tf.Tensor2D;
    const { value, grads } = tf.variableGrads(() => model.loss(x, y, { training: true }).loss, vars);
    const synced = allReduceGradients(ctx.comm, grads, vars);
    optimizer.applyGradients(synced);
    value.dataSync();
    tf.dispose([all, x, y, value, grads, synced]);
  };
  for (let i = 0; i < warmup; i++) step();
  ctx.comm.barrier();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage(); // the process: all ranks' threads
  for (let i = 0; i < steps; i++) step();
  ctx.comm.barrier();
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  optimizer.dispose();
  model.dispose();
  const tokens = batch * seqLen * steps;
  return { tokensPerSec: tokens / seconds, tokensPerCpuSec: tokens / ((cpu.user + cpu.system) / 1e6) };
}
