/**
 * SwiGLU's elementwise part on the wasm heap, one pass each way (assembly/swiglu.ts). Each returns
 * null when the kernels are not installed, so callers fall back to tfjs ops.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { heapOffset, wasmKernels } from './wasm-kernels';

/** `gate s up` with s = sigmoid(gate) given; all float32 of one shape. */
export function wasmSwigluForward(gate: tf.Tensor, s: tf.Tensor, up: tf.Tensor): tf.Tensor | null {
  const kernels = wasmKernels();
  if (kernels === null) return null;
  const backend = tf.backend() as BackendWasm;
  const out = backend.makeOutput([...gate.shape], 'float32');
  const p = (t: tf.TensorInfo) => heapOffset(backend, t);
  if (gate.size > 0) kernels.swigluForward(p(gate), p(s), p(up), p(out), gate.size);
  return tf.engine().makeTensorFromTensorInfo(out);
}

/** [dGate, dUp] of `gate s up` from dOut, with s = sigmoid(gate) given. */
export function wasmSwigluBackward(
  dOut: tf.Tensor,
  gate: tf.Tensor,
  s: tf.Tensor,
  up: tf.Tensor,
): [tf.Tensor, tf.Tensor] | null {
  const kernels = wasmKernels();
  if (kernels === null) return null;
  const backend = tf.backend() as BackendWasm;
  const dGate = backend.makeOutput([...gate.shape], 'float32');
  const dUp = backend.makeOutput([...gate.shape], 'float32');
  const p = (t: tf.TensorInfo) => heapOffset(backend, t);
  if (gate.size > 0) kernels.swigluBackward(p(dOut), p(gate), p(s), p(up), p(dGate), p(dUp), gate.size);
  return [tf.engine().makeTensorFromTensorInfo(dGate), tf.engine().makeTensorFromTensorInfo(dUp)];
}
