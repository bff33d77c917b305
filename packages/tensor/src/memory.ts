/**
 * Memory scopes and leak checks. Every op runs inside a scope; tests assert that the number of live
 * tensors is the same before and after.
 */
import * as tf from '@tensorflow/tfjs';
import { SwitchyardError } from './errors';

/** Anything holding tensors: a tensor, an array, or an object whose values hold tensors. */
export type TensorContainer =
  | tf.Tensor
  | readonly TensorContainer[]
  | { readonly [k: string]: TensorContainer | unknown }
  | null
  | undefined;

/**
 * Disposes every tensor found in the arguments (arrays and plain objects are walked).
 *
 * @example
 * ```ts
 * disposeAll(plan, [a, b], { w: c });
 * ```
 */
export function disposeAll(...items: unknown[]): void {
  const seen = new Set<unknown>();
  const walk = (v: unknown): void => {
    if (v === null || v === undefined || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (v instanceof tf.Tensor) {
      if (!v.isDisposed) v.dispose();
      return;
    }
    if (Array.isArray(v)) v.forEach(walk);
    else if (Object.getPrototypeOf(v) === Object.prototype) Object.values(v).forEach(walk);
  };
  items.forEach(walk);
}

/** Number of live tensors in the engine. */
export function liveTensors(): number {
  return tf.memory().numTensors;
}

/**
 * Runs `fn` and throws TENSOR_LEAK if it leaves more live tensors than it found, counting the
 * tensors in its result as intended (they are disposed by the check). Works for sync and async fns.
 *
 * When to use: in tests, around any call that should release everything it allocated.
 *
 * @example
 * ```ts
 * await expectNoLeaks(() => tf.tidy(() => softmax(x).sum()));
 * ```
 */
export async function expectNoLeaks<R>(fn: () => R | Promise<R>, label = 'scope'): Promise<void> {
  const before = liveTensors();
  const result = await fn();
  disposeAll(result);
  const after = liveTensors();
  if (after !== before) {
    throw new SwitchyardError(
      'TENSOR_LEAK',
      `${label} leaked ${after - before} tensor(s): ${before} live before, ${after} after`,
      { details: { before, after } },
    );
  }
}

/**
 * Runs `fn` in a tidy scope and keeps only the tensors in its return value; like `tf.tidy` but
 * accepts any return shape (plain objects of tensors included). Kept tensors belong to the enclosing
 * scope, exactly as with `tf.tidy`: an outer tidy or gradient scope still releases them.
 */
export function scoped<R>(fn: () => R): R {
  let out!: R;
  tf.tidy(() => {
    out = fn();
    const keep: tf.Tensor[] = [];
    collect(out, keep, new Set());
    // Returning the tensors hands them to the enclosing scope (tf.keep would make them escape it).
    return keep;
  });
  return out;
}

function collect(v: unknown, into: tf.Tensor[], seen: Set<unknown>): void {
  if (v === null || v === undefined || typeof v !== 'object' || seen.has(v)) return;
  seen.add(v);
  if (v instanceof tf.Tensor) {
    into.push(v);
    return;
  }
  const children = Array.isArray(v)
    ? v
    : Object.getPrototypeOf(v) === Object.prototype
      ? Object.values(v)
      : [];
  for (const x of children) collect(x, into, seen);
}
