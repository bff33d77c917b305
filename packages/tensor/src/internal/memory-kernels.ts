/**
 * The memory-bound kernels of a training step, replaced on wasm by Switchyard's own (assembly/):
 * GatherV2, UnsortedSegmentSum, Slice, Exp and Sum over leading or middle axes. Each replacement
 * handles float32 and int32 tensors (int32 indices) and falls back to the kernel it replaced for
 * anything else. Results are those of the replaced kernels bit for bit, except Exp, which is a
 * vectorised polynomial within 2 ulp of the correctly rounded exp (measured in the tests).
 *
 * tfjs's wasm GatherV2 walks every element through generic strides, its Exp calls libm per
 * element and its Sum transposes the input first when the reduced axes are not the innermost; the
 * replacements copy whole rows, evaluate four lanes at a time and sum columns in place.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapOffset, replaceWasmKernel, unreplacedWasmKernel, wasmKernels } from './wasm-kernels';

const sizeOf = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const fourByte = (t: TensorInfo): boolean => t.dtype === 'float32' || t.dtype === 'int32';

/** Replaces every memory-bound kernel it has a faster version of; call once the module is installed. */
export function installMemoryKernels(): void {
  replace('GatherV2', gatherV2);
  replace('UnsortedSegmentSum', unsortedSegmentSum);
  replace('Slice', slice);
  replace('Exp', exp);
  replace('Sum', sum);
}

type Replacement = (args: Parameters<KernelFunc>[0], backend: BackendWasm) => TensorInfo | null;

/** Replaces kernel `name` by `fast`, which returns null for the cases it leaves to the original. */
function replace(name: string, fast: Replacement): void {
  const original = unreplacedWasmKernel(name);
  if (!original) return;
  replaceWasmKernel(original, (args) => {
    if (wasmKernels() === null) return original.kernelFunc(args);
    return fast(args, args.backend as BackendWasm) ?? original.kernelFunc(args);
  });
}

// ---------------------------------------------------------------------------------------------
// GatherV2

const gatherV2: Replacement = ({ inputs, attrs }, backend) => {
  const x = inputs.x as TensorInfo;
  const indices = inputs.indices as TensorInfo;
  const { axis, batchDims } = attrs as unknown as { axis: number; batchDims: number };
  if (batchDims !== 0 || !fourByte(x) || indices.dtype !== 'int32') return null;
  const k = wasmKernels()!;
  const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
  const dim = x.shape[ax]!;
  const n = sizeOf(indices.shape);
  // As tfjs's kernel: every index must be in range, even when there is nothing to copy.
  if (n > 0) {
    const bad = k.firstIndexOutOfRange(heapOffset(backend, indices), n, dim);
    if (bad >= 0) {
      const value = (backend.typedArrayFromHeap(indices) as Int32Array)[bad];
      throw new Error(`GatherV2: the index value ${value} is not in [0, ${dim - 1}]`);
    }
  }
  const outShape = [...x.shape.slice(0, ax), ...indices.shape, ...x.shape.slice(ax + 1)];
  const out = backend.makeOutput(outShape, x.dtype);
  if (sizeOf(outShape) === 0) return out;
  k.gather(
    heapOffset(backend, x),
    heapOffset(backend, indices),
    heapOffset(backend, out),
    sizeOf(x.shape.slice(0, ax)),
    dim,
    n,
    sizeOf(x.shape.slice(ax + 1)),
  );
  return out;
};

// ---------------------------------------------------------------------------------------------
// UnsortedSegmentSum

const unsortedSegmentSum: Replacement = ({ inputs, attrs }, backend) => {
  const x = inputs.x as TensorInfo;
  const ids = inputs.segmentIds as TensorInfo;
  if (!fourByte(x) || ids.dtype !== 'int32') return null;
  const numSegments = (attrs as unknown as { numSegments: number }).numSegments;
  const n = sizeOf(ids.shape);
  const innerShape = x.shape.slice(ids.shape.length);
  const out = backend.makeOutput([numSegments, ...innerShape], x.dtype);
  const inner = sizeOf(innerShape);
  if (numSegments * inner === 0) return out;
  const k = wasmKernels()!;
  const segmentSum = x.dtype === 'float32' ? k.segmentSumF32 : k.segmentSumI32;
  segmentSum(
    n === 0 ? 0 : heapOffset(backend, x),
    n === 0 ? 0 : heapOffset(backend, ids),
    heapOffset(backend, out),
    inner === 0 ? 0 : n,
    inner,
    numSegments,
  );
  return out;
};

/**
 * UnsortedSegmentSum in JavaScript on the wasm heap (tfjs has none for wasm): the kernel the
 * replacement above falls back to for other dtypes. Negative or out-of-range ids are dropped, as in
 * TensorFlow.
 */
export const jsUnsortedSegmentSum: KernelConfig = {
  kernelName: 'UnsortedSegmentSum',
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend, attrs }) => {
    const x = inputs.x as TensorInfo;
    const ids = inputs.segmentIds as TensorInfo;
    const numSegments = (attrs as { numSegments: number }).numSegments;
    const wasm = backend as BackendWasm;
    const nIds = sizeOf(ids.shape);
    const inner = nIds === 0 ? sizeOf(x.shape.slice(ids.shape.length)) : sizeOf(x.shape) / nIds;
    const outShape = [numSegments, ...x.shape.slice(ids.shape.length)];
    const out = wasm.makeOutput(outShape, x.dtype);
    // Views are taken after makeOutput: allocating may grow the heap and detach earlier views.
    const outVals = wasm.typedArrayFromHeap(out) as Float32Array | Int32Array;
    outVals.fill(0);
    if (nIds === 0) return out;
    const xVals = wasm.typedArrayFromHeap(x) as Float32Array | Int32Array;
    const idVals = wasm.typedArrayFromHeap(ids) as Int32Array;
    for (let i = 0; i < nIds; i++) {
      const seg = idVals[i]!;
      if (seg < 0 || seg >= numSegments) continue;
      const src = i * inner;
      const dst = seg * inner;
      for (let j = 0; j < inner; j++) outVals[dst + j]! += xVals[src + j]!;
    }
    return out;
  },
};

// ---------------------------------------------------------------------------------------------
// Slice

/**
 * A slice of `shape` as at most three strided loops over x, innermost contiguous:
 * out = x[offset + a*s0 + b*s1 + c] for a < d0, b < d1, c < d2; null when it needs more loops.
 * Axes of size 1 are dropped and an axis merges into the next when their elements are adjacent.
 */
export function sliceLoops(
  shape: readonly number[],
  begin: readonly number[],
  size: readonly number[],
): { offset: number; d0: number; d1: number; d2: number; s0: number; s1: number } | null {
  let stride = 1;
  let offset = 0;
  // Innermost first: [extent, stride] of each merged loop.
  const loops: [number, number][] = [];
  for (let i = shape.length - 1; i >= 0; i--) {
    offset += begin[i]! * stride;
    const n = size[i]!;
    if (n !== 1) {
      const last = loops[loops.length - 1];
      if (last && last[0] * last[1] === stride) last[0] *= n;
      else loops.push([n, stride]);
    }
    stride *= shape[i]!;
  }
  if (loops.length === 0 || loops[0]![1] !== 1) loops.unshift([1, 1]);
  if (loops.length > 3) return null;
  while (loops.length < 3) loops.push([1, 0]);
  const [[d2], [d1, s1], [d0, s0]] = loops as [[number, number], [number, number], [number, number]];
  return { offset, d0, d1, d2, s0, s1 };
}

const slice: Replacement = ({ inputs, attrs }, backend) => {
  const x = inputs.x as TensorInfo;
  if (!fourByte(x)) return null;
  const { begin, size } = attrs as unknown as { begin: number | number[]; size: number | number[] };
  const [b, s] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size) as [number[], number[]];
  const loops = sliceLoops(x.shape, b, s);
  if (!loops) return null;
  const out = backend.makeOutput(s, x.dtype);
  if (sizeOf(s) === 0) return out;
  wasmKernels()!.copyBlocks(
    heapOffset(backend, x) + 4 * loops.offset,
    heapOffset(backend, out),
    loops.d0,
    loops.d1,
    loops.d2,
    loops.s0,
    loops.s1,
  );
  return out;
};

// ---------------------------------------------------------------------------------------------
// Exp

const exp: Replacement = ({ inputs }, backend) => {
  const x = inputs.x as TensorInfo;
  if (x.dtype !== 'float32') return null;
  const out = backend.makeOutput(x.shape, 'float32');
  const n = sizeOf(x.shape);
  if (n > 0) wasmKernels()!.expF32(heapOffset(backend, x), heapOffset(backend, out), n);
  return out;
};

// ---------------------------------------------------------------------------------------------
// Sum over leading or middle axes

const sum: Replacement = ({ inputs, attrs }, backend) => {
  const x = inputs.x as TensorInfo;
  if (!fourByte(x)) return null;
  const { axis, keepDims } = attrs as unknown as { axis: number | number[]; keepDims: boolean };
  const axes = [...new Set(tf.util.parseAxisParam(axis, x.shape))].sort((p, q) => p - q);
  if (axes.length === 0) return null;
  const first = axes[0]!;
  const last = axes[axes.length - 1]!;
  // One block of adjacent axes with something after it; a reduction of the innermost axes stays
  // with tfjs's kernel, which reads them in place already.
  if (last - first + 1 !== axes.length) return null;
  const inner = sizeOf(x.shape.slice(last + 1));
  if (inner <= 1) return null;
  const outer = sizeOf(x.shape.slice(0, first));
  const rows = sizeOf(x.shape.slice(first, last + 1));
  const kept = x.shape.filter((_, i) => i < first || i > last);
  const outShape = keepDims ? x.shape.map((d, i) => (i < first || i > last ? d : 1)) : kept;
  const out = backend.makeOutput(outShape, x.dtype);
  if (outer === 0) return out;
  const k = wasmKernels()!;
  (x.dtype === 'float32' ? k.sumColumnsF32 : k.sumColumnsI32)(
    rows === 0 ? 0 : heapOffset(backend, x),
    heapOffset(backend, out),
    outer,
    rows,
    inner,
  );
  return out;
};
