/**
 * Sharded optimizer steps for data parallelism (ZeRO stage 1). The replicated variables are laid out
 * in one flat index space of `total` values, split into one contiguous range per rank (`shardRange`).
 * Gradients are reduce-scattered, so each rank receives only the averaged gradient of its own range;
 * each rank updates its range with optimizer state it alone holds; the updated ranges are then
 * all-gathered into every rank's variables. Against an all-reduce followed by the same optimizer step
 * on every rank, each rank reduces and updates 1/R of the values and keeps 1/R of the optimizer state,
 * and the replicas stay identical bit for bit (every value is computed once, by its owner).
 *
 * Shape letters: N = values in the flat layout, n = values in one rank's range.
 */
import { invalidArgument, readInto, SwitchyardError, type Tensor, tf } from '@switchyard/tensor';
import type { Communicator } from '../comm/types';
import {
  entriesOf,
  type GradientSet,
  type GradientSyncConfig,
  isShardedVariable,
  lookup,
  resolveSync,
  shardRange,
  type VariableSet,
} from './data';

/** One variable's place in a {@link FlatLayout}. */
export interface FlatEntry {
  /** The name gradients use for it (the variable's own name, or its key in a Map of variables). */
  readonly key: string;
  readonly variable: tf.Variable;
  /** Index of its first value in the flat space. */
  readonly offset: number;
  /** Number of values. */
  readonly size: number;
}

/** Replicated variables laid end to end in one flat index space, in the order given. */
export interface FlatLayout {
  readonly entries: readonly FlatEntry[];
  /** Values in all (N). */
  readonly total: number;
}

/** A rank's contiguous range `[start, end)` of a flat layout. */
export interface FlatRange {
  readonly start: number;
  readonly end: number;
}

/**
 * Lays replicated variables end to end in one flat index space (the layout every rank must build
 * from the same variables in the same order). Expert-parallel shards are refused: each rank updates
 * its own shard locally.
 *
 * When to use: once, before the first {@link reduceScatterGradients}, to set up a sharded optimizer.
 *
 * @example
 * ```ts
 * const layout = flatLayout(model.namedVariables());
 * const mine = flatRange(layout, ctx.rank, ctx.worldSize); // { start, end }
 * ```
 */
export function flatLayout(variables: VariableSet): FlatLayout {
  const fn = 'flatLayout';
  let offset = 0;
  const entries = entriesOf(fn, variables).map(([key, variable]) => {
    if (isShardedVariable(variable)) {
      throw invalidArgument(
        fn,
        `variables (${JSON.stringify(key)})`,
        'replicated variables only (an expert-parallel shard is updated by its own rank)',
        variable,
      );
    }
    if (variable.dtype !== 'float32') {
      throw invalidArgument(fn, `variables (${JSON.stringify(key)})`, 'a float32 variable', variable);
    }
    const entry = { key, variable, offset, size: variable.size };
    offset += variable.size;
    return entry;
  });
  return { entries, total: offset };
}

/**
 * The range of `layout` that `rank` of `worldSize` owns: `shardRange` over the flat values, so
 * ranges differ in length by at most one.
 *
 * When to use: to size a rank's optimizer state.
 *
 * @example
 * ```ts
 * const { start, end } = flatRange(layout, 1, 2); // the second half
 * ```
 */
export function flatRange(layout: FlatLayout, rank: number, worldSize: number): FlatRange {
  return shardRange(layout.total, rank, worldSize);
}

function checkLayout(fn: string, layout: FlatLayout): void {
  if (
    layout === null ||
    typeof layout !== 'object' ||
    !Array.isArray(layout.entries) ||
    !Number.isInteger(layout.total)
  ) {
    throw invalidArgument(fn, 'layout', 'a FlatLayout from flatLayout()', layout);
  }
}

function layoutMismatch(fn: string, peer: number, got: number, expected: number): SwitchyardError {
  return new SwitchyardError(
    'INVALID_ARGUMENT',
    `${fn}(): rank ${peer} sent ${got} values where ${expected} were expected; every rank must pass the same layout (the same variables in the same order)`,
    { details: { fn, peer, got, expected } },
  );
}

/** Values per message: a bucket's worth, at least one. */
function bucketValues(config: Partial<GradientSyncConfig>, fn: string): number {
  return Math.max(1, Math.floor(resolveSync(config, fn).bucketBytes / 4));
}

/** Every rank's range, and how many bucket-sized rounds the longest one needs. */
function plan(comm: Communicator, total: number, perRound: number): { ranges: FlatRange[]; rounds: number } {
  const ranges = Array.from({ length: comm.worldSize }, (_, r) => shardRange(total, r, comm.worldSize));
  const longest = Math.max(...ranges.map((r) => r.end - r.start));
  return { ranges, rounds: Math.ceil(longest / perRound) };
}

/** Piece `t` of `range` (bucket-sized), as [lo, hi) flat indices (empty once the range is exhausted). */
function piece(range: FlatRange, t: number, perRound: number): [number, number] {
  const lo = Math.min(range.end, range.start + t * perRound);
  return [lo, Math.min(range.end, lo + perRound)];
}

/** Send buffers of {@link reduceScatterGradients}, reused from step to step (never handed out). */
const packCache = new WeakMap<FlatLayout, Float32Array>();

/** A Float32Array of `n` values: `given` when it has that length (else an error), or a new one. */
function outputOf(fn: string, given: Float32Array | undefined, n: number, what: string): Float32Array {
  if (given === undefined) return new Float32Array(n);
  if (!(given instanceof Float32Array) || given.length !== n) {
    throw invalidArgument(fn, 'out', `a Float32Array of ${n} values (${what})`, given);
  }
  return given;
}

/**
 * Packs this rank's gradients into `flatN` in layout order; a variable missing from `grads` counts
 * as zeros.
 */
function packGradients(
  fn: string,
  grads: GradientSet,
  layout: FlatLayout,
  flatN: Float32Array,
): Float32Array {
  if (grads === null || typeof grads !== 'object')
    throw invalidArgument(fn, 'grads', 'gradients by name', grads);
  for (const { key, variable, offset, size } of layout.entries) {
    const g: Tensor | undefined = lookup(grads, key);
    if (g === undefined) {
      flatN.fill(0, offset, offset + size);
      continue;
    }
    if (g.size !== size || g.dtype !== 'float32') {
      throw invalidArgument(
        fn,
        `grads[${JSON.stringify(key)}]`,
        `a float32 tensor of shape [${variable.shape.join(', ')}]`,
        g,
      );
    }
    readInto(g, flatN, offset);
  }
  return flatN;
}

/**
 * Reduce-scatter of gradients: returns the gradient of this rank's range `flatRange(layout, rank, R)`,
 * averaged over ranks (`reduce: 'mean'`, the default) or summed. Ranks' contributions are added in
 * rank order. Messages carry at most `bucketBytes` (rounds of `allToAllV`). A variable missing from
 * `grads` counts as zeros. On one rank it returns the packed gradients. The result is written to
 * `out` when given (reused from step to step, it spares the allocation).
 *
 * When to use: in place of `allReduceGradients` when every rank updates only its own range (a
 * sharded optimizer); follow the update with {@link allGatherVariables}. A collective.
 *
 * @example
 * ```ts
 * const layout = flatLayout(model.namedVariables());
 * const gradN = reduceScatterGradients(ctx.comm, grads, layout); // this rank's range only
 * ```
 */
export function reduceScatterGradients(
  comm: Communicator,
  grads: GradientSet,
  layout: FlatLayout,
  config: Partial<GradientSyncConfig> = {},
  out?: Float32Array,
): Float32Array {
  const fn = 'reduceScatterGradients';
  checkLayout(fn, layout);
  const perRound = bucketValues(config, fn);
  const { reduce } = resolveSync(config, fn);
  const R = comm.worldSize;
  const { ranges, rounds } = plan(comm, layout.total, perRound);
  const mine = ranges[comm.rank]!;
  const outN = outputOf(fn, out, mine.end - mine.start, `this rank's range [${mine.start}, ${mine.end})`);
  if (R === 1) return packGradients(fn, grads, layout, outN);
  let flatN = packCache.get(layout);
  if (flatN === undefined) {
    flatN = new Float32Array(layout.total);
    packCache.set(layout, flatN);
  }
  packGradients(fn, grads, layout, flatN);
  for (let t = 0; t < rounds; t++) {
    const send = ranges.map((range) => {
      const [lo, hi] = piece(range, t, perRound);
      return flatN.subarray(lo, hi);
    });
    const recv = comm.allToAllV(send);
    const [lo, hi] = piece(mine, t, perRound);
    const acc = outN.subarray(lo - mine.start, hi - mine.start);
    for (let r = 0; r < R; r++) {
      const part = recv[r]!;
      if (part.length !== acc.length) throw layoutMismatch(fn, r, part.length, acc.length);
      if (r === 0) acc.set(part);
      else addInto(acc, part);
    }
    if (reduce === 'mean') divideBy(acc, R);
  }
  return outN;
}

/** `acc += part`, element by element (a small function: the engine optimises it early). */
function addInto(acc: Float32Array, part: Float32Array): void {
  for (let i = 0; i < acc.length; i++) acc[i]! += part[i]!;
}

/** `acc /= R`, as allReduce's mean computes it. */
function divideBy(acc: Float32Array, R: number): void {
  for (let i = 0; i < acc.length; i++) acc[i]! /= R;
}

/**
 * The current values of `layout`'s variables in `[range.start, range.end)`, as one flat array
 * (written to `out` when given).
 *
 * When to use: to hand a sharded optimizer the parameters of its range.
 *
 * @example
 * ```ts
 * const paramsN = readFlat(layout, flatRange(layout, ctx.rank, ctx.worldSize));
 * ```
 */
export function readFlat(layout: FlatLayout, range?: FlatRange, out?: Float32Array): Float32Array {
  const fn = 'readFlat';
  checkLayout(fn, layout);
  const { start, end } = range ?? { start: 0, end: layout.total };
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > layout.total || start > end) {
    throw invalidArgument(fn, 'range', `a range inside [0, ${layout.total}]`, `[${start}, ${end})`);
  }
  const outN = outputOf(fn, out, end - start, `the range [${start}, ${end})`);
  for (const { variable, offset, size } of layout.entries) {
    const lo = Math.max(start, offset);
    const hi = Math.min(end, offset + size);
    if (lo < hi) readInto(variable, outN, lo - start, lo - offset, hi - offset);
  }
  return outN;
}

/**
 * Every rank's range of values, gathered into one flat array of `layout.total` values on every rank
 * (rounds of `allGather` of at most `bucketBytes`), written to `out` when given. `part` holds this
 * rank's range.
 *
 * When to use: to assemble a sharded optimizer's state for a checkpoint; {@link allGatherVariables}
 * uses it for the updated parameters. A collective.
 *
 * @example
 * ```ts
 * const fullM = allGatherFlat(ctx.comm, layout, optimizer.m);
 * ```
 */
export function allGatherFlat(
  comm: Communicator,
  layout: FlatLayout,
  part: Float32Array,
  config: Pick<Partial<GradientSyncConfig>, 'bucketBytes'> = {},
  out?: Float32Array,
): Float32Array {
  const fn = 'allGatherFlat';
  checkLayout(fn, layout);
  const perRound = bucketValues(config, fn);
  const { ranges, rounds } = plan(comm, layout.total, perRound);
  const mine = ranges[comm.rank]!;
  if (!(part instanceof Float32Array) || part.length !== mine.end - mine.start) {
    throw invalidArgument(
      fn,
      'part',
      `a Float32Array of this rank's ${mine.end - mine.start} values [${mine.start}, ${mine.end})`,
      part,
    );
  }
  const outN = outputOf(fn, out, layout.total, 'the whole layout');
  if (comm.worldSize === 1) {
    outN.set(part);
    return outN;
  }
  for (let t = 0; t < rounds; t++) {
    const [lo, hi] = piece(mine, t, perRound);
    const got = comm.allGather(part.subarray(lo - mine.start, hi - mine.start));
    got.forEach((values, r) => {
      const [rLo, rHi] = piece(ranges[r]!, t, perRound);
      if (values.length !== rHi - rLo) throw layoutMismatch(fn, r, values.length, rHi - rLo);
      outN.set(values, rLo);
    });
  }
  return outN;
}

/**
 * Assigns `valuesN` (all `layout.total` values, in layout order) to the layout's variables.
 *
 * When to use: after gathering updated parameters, or to apply a flat update on one rank.
 *
 * @example
 * ```ts
 * writeFlat(layout, readFlat(layout)); // a no-op round trip
 * ```
 */
export function writeFlat(layout: FlatLayout, valuesN: Float32Array): void {
  const fn = 'writeFlat';
  checkLayout(fn, layout);
  if (!(valuesN instanceof Float32Array) || valuesN.length !== layout.total) {
    throw invalidArgument(fn, 'valuesN', `a Float32Array of ${layout.total} values`, valuesN);
  }
  for (const { variable, offset, size } of layout.entries) {
    tf.tidy(() =>
      variable.assign(tf.tensor(valuesN.subarray(offset, offset + size), variable.shape, 'float32')),
    );
  }
}

/**
 * Gathers every rank's updated range (`part`, this rank's values of its `flatRange`) and assigns the
 * whole layout to this rank's variables, so every replica holds the same values. `scratch` (all
 * `layout.total` values) holds the gathered values when given.
 *
 * When to use: after each rank has updated its range of a sharded optimizer step. A collective.
 *
 * @example
 * ```ts
 * const gradN = reduceScatterGradients(ctx.comm, grads, layout);
 * const paramsN = readFlat(layout, flatRange(layout, ctx.rank, ctx.worldSize));
 * for (let i = 0; i < paramsN.length; i++) paramsN[i] -= lr * gradN[i];
 * allGatherVariables(ctx.comm, layout, paramsN);
 * ```
 */
export function allGatherVariables(
  comm: Communicator,
  layout: FlatLayout,
  part: Float32Array,
  config: Pick<Partial<GradientSyncConfig>, 'bucketBytes'> = {},
  scratch?: Float32Array,
): void {
  writeFlat(layout, comm.worldSize === 1 ? part : allGatherFlat(comm, layout, part, config, scratch));
}
