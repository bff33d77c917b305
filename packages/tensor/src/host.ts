/**
 * Moving tensor values between tensors and host arrays without temporary copies. This is the one
 * place outside the kernel fixes that reads a backend's memory directly (wasm's linear memory).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { invalidArgument } from './errors';

/**
 * The wasm backend when it holds `x`'s values in its linear memory, else undefined. Views of that
 * memory (`typedArrayFromHeap`) stay valid only until the next allocation, which may grow the
 * memory and detach them: take them after allocating and use them at once.
 */
function wasmHolding(x: tf.TensorInfo): BackendWasm | undefined {
  if (tf.getBackend() !== 'wasm') return undefined;
  const backend = tf.backend() as BackendWasm;
  return backend.dataIdMap.has(x.dataId) ? backend : undefined;
}

/**
 * Copies values `[start, end)` of the float32 tensor `x` into `out` at `outOffset`. On wasm the
 * values are read in place from the module's heap and on cpu from the backend's own array, so no
 * intermediate array is allocated (`dataSync()` allocates a copy on wasm); other backends go
 * through `dataSync()`.
 *
 * When to use: to gather many tensors into one preallocated host buffer every step (gradient
 * packing for collectives), where allocating megabytes per step would keep the garbage collector busy.
 *
 * @example
 * ```ts
 * const flat = new Float32Array(5);
 * readInto(tf.tensor1d([1, 2, 3]), flat, 2); // flat = [0, 0, 1, 2, 3]
 * ```
 */
export function readInto(x: tf.Tensor, out: Float32Array, outOffset = 0, start = 0, end = x.size): void {
  const fn = 'readInto';
  if (!(x instanceof tf.Tensor) || x.isDisposed || x.dtype !== 'float32') {
    throw invalidArgument(fn, 'x', 'a live float32 tensor', x);
  }
  if (!(out instanceof Float32Array)) throw invalidArgument(fn, 'out', 'a Float32Array', out);
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > x.size || start > end) {
    throw invalidArgument(fn, '[start, end)', `a range inside [0, ${x.size}]`, `[${start}, ${end})`);
  }
  if (!Number.isInteger(outOffset) || outOffset < 0 || outOffset + (end - start) > out.length) {
    throw invalidArgument(
      fn,
      'outOffset',
      `an offset at which ${end - start} values fit in ${out.length}`,
      outOffset,
    );
  }
  const wasm = wasmHolding(x);
  if (wasm) {
    out.set((wasm.typedArrayFromHeap(x) as Float32Array).subarray(start, end), outOffset);
    return;
  }
  const values = x.dataSync() as Float32Array;
  out.set(start === 0 && end === values.length ? values : values.subarray(start, end), outOffset);
}

const COPYABLE: readonly tf.DataType[] = ['float32', 'int32', 'bool'];

/**
 * Copies `count` consecutive rows (entries along axis 0) of `x`, from row `begin`, into a new
 * tensor of `shape` (by default `[count, ...x.shape.slice(1)]`; any shape of the same size, e.g.
 * the row shape alone to take one row out of a stack). On wasm the block is copied once, straight
 * from the source's memory into the new tensor's; elsewhere it is `tf.slice` plus a reshape. No
 * gradient is recorded.
 *
 * When to use: to take contiguous row blocks out of a tensor on a hot path (per-expert blocks of
 * dispatched rows, one expert's slice of stacked weights): wasm's Slice kernel copies its whole
 * source for every slice.
 *
 * @example
 * ```ts
 * const xTD = tf.tensor2d([[1, 2], [3, 4], [5, 6]]);
 * copyRows(xTD, 1, 2); // [[3, 4], [5, 6]]
 * copyRows(xTD, 2, 1, [2]); // [5, 6]
 * ```
 */
export function copyRows(
  x: tf.Tensor,
  begin: number,
  count: number,
  shape: readonly number[] = [count, ...x.shape.slice(1)],
): tf.Tensor {
  const fn = 'copyRows';
  if (!(x instanceof tf.Tensor) || x.isDisposed || x.rank < 1 || !COPYABLE.includes(x.dtype)) {
    throw invalidArgument(fn, 'x', 'a live float32, int32 or bool tensor of rank >= 1', x);
  }
  const rows = x.shape[0]!;
  if (
    !Number.isInteger(begin) ||
    !Number.isInteger(count) ||
    begin < 0 ||
    count < 0 ||
    begin + count > rows
  ) {
    throw invalidArgument(
      fn,
      '[begin, begin + count)',
      `a range of rows inside [0, ${rows}]`,
      `[${begin}, ${begin + count})`,
    );
  }
  const inner = tf.util.sizeFromShape(x.shape.slice(1));
  if (tf.util.sizeFromShape(shape as number[]) !== count * inner) {
    throw invalidArgument(fn, 'shape', `a shape of ${count * inner} values`, `[${shape.join(', ')}]`);
  }
  const wasm = wasmHolding(x);
  if (!wasm) return tf.tidy(() => tf.slice(x, [begin], [count]).reshape([...shape]));
  const out = wasm.makeOutput([...shape], x.dtype);
  // Both views are taken after the allocation (see wasmHolding).
  wasm
    .typedArrayFromHeap(out)
    .set(wasm.typedArrayFromHeap(x).subarray(begin * inner, (begin + count) * inner));
  return tf.engine().makeTensorFromTensorInfo(out);
}

/**
 * Concatenates host arrays into one new Float32Array (always a fresh array, even for one part).
 *
 * When to use: to join the parts a collective returns (one per rank from an all-gather or an
 * all-to-all) into one buffer before making a tensor of it.
 *
 * @example
 * ```ts
 * concatFloat32([new Float32Array([1, 2]), new Float32Array([3])]); // Float32Array [1, 2, 3]
 * ```
 */
export function concatFloat32(parts: readonly ArrayLike<number>[]): Float32Array {
  return concatInto(new Float32Array(totalLength(parts)), parts);
}

/**
 * Concatenates host arrays into one new Int32Array (always a fresh array, even for one part).
 *
 * When to use: to join integer parts a collective returns (all-gathered expert selections or token
 * ids, one part per rank) into one buffer.
 *
 * @example
 * ```ts
 * concatInt32([new Int32Array([4]), new Int32Array([5, 6])]); // Int32Array [4, 5, 6]
 * ```
 */
export function concatInt32(parts: readonly ArrayLike<number>[]): Int32Array {
  return concatInto(new Int32Array(totalLength(parts)), parts);
}

function totalLength(parts: readonly ArrayLike<number>[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

function concatInto<T extends Float32Array | Int32Array>(out: T, parts: readonly ArrayLike<number>[]): T {
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
