/**
 * Moving tensor values to host arrays without temporary copies.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { invalidArgument } from './errors';

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
  const backend = tf.backend() as unknown as BackendWasm;
  if (tf.getBackend() === 'wasm' && backend.dataIdMap.has(x.dataId)) {
    // A view of the heap: valid until the next allocation, so it is used at once.
    const heap = backend.typedArrayFromHeap(x) as Float32Array;
    out.set(heap.subarray(start, end), outOffset);
    return;
  }
  const values = x.dataSync() as Float32Array;
  out.set(start === 0 && end === values.length ? values : values.subarray(start, end), outOffset);
}
