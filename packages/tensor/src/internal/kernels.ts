/**
 * Kernel- and gradient-level fixes for what TensorFlow.js lacks or does slowly, installed once per
 * backend so that no caller has to work around them:
 *
 * - wasm has no `UnsortedSegmentSum` kernel, so `tf.gather`'s gradient (and `tf.unsortedSegmentSum`)
 *   fail there: Switchyard's own wasm kernel provides it (memory-kernels.ts; a JS kernel on the
 *   wasm heap for the cases it leaves), dropping negative or out-of-range ids as TensorFlow does.
 * - wasm's BatchMatMul with a transposed operand runs 10-40x slower than without, and batched
 *   products 2-4x slower per FLOP than single ones: every float32 product runs Switchyard's own GEMM
 *   (assembly/gemm.ts) instead, which reads either operand transposed in place and runs a batch as a
 *   loop over offsets; other dtypes keep tfjs's kernel (a transposed operand materialised first). With
 *   an empty inner dimension (a product over zero rows, e.g. a weight gradient of an empty batch) it
 *   returns uninitialised memory: the wrapper returns zeros, the empty sum.
 * - tfjs's BatchMatMul gradient uses transposed products and returns the wrong shape for a broadcast
 *   operand: it is replaced by one that transposes explicitly and sums over broadcast batch dims.
 * - TopK and the comparison ops have no gradient: they are integer decisions, so a zero gradient is
 *   registered (their outputs act as constants on the tape) instead of an error deep in backprop.
 * - wasm's Identity copies its input. The tape clones every tensor a gradient needs (each product's
 *   operands, each custom gradient's saved activations), so training copied its activations once
 *   more per step. Identity shares the input's memory instead (reference-counted, as on the cpu
 *   backend): no kernel writes into its inputs, so a shared buffer is never changed under a clone.
 *   A Cast to the dtype the tensor already has shares it the same way.
 */

import type {
  GradConfig,
  KernelConfig,
  KernelFunc,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
} from '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { installMemoryKernels, jsUnsortedSegmentSum } from './memory-kernels';
import {
  heapOffset,
  installWasmKernels,
  replaceWasmKernel,
  unreplacedWasmKernel,
  wasmKernels,
} from './wasm-kernels';

const installed = new Set<string>();

/** Installs every fix that applies to `backendName`; idempotent. */
export function installKernelFixes(backendName: string): void {
  installGradients();
  if (installed.has(backendName)) return;
  installed.add(backendName);
  if (backendName === 'wasm') {
    if (!tf.getKernel('UnsortedSegmentSum', 'wasm')) tf.registerKernel(jsUnsortedSegmentSum);
    wrapTransposedMatMul('BatchMatMul');
    wrapTransposedMatMul('_FusedMatMul');
    shareIdentity();
    if (installWasmKernels()) {
      fastTranspose();
      installMemoryKernels();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Transpose on wasm at memory speed

/**
 * A permutation as one swap of two adjacent axis groups, `[batch..., rows..., cols..., inner...]`
 * to `[batch..., cols..., rows..., inner...]`, with each group's size; null for any other permutation.
 */
export function swapOfGroups(
  shape: readonly number[],
  perm: readonly number[],
): { batch: number; rows: number; cols: number; inner: number } | null {
  const n = perm.length;
  let a = 0;
  while (a < n && perm[a] === a) a++;
  let z = n;
  while (z > a && perm[z - 1] === z - 1) z--;
  if (a === z) return null;
  // The middle must read [a+k .. z-1, a .. a+k-1].
  const k = perm[a]! - a;
  if (k <= 0 || k >= z - a) return null;
  for (let i = 0; i < z - a; i++) {
    const expected = i < z - a - k ? a + k + i : a + i - (z - a - k);
    if (perm[a + i] !== expected) return null;
  }
  const prod = (from: number, to: number) => shape.slice(from, to).reduce((x, y) => x * y, 1);
  return { batch: prod(0, a), rows: prod(a, a + k), cols: prod(a + k, z), inner: prod(z, n) };
}

function fastTranspose(): void {
  const original = unreplacedWasmKernel('Transpose');
  if (!original) return;
  replaceWasmKernel(original, (args) => {
    const x = args.inputs.x as TensorInfo;
    const perm = (args.attrs as unknown as { perm: number[] }).perm;
    const kernels = wasmKernels();
    const swap = x.dtype === 'float32' || x.dtype === 'int32' ? swapOfGroups(x.shape, perm) : null;
    if (!kernels || !swap) return original.kernelFunc(args);
    const backend = args.backend as BackendWasm;
    const out = backend.makeOutput(
      perm.map((p) => x.shape[p]!),
      x.dtype,
    );
    if (sizeOf(x.shape) > 0) {
      kernels.transpose(
        heapOffset(backend, x),
        heapOffset(backend, out),
        swap.batch,
        swap.rows,
        swap.cols,
        swap.inner,
      );
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Identity for wasm without a copy

function shareIdentity(): void {
  const original = unreplacedWasmKernel('Identity');
  if (!original) return;
  replaceWasmKernel(original, (args) => {
    const x = args.inputs.x as TensorInfo;
    // Strings live outside the heap: the original kernel copies them.
    if (x.dtype === 'string') return original.kernelFunc(args);
    (args.backend as BackendWasm).incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  });
  // A cast to the dtype a tensor already has (every `toFloat()` of float32 data) is an identity too.
  const cast = unreplacedWasmKernel('Cast');
  if (!cast) return;
  replaceWasmKernel(cast, (args) => {
    const x = args.inputs.x as TensorInfo;
    const { dtype } = args.attrs as unknown as { dtype: string };
    if (x.dtype !== dtype || x.dtype === 'string') return cast.kernelFunc(args);
    (args.backend as BackendWasm).incRef(x.dataId);
    return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
  });
}

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// ---------------------------------------------------------------------------------------------
// Transposed-operand matmul on wasm

function swapLastTwo(rank: number): number[] {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return perm;
}

function wrapTransposedMatMul(kernelName: string): void {
  const original = unreplacedWasmKernel(kernelName);
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!original || !transpose) return;
  const kernelFunc: KernelFunc = (args) => {
    const attrs = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!attrs.transposeA && !attrs.transposeB) return original.kernelFunc(args);
    const backend = args.backend as BackendWasm;
    const temps: TensorInfo[] = [];
    const materialise = (x: TensorInfo): TensorInfo => {
      const t = transpose.kernelFunc({
        inputs: { x },
        backend,
        attrs: { perm: swapLastTwo(x.shape.length) },
      }) as TensorInfo;
      temps.push(t);
      return t;
    };
    const inputs: NamedTensorInfoMap = { ...args.inputs };
    if (attrs.transposeA) inputs.a = materialise(args.inputs.a as TensorInfo);
    if (attrs.transposeB) inputs.b = materialise(args.inputs.b as TensorInfo);
    const out = original.kernelFunc({
      inputs,
      backend,
      attrs: { ...(args.attrs as NamedAttrMap), transposeA: false, transposeB: false },
    });
    for (const t of temps) backend.disposeData(t.dataId);
    return out;
  };
  const batchedKernelFunc: KernelFunc = (args) => {
    const attrs = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const backend = args.backend as BackendWasm;
    const temps: TensorInfo[] = [];
    const plain = (x: TensorInfo, transposed: boolean): TensorInfo => {
      if (!transposed) return x;
      const t = transpose.kernelFunc({
        inputs: { x },
        backend,
        attrs: { perm: swapLastTwo(x.shape.length) },
      }) as TensorInfo;
      temps.push(t);
      return t;
    };
    const own = ownProduct(
      backend,
      args.inputs.a as TensorInfo,
      args.inputs.b as TensorInfo,
      attrs.transposeA,
      attrs.transposeB,
    );
    if (own !== null) return own;
    const a = plain(args.inputs.a as TensorInfo, attrs.transposeA);
    const b = plain(args.inputs.b as TensorInfo, attrs.transposeB);
    if (a.shape[a.shape.length - 1] === 0) {
      for (const t of temps) backend.disposeData(t.dataId);
      return emptySumProduct(backend, a, b);
    }
    const noTranspose = { ...(args.attrs as NamedAttrMap), transposeA: false, transposeB: false };
    const out =
      batchedProduct(original, backend, a, b, noTranspose) ??
      (original.kernelFunc({ inputs: { a, b }, backend, attrs: noTranspose }) as TensorInfo);
    for (const t of temps) backend.disposeData(t.dataId);
    return out;
  };
  replaceWasmKernel(original, kernelName === 'BatchMatMul' ? batchedKernelFunc : kernelFunc);
}

/**
 * A product run by Switchyard's GEMM (assembly/gemm.ts), which reads either operand transposed in
 * place through strides, and runs the batch as a loop over offsets (no copies per batch): a batch
 * of products against one shared operand, or equal batches. Null when the kernels are not installed,
 * an operand is not float32, or the batch shapes are ones it leaves to the original kernel (which
 * then reports any shape error).
 */
function ownProduct(
  backend: BackendWasm,
  a: TensorInfo,
  b: TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
): TensorInfo | null {
  const kernels = wasmKernels();
  if (kernels === null || a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  if (a.shape.length < 2 || b.shape.length < 2) return null;
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const [batchA, batchB] = [sizeOf(outerA), sizeOf(outerB)];
  let outer: number[];
  try {
    outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  } catch {
    return null;
  }
  const batch = sizeOf(outer);
  if (batchA !== batch && batchA !== 1) return null;
  if (batchB !== batch && batchB !== 1) return null;
  const [ra, rb] = [a.shape[a.shape.length - 2]!, a.shape[a.shape.length - 1]!];
  const [rb0, rb1] = [b.shape[b.shape.length - 2]!, b.shape[b.shape.length - 1]!];
  const [M, K] = transposeA ? [rb, ra] : [ra, rb];
  const [K2, N] = transposeB ? [rb1, rb0] : [rb0, rb1];
  if (K !== K2) return null;
  const out = backend.makeOutput([...outer, M, N], 'float32');
  if (M * N * batch === 0) return out;
  const scratch = backend.makeOutput([kernels.gemmScratchFloats()], 'float32');
  // Element (m, k) of op(a) and (k, n) of op(b), as byte strides.
  const [aRow, aCol] = transposeA ? [4, M * 4] : [K * 4, 4];
  const [bRow, bCol] = transposeB ? [4, K * 4] : [N * 4, 4];
  const [pa, pb, pc, ps] = [a, b, out, scratch].map((t) => heapOffset(backend, t)) as [
    number,
    number,
    number,
    number,
  ];
  for (let i = 0; i < batch; i++) {
    kernels.gemm(
      pa + (batchA === 1 ? 0 : i * M * K * 4),
      aRow,
      aCol,
      pb + (batchB === 1 ? 0 : i * K * N * 4),
      bRow,
      bCol,
      pc + i * M * N * 4,
      N,
      M,
      N,
      K,
      false,
      ps,
    );
  }
  backend.disposeData(scratch.dataId);
  return out;
}

/** The product of [..., M, 0] and [..., 0, N]: zeros [...broadcast batch, M, N], a sum over nothing. */
function emptySumProduct(backend: BackendWasm, a: TensorInfo, b: TensorInfo): TensorInfo {
  const batch = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const shape = [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!];
  const fill = tf.getKernel('Fill', 'wasm')!;
  return fill.kernelFunc({ inputs: {}, backend, attrs: { shape, value: 0, dtype: a.dtype } }) as TensorInfo;
}

/**
 * wasm's BatchMatMul is fast for one matrix product and ~4-5x slower per FLOP when batch > 1. A batch
 * against a broadcast right operand is one 2-D product ([B*M, K] @ [K, N]); otherwise each batch runs
 * through the single-product path on copies made in wasm memory (copies are O(B(MK + KN + MN)),
 * negligible next to the O(BMKN) product). Returns null for shapes it leaves to the original kernel.
 */
function batchedProduct(
  original: KernelConfig,
  backend: BackendWasm,
  a: TensorInfo,
  b: TensorInfo,
  attrs: NamedAttrMap,
): TensorInfo | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return null;
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = sizeOf(outerA);
  const batchB = sizeOf(outerB);
  const batch = Math.max(batchA, batchB);
  if (batch <= 1) return null;
  let outer: number[];
  try {
    outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  } catch {
    return null; // let the original kernel report the shape error
  }
  if (sizeOf(outer) !== batch || (batchA !== batchB && Math.min(batchA, batchB) !== 1)) return null;
  const M = a.shape[a.shape.length - 2]!;
  const K = a.shape[a.shape.length - 1]!;
  const N = b.shape[b.shape.length - 1]!;
  if (b.shape[b.shape.length - 2] !== K || M * K * N === 0) return null;
  const run = (x: TensorInfo, y: TensorInfo): TensorInfo =>
    original.kernelFunc({ inputs: { a: x, b: y }, backend, attrs }) as TensorInfo;

  if (batchB === 1) {
    // [B, M, K] @ [K, N] as one product: same memory, viewed as [B*M, K].
    const out = run({ dataId: a.dataId, shape: [batch * M, K], dtype: 'float32' }, b);
    out.shape = [...outer, M, N];
    return out;
  }
  const out = backend.makeOutput([...outer, M, N], 'float32');
  const sliceOf = (x: TensorInfo, i: number, rows: number, cols: number): TensorInfo => {
    const part = backend.makeOutput([rows, cols], 'float32');
    const src = backend.typedArrayFromHeap(x) as Float32Array;
    (backend.typedArrayFromHeap(part) as Float32Array).set(
      src.subarray(i * rows * cols, (i + 1) * rows * cols),
    );
    return part;
  };
  const sharedA = batchA === 1 ? { dataId: a.dataId, shape: [M, K], dtype: 'float32' as const } : undefined;
  for (let i = 0; i < batch; i++) {
    const ai = sharedA ?? sliceOf(a, i, M, K);
    const bi = sliceOf(b, i, K, N);
    const ci = run(ai, bi);
    // Views are taken after every allocation: allocating may grow the heap and detach older views.
    const dst = backend.typedArrayFromHeap(out) as Float32Array;
    dst.set(backend.typedArrayFromHeap(ci) as Float32Array, i * M * N);
    if (!sharedA) backend.disposeData(ai.dataId);
    backend.disposeData(bi.dataId);
    backend.disposeData(ci.dataId);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Gradients

let gradientsInstalled = false;

function installGradients(): void {
  if (gradientsInstalled) return;
  gradientsInstalled = true;
  tf.registerGradient(batchMatMulGrad);
  // Integer decisions: their outputs act as constants on the tape (input names as in tfjs's kernels).
  const constantOps: Record<string, readonly string[]> = {
    TopK: ['x'],
    Greater: ['a', 'b'],
    GreaterEqual: ['a', 'b'],
    Less: ['a', 'b'],
    LessEqual: ['a', 'b'],
    Equal: ['a', 'b'],
    NotEqual: ['a', 'b'],
    LogicalAnd: ['a', 'b'],
    LogicalOr: ['a', 'b'],
    LogicalNot: ['x'],
    IsNan: ['x'],
    IsFinite: ['x'],
    IsInf: ['x'],
    ArgMax: ['x'],
    ArgMin: ['x'],
    OneHot: ['indices'],
  };
  for (const [kernelName, inputNames] of Object.entries(constantOps)) {
    if (!tf.getGradient(kernelName)) tf.registerGradient(zeroGradient(kernelName, inputNames));
  }
}

function zeroGradient(kernelName: string, inputNames: readonly string[]): GradConfig {
  return {
    kernelName,
    inputsToSave: [...inputNames],
    gradFunc: (_dy, saved) => {
      const grads: Record<string, () => tf.Tensor> = {};
      inputNames.forEach((name, i) => {
        grads[name] = () => tf.zerosLike(saved[i]!);
      });
      return grads;
    },
  };
}

/** Sums a gradient over the dimensions that were broadcast, then reshapes it to `shape`. */
export function reduceToShape(g: tf.Tensor, shape: readonly number[]): tf.Tensor {
  let out = g;
  const lead = out.rank - shape.length;
  if (lead > 0) out = out.sum(Array.from({ length: lead }, (_, i) => i));
  const axes: number[] = [];
  shape.forEach((d, i) => {
    if (d === 1 && out.shape[i] !== 1) axes.push(i);
  });
  if (axes.length > 0) out = out.sum(axes, true);
  return out.reshape(shape as number[]);
}

const T = (x: tf.Tensor): tf.Tensor => tf.transpose(x, swapLastTwo(x.rank));

const batchMatMulGrad: GradConfig = {
  kernelName: 'BatchMatMul',
  inputsToSave: ['a', 'b'],
  gradFunc: (dy, saved, attrs) => {
    const [a, b] = saved as [tf.Tensor, tf.Tensor];
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const g = dy as tf.Tensor;
    if (wasmKernels() !== null && a.rank === 2 && b.rank === 2) {
      // Switchyard's GEMM reads transposed operands in place: pass the transposes as flags.
      return {
        a: () => (transposeA ? tf.matMul(b, g, transposeB, true) : tf.matMul(g, b, false, !transposeB)),
        b: () => (transposeB ? tf.matMul(g, a, true, transposeA) : tf.matMul(a, g, !transposeA, false)),
      };
    }
    // C = opA(a) opB(b).  d opA(a) = dC opB(b)^T,  d opB(b) = opA(a)^T dC. No transposed products.
    return {
      a: () => {
        const dOpA = tf.matMul(g, transposeB ? b : T(b));
        return reduceToShape(transposeA ? T(dOpA) : dOpA, a.shape);
      },
      b: () => {
        const dOpB = tf.matMul(transposeA ? a : T(a), g);
        return reduceToShape(transposeB ? T(dOpB) : dOpB, b.shape);
      },
    };
  },
};
