/**
 * One AdamW update on the wasm heap in a single pass (assembly/adamw.ts); null when the kernels are
 * not installed, so the caller falls back to tfjs ops.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapOffset, wasmKernels } from './wasm-kernels';

/** The scalars of one update (see `adamWUpdate` in ops.ts). */
export interface AdamWCoefficients {
  readonly beta1: number;
  readonly beta2: number;
  readonly mScale: number;
  readonly vScale: number;
  readonly step: number;
  readonly vNorm: number;
  readonly eps: number;
  readonly keep: number;
}

export function wasmAdamW(
  w: tf.Tensor,
  m: tf.Tensor,
  v: tf.Tensor,
  g: tf.Tensor,
  c: AdamWCoefficients,
  decay: boolean,
): [tf.Tensor, tf.Tensor, tf.Tensor] | null {
  const kernels = wasmKernels();
  if (kernels === null) return null;
  const backend = tf.backend() as BackendWasm;
  const outs = [0, 1, 2].map(() => backend.makeOutput([...w.shape], 'float32'));
  const p = (t: tf.TensorInfo) => heapOffset(backend, t);
  if (w.size > 0) {
    kernels.adamw(
      p(w),
      p(m),
      p(v),
      p(g),
      p(outs[0]!),
      p(outs[1]!),
      p(outs[2]!),
      w.size,
      c.beta1,
      c.beta2,
      c.mScale,
      c.vScale,
      c.step,
      c.vNorm,
      c.eps,
      c.keep,
      decay,
    );
  }
  const [w1, m1, v1] = outs.map((o) => tf.engine().makeTensorFromTensorInfo(o));
  return [w1!, m1!, v1!];
}
