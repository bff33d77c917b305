/**
 * Grouped products on the wasm heap: every expert's product over its contiguous row segment in one
 * call into the kernel module (assembly/gemm.ts), weights read in place from the stacked tensor.
 * Each returns null when the kernels are not installed (another backend), so callers fall back.
 *
 * Shape letters: S rows, E experts (segments), K contracted width, N output width, M rows of a
 * per-expert output.
 */
import type { TensorInfo } from '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapOffset, type WasmKernelExports, wasmKernels } from './wasm-kernels';

interface Call {
  readonly kernels: WasmKernelExports;
  readonly backend: BackendWasm;
  /** Heap offset of a tensor; take offsets after the last allocation (they do not move, views do). */
  readonly ptr: (t: TensorInfo) => number;
  readonly scratch: TensorInfo;
  readonly counts: TensorInfo;
}

/** Allocates scratch and the counts array on the heap, runs `body`, frees them. */
function withScratch<T>(countsE: Int32Array, body: (call: Call) => T): T | null {
  const kernels = wasmKernels();
  if (kernels === null) return null;
  const backend = tf.backend() as BackendWasm;
  const scratch = backend.makeOutput([kernels.gemmScratchFloats()], 'float32');
  const counts = backend.makeOutput([Math.max(countsE.length, 1)], 'int32');
  try {
    (backend.typedArrayFromHeap(counts) as Int32Array).set(countsE);
    return body({ kernels, backend, ptr: (t) => heapOffset(backend, t), scratch, counts });
  } finally {
    backend.disposeData(scratch.dataId);
    backend.disposeData(counts.dataId);
  }
}

/**
 * `sum_i aSK_i B_i[e]` per segment: [S, N] from terms aSK_i [S, K_i] and bEKN_i [E, K_i, N] (or
 * [E, N, K_i] read transposed when `transposeB`). Shapes are the caller's to check.
 */
export function wasmGroupedMatMul(
  aSK: readonly tf.Tensor2D[],
  bEKN: readonly tf.Tensor3D[],
  countsE: Int32Array,
  transposeB: boolean,
): tf.Tensor2D | null {
  return withScratch(countsE, (call) => {
    const S = aSK[0]!.shape[0];
    const N = transposeB ? bEKN[0]!.shape[1] : bEKN[0]!.shape[2];
    const out = call.backend.makeOutput([S, N], 'float32');
    aSK.forEach((a, i) => {
      call.kernels.groupedGemm(
        call.ptr(a),
        call.ptr(bEKN[i]!),
        call.ptr(out),
        call.ptr(call.counts),
        countsE.length,
        a.shape[1],
        N,
        transposeB,
        i > 0,
        call.ptr(call.scratch),
      );
    });
    return tf.engine().makeTensorFromTensorInfo(out) as tf.Tensor2D;
  });
}

/** `aSM_e^T gSN_e` per segment: [E, M, N]; segments without rows get zeros. */
export function wasmGroupedMatMulTransposeA(
  aSM: tf.Tensor2D,
  gSN: tf.Tensor2D,
  countsE: Int32Array,
): tf.Tensor3D | null {
  return withScratch(countsE, (call) => {
    const [M, N] = [aSM.shape[1], gSN.shape[1]];
    const out = call.backend.makeOutput([countsE.length, M, N], 'float32');
    call.kernels.groupedGemmTN(
      call.ptr(aSM),
      call.ptr(gSN),
      call.ptr(out),
      call.ptr(call.counts),
      countsE.length,
      M,
      N,
      false,
      call.ptr(call.scratch),
    );
    return tf.engine().makeTensorFromTensorInfo(out) as tf.Tensor3D;
  });
}
