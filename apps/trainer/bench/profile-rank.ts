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
  /** Operands read transposed (the backward's dX = dY·Wᵀ, dW = Xᵀ·dY); the shapes are the product's. */
  readonly transposeA?: boolean;
  readonly transposeB?: boolean;
}

/** The operands of a product of shape `s`, laid out as `transposeA` / `transposeB` say. */
export function gemmOperands(s: Omit<GemmShape, 'count'>): [tf.Tensor, tf.Tensor] {
  const lead = s.batch > 1 ? [s.batch] : [];
  const a = tf.randomNormal([...lead, ...(s.transposeA ? [s.k, s.m] : [s.m, s.k])], 0, 1, 'float32', 1);
  const b = tf.randomNormal([...lead, ...(s.transposeB ? [s.n, s.k] : [s.k, s.n])], 0, 1, 'float32', 2);
  return [a, b];
}

/** One memory-bound primitive: a kernel of the model's kinds at its shapes, on a pool of operands. */
export interface MemoryPrimitive {
  /** The tf kernel it runs (as tf.profile names it). */
  readonly kernel: string;
  /** Bytes one call reads and writes (the profile's tally convention). */
  readonly bytes: number;
  /** Runs it once on the next operands of the pool (cold when the pool is larger than the caches). */
  readonly run: () => tf.Tensor;
  readonly dispose: () => void;
}

/** Operand pools above this many bytes, so that each call's operands come from memory, not cache. */
export const COLD_POOL_BYTES = 64 << 20;

/**
 * The memory-bound kernels that the small preset's step spends its non-GEMM time in, at the shapes
 * of one micro-batch of `b` x `s` tokens (hidden `d`, `h` query and `g` KV heads of `a`, `e` experts
 * of top-`k`, vocabulary `v`): transposes of the heads, broadcast multiplies, adds, the attention
 * row reductions and max-subtraction, scatter-adds (the gradient of the expert gather), gathers of
 * rows, and the transcendental exp / sigmoid. Each cycles through a pool of distinct operands of
 * about `poolBytes` (at least one set of operands): larger than the last-level cache for memory
 * rates (the default), or within a cache level for the rate of operands that are still there.
 */
export function memoryPrimitives(
  dims: {
    b: number;
    s: number;
    d: number;
    h: number;
    g: number;
    a: number;
    e: number;
    k: number;
    v: number;
  },
  poolBytes: number = COLD_POOL_BYTES,
): MemoryPrimitive[] {
  const { b, s, d, h, g, a, v } = dims;
  const T = b * s;
  const N = b * h;
  const Te = Math.round((T * dims.k) / dims.e);
  const size = (shape: readonly number[]) => shape.reduce((x, y) => x * y, 1);
  const prim = (
    kernel: string,
    shapes: number[][],
    bytes: number,
    op: (xs: tf.Tensor[]) => tf.Tensor,
    int: readonly (number | undefined)[] = [],
  ) => {
    const per = shapes.reduce((acc, sh) => acc + 4 * size(sh), 0);
    const copies =
      poolBytes >= COLD_POOL_BYTES
        ? Math.max(2, Math.ceil(poolBytes / per))
        : Math.max(1, Math.floor(poolBytes / per));
    const pool = Array.from({ length: copies }, (_, c) =>
      shapes.map((sh, j) =>
        int[j] !== undefined
          ? tf.randomUniform(sh, 0, int[j]!, 'int32', 11 + c)
          : tf.randomUniform(sh, 0, 1, 'float32', 11 + c),
      ),
    );
    let i = 0;
    return {
      kernel,
      bytes,
      run: () => op(pool[i++ % copies]!),
      dispose: () => tf.dispose(pool.flat()),
    };
  };
  return [
    prim('Transpose', [[b, s, g, a]], 8 * T * g * a, ([x]) => tf.transpose(x!, [0, 2, 1, 3])),
    prim('Transpose', [[b, h, s, a]], 8 * T * h * a, ([x]) => tf.transpose(x!, [0, 2, 1, 3])),
    prim(
      'Multiply',
      [
        [T, d],
        [T, 1],
      ],
      4 * (2 * T * d + T),
      ([x, y]) => tf.mul(x!, y!),
    ),
    prim(
      'Add',
      [
        [T, d],
        [T, d],
      ],
      12 * T * d,
      ([x, y]) => tf.add(x!, y!),
    ),
    prim(
      'Sub',
      [
        [N, s, s],
        [N, s, 1],
      ],
      4 * (2 * N * s * s + N * s),
      ([x, y]) => tf.sub(x!, y!),
    ),
    prim('Sum', [[N, s, s]], 4 * (N * s * s + N * s), ([x]) => tf.sum(x!, -1, true)),
    prim('Max', [[N, s, s]], 4 * (N * s * s + N * s), ([x]) => tf.max(x!, -1, true)),
    prim(
      'UnsortedSegmentSum',
      [[T * 2, d], [T * 2]],
      4 * (2 * T * 2 * d + T * 2),
      ([x, ids]) => tf.unsortedSegmentSum(x!, ids as tf.Tensor1D, T),
      [undefined, T],
    ),
    prim('GatherV2', [[T, d], [Te]], 4 * (2 * Te * d + Te), ([x, ids]) => tf.gather(x!, ids!), [
      undefined,
      T,
    ]),
    prim('GatherV2', [[v, d], [T]], 4 * (2 * T * d + T), ([x, ids]) => tf.gather(x!, ids!), [undefined, v]),
    prim('Exp', [[N, s, s]], 8 * N * s * s, ([x]) => tf.exp(x!)),
    prim('Sigmoid', [[Te, 2 * d]], 16 * Te * d, ([x]) => tf.sigmoid(x!)),
  ];
}

/** Arguments of {@link memoryRank}: the primitives' dimensions and the rounds to time. */
export interface MemoryArgs {
  readonly dims: Parameters<typeof memoryPrimitives>[0];
  /** Calls of each primitive per round. */
  readonly calls: number;
  readonly rounds: number;
}

/** Median seconds of one round of every memory-bound primitive on this rank (ranks start together). */
export function memoryRank(ctx: RankContext<MemoryArgs>): number {
  const prims = memoryPrimitives(ctx.args.dims);
  const round = (): number => {
    const t0 = performance.now();
    for (const p of prims) {
      for (let i = 0; i < ctx.args.calls; i++) {
        const y = p.run();
        y.dataSync();
        y.dispose();
      }
    }
    return (performance.now() - t0) / 1000;
  };
  round();
  ctx.comm.barrier();
  const times = Array.from({ length: ctx.args.rounds }, round);
  for (const p of prims) p.dispose();
  return median(times);
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
    const [a, b] = gemmOperands(s);
    return { a, b, s };
  });
  const round = (): number => {
    const t0 = performance.now();
    for (const p of pairs) {
      for (let i = 0; i < p.s.count; i++) {
        const c = tf.matMul(p.a, p.b, p.s.transposeA ?? false, p.s.transposeB ?? false);
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
