/**
 * Ops with hand-written gradients: `tf.customGrad` with the types it lacks.
 *
 * tfjs 4.22 calls the forward as `f(...inputs, save)` (the tensors passed to the op, then a function
 * that keeps tensors for the backward pass) and the backward as `gradFunc(dy, saved)`, and checks at
 * run time that the backward returns one gradient per input. Its own types say every argument is
 * `Tensor | GradSaveFunc` and hide the arity, so each call site needed a double cast; these types
 * say what is passed.
 */
import * as tf from '@tensorflow/tfjs';

/** Keeps tensors for the backward pass of a {@link customGrad} op; they arrive there as `saved`, in order. */
export type GradSave = (tensors: tf.Tensor[]) => void;

/**
 * The gradients a {@link customGrad} backward returns: one tensor per input, in input order (a
 * one-input op may return the tensor itself).
 */
export type InputGrads<I extends tf.Tensor[]> = I extends [tf.Tensor]
  ? tf.Tensor | [tf.Tensor]
  : { [K in keyof I]: tf.Tensor };

/** What the forward of a {@link customGrad} op returns: its value and its backward. */
export interface CustomGradResult<I extends tf.Tensor[], O extends tf.Tensor> {
  /** The op's output. */
  readonly value: O;
  /** The backward: `dy` has the shape of `value`; `saved` holds what the forward passed to `save`. */
  readonly gradFunc: (dy: O, saved: tf.Tensor[]) => InputGrads<I>;
}

/**
 * `tf.customGrad` with precise types: builds an op from a forward that returns its value and a
 * hand-written backward. The forward receives the op's inputs, then `save`.
 *
 * When to use: an op whose tape gradient is slow, missing or wrong on some backend (host-side
 * kernels, routing decided inside the op, straight-through estimators).
 *
 * @example
 * ```ts
 * const mulOp = customGrad((a: tf.Tensor, b: tf.Tensor, save: GradSave) => {
 *   save([a, b]);
 *   return {
 *     value: tf.mul(a, b),
 *     gradFunc: (dy, [sa, sb]) => [tf.mul(dy, sb!), tf.mul(dy, sa!)],
 *   };
 * });
 * const [da, db] = tf.grads((a: tf.Tensor, b: tf.Tensor) => mulOp(a, b))([tf.scalar(2), tf.scalar(3)]);
 * // da = 3, db = 2
 * ```
 */
export function customGrad<I extends tf.Tensor[], O extends tf.Tensor>(
  f: (...inputs: I) => CustomGradResult<I, O>,
): (...inputs: I) => O;
export function customGrad<I extends tf.Tensor[], O extends tf.Tensor>(
  f: (...args: [...inputs: I, save: GradSave]) => CustomGradResult<I, O>,
): (...inputs: I) => O;
export function customGrad<I extends tf.Tensor[], O extends tf.Tensor>(
  f: (...args: [...inputs: I, save: GradSave]) => CustomGradResult<I, O>,
): (...inputs: I) => O {
  // The one cast: tfjs types the forward's arguments as `(Tensor | GradSaveFunc)[]`.
  return tf.customGrad(f as unknown as Parameters<typeof tf.customGrad<O>>[0]);
}
