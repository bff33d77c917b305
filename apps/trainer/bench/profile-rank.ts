// Rank functions of the machine profile (bench/profile.bench.ts), started through launch(): the
// transport between worker ranks (timed all-reduces) and GEMMs timed while every rank runs them.
import type { RankContext } from '@switchyard/parallel';
import { tf } from '@switchyard/tensor';

/** Median of a list of numbers. */
function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Arguments of {@link transportRank}: buffer sizes in float32 values and repetitions of each. */
export interface TransportArgs {
  readonly sizes: readonly { readonly values: number; readonly reps: number }[];
}

/** Median seconds of one all-reduce (sum) of each size; every rank runs the same sequence. */
export function transportRank(ctx: RankContext<TransportArgs>): { bytes: number; seconds: number }[] {
  return ctx.args.sizes.map(({ values, reps }) => {
    const buf = new Float32Array(values).fill(ctx.rank + 1);
    for (let i = 0; i < 3; i++) ctx.comm.allReduce(buf, 'sum', { inPlace: true });
    const times: number[] = [];
    for (let i = 0; i < reps; i++) {
      ctx.comm.barrier();
      const t0 = performance.now();
      ctx.comm.allReduce(buf, 'sum', { inPlace: true });
      times.push((performance.now() - t0) / 1000);
    }
    return { bytes: values * 4, seconds: median(times) };
  });
}

/** One GEMM shape [batch] x [m, k] x [k, n] and how many of it per round. */
export interface GemmShape {
  readonly batch: number;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  readonly count: number;
}

/** Arguments of {@link gemmRank}: the shapes of one round and the rounds to time. */
export interface GemmArgs {
  readonly shapes: readonly GemmShape[];
  readonly rounds: number;
}

/**
 * Median seconds of one round of the shapes' products on this rank; the ranks start together (a
 * barrier) so that their rounds overlap in time.
 */
export function gemmRank(ctx: RankContext<GemmArgs>): number {
  const pairs = ctx.args.shapes.map((s) => {
    const a = tf.randomNormal(s.batch > 1 ? [s.batch, s.m, s.k] : [s.m, s.k], 0, 1, 'float32', 1);
    const b = tf.randomNormal(s.batch > 1 ? [s.batch, s.k, s.n] : [s.k, s.n], 0, 1, 'float32', 2);
    return { a, b, count: s.count, batched: s.batch > 1 };
  });
  const round = (): number => {
    const t0 = performance.now();
    for (const p of pairs) {
      for (let i = 0; i < p.count; i++) {
        const c = p.batched
          ? tf.matMul(p.a as tf.Tensor3D, p.b as tf.Tensor3D)
          : tf.matMul(p.a as tf.Tensor2D, p.b as tf.Tensor2D);
        c.dataSync();
        c.dispose();
      }
    }
    return (performance.now() - t0) / 1000;
  };
  round();
  ctx.comm.barrier();
  const times = Array.from({ length: ctx.args.rounds }, round);
  tf.dispose(pairs.flatMap((p) => [p.a, p.b]));
  return median(times);
}
