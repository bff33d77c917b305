/**
 * Row movement with host-known integer maps: the permutations behind dispatch, capacity padding
 * and combine, and the per-expert slices of stacked weights. Each op picks the implementation that
 * is fast on the current backend, and the differentiable ones carry a hand-written gradient (the
 * adjoint move), so no backward pass goes through a slow or broken kernel.
 *
 * Why per backend: on wasm, `Slice` copies its whole source for every slice and `GatherV2` and
 * `StridedSlice` run at ~60 ns per element, while the segment-sum kernel installed by
 * initBackend() moves rows at a few ns per element and contiguous blocks can be copied straight
 * out of the module's linear memory (copyRows); on cpu, segment sum costs O(segments x rows)
 * while gather and slice are cheap.
 *
 * Shape letters: N source rows, M destination rows, R most sources per destination row, D row width.
 */
import { copyRows, customGrad, gatherRows, SwitchyardError, segmentSum, tf } from '@switchyard/tensor';

/**
 * A fixed many-to-one row map: source row i goes to destination row `dest[i]`, or nowhere when
 * `dest[i]` is -1. `scatter` moves [N, ...] to [M, ...] (summing rows that meet); `gather` is its
 * adjoint, [M, ...] to [N, ...] with `out[i] = src[dest[i]]` (zero where `dest[i]` is -1).
 */
export interface RowMap {
  readonly dest: Int32Array;
  readonly numSrc: number;
  readonly numDest: number;
}

interface InverseMap {
  /** `srcOf[r][j]`: the r-th source row of destination j, or -1. */
  readonly srcOf: readonly Int32Array[];
  readonly destHasHole: boolean;
  readonly srcHasHole: boolean;
}

const inverses = new WeakMap<RowMap, InverseMap>();

/** Builds a RowMap, checking every destination index. */
export function rowMap(dest: Int32Array, numDest: number): RowMap {
  for (let i = 0; i < dest.length; i++) {
    const d = dest[i]!;
    if (!(d >= -1 && d < numDest)) {
      throw new SwitchyardError('INVALID_ARGUMENT', `row map: dest[${i}] = ${d} is outside [-1, ${numDest})`);
    }
  }
  return { dest, numSrc: dest.length, numDest };
}

function inverseOf(map: RowMap): InverseMap {
  let inv = inverses.get(map);
  if (inv) return inv;
  const fill = new Int32Array(map.numDest);
  let srcHasHole = false;
  for (const d of map.dest) {
    if (d < 0) srcHasHole = true;
    else fill[d]!++;
  }
  let R = 0;
  let destHasHole = false;
  for (const c of fill) {
    if (c > R) R = c;
    if (c === 0) destHasHole = true;
  }
  const srcOf = Array.from({ length: R }, () => new Int32Array(map.numDest).fill(-1));
  fill.fill(0);
  map.dest.forEach((d, i) => {
    if (d >= 0) srcOf[fill[d]!++]![d] = i;
  });
  inv = { srcOf, destHasHole, srcHasHole };
  inverses.set(map, inv);
  return inv;
}

/** Gather is fast on every backend except wasm. */
function gatherIsFast(): boolean {
  return tf.getBackend() !== 'wasm';
}

/** Segment sum is fast on every backend except cpu. */
function scatterIsFast(): boolean {
  return tf.getBackend() !== 'cpu';
}

/** `x` with one zero row appended (index `rows` reads zeros), and the index tensor with -1 mapped there. */
function gatherWithHoles(x: tf.Tensor, idx: Int32Array, hasHole: boolean): tf.Tensor {
  const rows = x.shape[0]!;
  if (!hasHole) return gatherRows(x, tf.tensor1d(idx, 'int32'));
  const padded = tf.concat([x, tf.zeros([1, ...x.shape.slice(1)])], 0);
  const ids = Int32Array.from(idx, (v) => (v < 0 ? rows : v));
  return gatherRows(padded, tf.tensor1d(ids, 'int32'));
}

function emptyRows(rows: number, like: tf.Tensor): tf.Tensor {
  return tf.zeros([rows, ...like.shape.slice(1)], 'float32');
}

/** Scatter `[N, ...]` to `[M, ...]`: `out[dest[i]] += src[i]`. No gradient recorded (see {@link scatterRows}). */
export function scatterRaw(src: tf.Tensor, map: RowMap): tf.Tensor {
  return tf.tidy(() => {
    if (map.numDest === 0 || map.numSrc === 0) return emptyRows(map.numDest, src);
    if (scatterIsFast()) return segmentSum(src, tf.tensor1d(map.dest, 'int32'), map.numDest);
    const inv = inverseOf(map);
    let out = emptyRows(map.numDest, src);
    for (const srcOf of inv.srcOf) out = tf.add(out, gatherWithHoles(src, srcOf, true));
    return out;
  });
}

/** Gather `[M, ...]` to `[N, ...]`: `out[i] = src[dest[i]]`, zero where `dest[i]` is -1. No gradient recorded. */
export function gatherRaw(src: tf.Tensor, map: RowMap): tf.Tensor {
  return tf.tidy(() => {
    if (map.numDest === 0 || map.numSrc === 0) return emptyRows(map.numSrc, src);
    const inv = inverseOf(map);
    if (gatherIsFast()) return gatherWithHoles(src, map.dest, inv.srcHasHole);
    let out: tf.Tensor | undefined;
    for (const srcOf of inv.srcOf) {
      const part = segmentSum(src, tf.tensor1d(srcOf, 'int32'), map.numSrc);
      out = out === undefined ? part : tf.add(out, part);
    }
    return out ?? emptyRows(map.numSrc, src);
  });
}

type Mover = (x: tf.Tensor) => tf.Tensor;

function withAdjoint(forward: Mover, backward: Mover): Mover {
  return customGrad((x: tf.Tensor) => ({
    value: forward(x),
    gradFunc: (dy) => backward(dy),
  }));
}

/** Differentiable scatter along a row map; its gradient is the gather along the same map. */
export function scatterRows(src: tf.Tensor, map: RowMap): tf.Tensor {
  return withAdjoint(
    (x) => scatterRaw(x, map),
    (dy) => gatherRaw(dy, map),
  )(src);
}

/** Differentiable gather along a row map; its gradient is the scatter along the same map. */
export function gatherRowsByMap(src: tf.Tensor, map: RowMap): tf.Tensor {
  return withAdjoint(
    (x) => gatherRaw(x, map),
    (dy) => scatterRaw(dy, map),
  )(src);
}

/**
 * Contiguous row blocks are copied straight out of linear memory on wasm ({@link copyRows}), where
 * `Slice` copies its whole source for every slice; elsewhere the backend's split and unstack serve.
 */
function blockCopyIsFast(): boolean {
  return tf.getBackend() === 'wasm';
}

/**
 * Splits the rows of float32 `x` into consecutive groups of the given sizes (groups of size 0 give
 * no tensor: the result has one entry per non-empty group). No gradient recorded; the adjoint is a concat.
 *
 * When to use: inside a custom-gradient expert computation, to cut the dispatched rows per expert
 * (contiguous copies on wasm, where `Slice` copies its whole source each time).
 *
 * @example
 * ```ts
 * const [x0, x2] = splitRowsRaw(xSD, [3, 0, 5]); // rows 0..2 and 3..7
 * ```
 */
export function splitRowsRaw(x: tf.Tensor, sizes: readonly number[]): tf.Tensor[] {
  const nonEmpty = sizes.filter((s) => s > 0);
  if (nonEmpty.length === 0) return [];
  if (nonEmpty.length === 1) return [x.clone()];
  if (!blockCopyIsFast()) return tf.split(x, nonEmpty, 0);
  const out: tf.Tensor[] = [];
  let offset = 0;
  for (const size of nonEmpty) {
    out.push(copyRows(x, offset, size));
    offset += size;
  }
  return out;
}

/**
 * The slices `w[e]` of a float32 stacked weight [E, ...] for the listed experts. No gradient
 * recorded; the adjoint stacks per-expert gradients (see {@link stackExperts}).
 */
export function unstackExpertsRaw(w: tf.Tensor, experts: readonly number[]): tf.Tensor[] {
  const E = w.shape[0]!;
  const inner = w.shape.slice(1);
  if (!blockCopyIsFast() && experts.length === E) return tf.unstack(w);
  return experts.map((e) => copyRows(w, e, 1, inner));
}

/**
 * Stacks per-expert tensors into [E, ...], with zeros for experts missing from `parts`.
 *
 * When to use: to return the gradient of stacked weights from a backward that computed only the
 * experts (or groups) a batch used.
 *
 * @example
 * ```ts
 * const dW = stackExperts(new Map([[1, dW1]]), 4, [D, F]); // [4, D, F], zeros but for expert 1
 * ```
 */
export function stackExperts(
  parts: ReadonlyMap<number, tf.Tensor>,
  E: number,
  inner: readonly number[],
): tf.Tensor {
  return tf.tidy(() => {
    const zeros = parts.size < E ? tf.zeros(inner as number[]) : undefined;
    const list: tf.Tensor[] = [];
    for (let e = 0; e < E; e++) list.push(parts.get(e) ?? zeros!);
    return tf.stack(list);
  });
}
