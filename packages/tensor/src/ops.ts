/**
 * The op toolkit MoE needs, forward and gradient correct on every backend.
 *
 * Shape letters: T tokens (rows), D feature width, E experts, K top-k, N rows of a target.
 * All float outputs are float32.
 */
import * as tf from '@tensorflow/tfjs';
import { invalidArgument, SwitchyardError } from './errors';
import { customGrad, type GradSave } from './grad';
import { type AdamWCoefficients, wasmAdamW } from './internal/adamw-wasm';
import { wasmSwigluBackward, wasmSwigluForward } from './internal/swiglu-wasm';

export type { AdamWCoefficients };

import { checkDtype, checkInt } from './validate';

/** Integer indices: a 1-D int32 tensor or a plain array. */
export type IndexLike = tf.Tensor1D | readonly number[] | Int32Array;

function toIndexTensor(fn: string, arg: string, idx: IndexLike, bound: number): tf.Tensor1D {
  if (idx instanceof tf.Tensor) {
    checkDtype(fn, arg, idx, ['int32']);
    if (idx.rank !== 1) throw invalidArgument(fn, arg, 'a 1-D int32 tensor', idx);
    return idx;
  }
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i]!;
    if (!Number.isInteger(v) || v < 0 || v >= bound) {
      throw invalidArgument(fn, `${arg}[${i}]`, `an integer in [0, ${bound - 1}]`, v);
    }
  }
  return tf.tensor1d(idx instanceof Int32Array ? idx : Array.from(idx), 'int32');
}

/**
 * Gathers rows: `out[i] = xND[idx[i]]`. Differentiable in `xND`; the gradient is a scatter-add
 * (rows gathered twice receive the sum of both gradients).
 *
 * When to use: dispatching token rows to experts, embedding look-ups.
 * Index tensors are not range-checked (that would need a device sync); plain arrays are.
 *
 * @example
 * ```ts
 * const rows = gatherRows(tf.tensor2d([[1, 2], [3, 4]]), [1, 1, 0]); // [[3,4],[3,4],[1,2]]
 * ```
 */
export function gatherRows<R extends tf.Rank>(xND: tf.Tensor<R>, idx: IndexLike): tf.Tensor<R> {
  if (xND.rank < 1) throw invalidArgument('gatherRows', 'xND', 'a tensor of rank >= 1', xND);
  return tf.tidy(() => tf.gather(xND, toIndexTensor('gatherRows', 'idx', idx, xND.shape[0]!), 0));
}

/**
 * Segment sum: `out[s] = sum of srcND[i] over i with segmentIds[i] == s`, for s in [0, numSegments).
 * Ids outside that range are dropped. Differentiable in `srcND` (its gradient gathers rows).
 *
 * When to use: combining expert outputs back into token order, counting.
 *
 * @example
 * ```ts
 * segmentSum(tf.tensor2d([[1], [2], [4]]), [0, 0, 2], 3); // [[3], [0], [4]]
 * ```
 */
export function segmentSum<R extends tf.Rank>(
  srcND: tf.Tensor<R>,
  segmentIds: IndexLike,
  numSegments: number,
): tf.Tensor<R> {
  checkInt('segmentSum', 'numSegments', numSegments, { min: 0 });
  return tf.tidy(() => {
    const ids = toIndexTensor('segmentSum', 'segmentIds', segmentIds, Math.max(numSegments, 1));
    if (ids.shape[0] !== srcND.shape[0]) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `\`segmentIds\` passed to segmentSum() must have one id per row of srcND (${srcND.shape[0]}), got ${ids.shape[0]}`,
      );
    }
    return tf.unsortedSegmentSum(srcND, ids, numSegments);
  });
}

/**
 * PyTorch's `index_add`: returns `targetND` with `srcND[i]` added to row `idx[i]`; duplicate indices
 * are summed. Differentiable in both tensors.
 *
 * @example
 * ```ts
 * indexAdd(tf.zeros([3, 2]), [2, 0, 2], tf.ones([3, 2])); // rows: [1,1], [0,0], [2,2]
 * ```
 */
export function indexAdd<R extends tf.Rank>(
  targetND: tf.Tensor<R>,
  idx: IndexLike,
  srcND: tf.Tensor<R>,
): tf.Tensor<R> {
  if (targetND.shape.slice(1).join(',') !== srcND.shape.slice(1).join(',')) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`srcND\` passed to indexAdd() must have row shape [${targetND.shape.slice(1).join(', ')}] like targetND, got [${srcND.shape.slice(1).join(', ')}]`,
    );
  }
  return tf.tidy(() => tf.add(targetND, segmentSum(srcND, idx, targetND.shape[0]!)) as tf.Tensor<R>);
}

/** Result of {@link topK}. */
export interface TopKResult {
  /** The k largest values along the last axis, in descending order. Carries no gradient. */
  readonly values: tf.Tensor;
  /** Their int32 indices; ties go to the lower index. */
  readonly indices: tf.Tensor;
}

/**
 * Top-k values and indices along the last axis. This is integer work: **neither output carries a
 * gradient** (values act as constants on the tape). To differentiate through the selected scores,
 * gather them from the score tensor with `indices` (e.g. with {@link takeAlongLastAxis}).
 *
 * Ties are broken towards the lower index on every backend.
 *
 * @example
 * ```ts
 * const { indices } = topK(tf.tensor2d([[0.1, 0.7, 0.2]]), 2); // [[1, 2]]
 * ```
 */
export function topK(x: tf.Tensor, k: number): TopKResult {
  const n = x.shape[x.rank - 1] ?? 0;
  checkInt('topK', 'k', k, { min: 0, max: n });
  const { values, indices } = tf.topk(x, k, true);
  return { values, indices };
}

/**
 * `out[..., j] = x[..., idx[..., j]]` for a 2-D `x` [T, E] and int32 `idx` [T, K]. Differentiable in
 * `x` (the gradient scatters into the chosen columns). Uses flat indices: tfjs's batched gather is
 * wrong on wasm.
 *
 * @example
 * ```ts
 * takeAlongLastAxis(tf.tensor2d([[1, 2, 3]]), tf.tensor2d([[2, 0]], undefined, 'int32')); // [[3, 1]]
 * ```
 */
export function takeAlongLastAxis(xTE: tf.Tensor2D, idxTK: tf.Tensor2D): tf.Tensor2D {
  checkDtype('takeAlongLastAxis', 'idxTK', idxTK, ['int32']);
  const [T, E] = xTE.shape;
  if (idxTK.rank !== 2 || idxTK.shape[0] !== T) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`idxTK\` passed to takeAlongLastAxis() must have shape [${T}, K], got [${idxTK.shape.join(', ')}]`,
    );
  }
  const K = idxTK.shape[1];
  return tf.tidy(() => {
    const rowBase = tf.mul(tf.range(0, T, 1, 'int32'), tf.scalar(E, 'int32')).reshape([T, 1]);
    const flat = tf.add(rowBase, idxTK).reshape([T * K]) as tf.Tensor1D;
    return tf.gather(xTE.reshape([T * E]), flat).reshape([T, K]) as tf.Tensor2D;
  });
}

/**
 * Matrix product `a @ b` (optionally of transposes), batched over leading dims with broadcasting.
 * Its gradients never run a transposed-operand product, and on wasm a transposed forward operand is
 * materialised first (tfjs's transposed products run 10-40x slower there).
 *
 * @example
 * ```ts
 * matMul(tf.ones([2, 3]), tf.ones([3, 4])); // [2, 4] filled with 3
 * ```
 */
export function matMul(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  const ka = transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const kb = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
  if (a.rank < 2 || b.rank < 2 || ka !== kb) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `matMul() needs inner dimensions to match: a [${a.shape.join(', ')}]${transposeA ? '^T' : ''} @ b [${b.shape.join(', ')}]${transposeB ? '^T' : ''}`,
    );
  }
  return tf.matMul(a, b, transposeA, transposeB);
}

/**
 * Batched matrix product of two rank-3 tensors `[B, M, K] @ [B, K, N]`, with the same gradient
 * guarantees as {@link matMul}. A batch dim of 1 broadcasts.
 */
export function batchMatMul(
  a: tf.Tensor3D,
  b: tf.Tensor3D,
  transposeA = false,
  transposeB = false,
): tf.Tensor3D {
  if (a.rank !== 3 || b.rank !== 3) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `batchMatMul() needs rank-3 operands, got a [${a.shape.join(', ')}] and b [${b.shape.join(', ')}]`,
    );
  }
  return matMul(a, b, transposeA, transposeB) as tf.Tensor3D;
}

/**
 * One-hot encoding as float32: `out[..., i] = 1` where `i == idx`. No gradient (indices are integers).
 */
export function oneHot(idx: tf.Tensor, depth: number): tf.Tensor {
  checkInt('oneHot', 'depth', depth, { min: 1 });
  checkDtype('oneHot', 'idx', idx, ['int32']);
  return tf.tidy(() => tf.oneHot(idx, depth).toFloat());
}

function lastAxis(x: tf.Tensor, axis: number): number {
  const a = axis < 0 ? x.rank + axis : axis;
  if (a < 0 || a >= x.rank)
    throw invalidArgument('softmax', 'axis', `an axis of a rank-${x.rank} tensor`, axis);
  return a;
}

/**
 * Numerically stable softmax in float32 (subtracts the max before exp), with an exact gradient.
 *
 * @example
 * ```ts
 * softmax(tf.tensor1d([1000, 1000])); // [0.5, 0.5], no overflow
 * ```
 */
export function softmax(x: tf.Tensor, axis = -1): tf.Tensor {
  const ax = lastAxis(x, axis);
  const f = customGrad((xIn: tf.Tensor, save: GradSave) => {
    const x32 = xIn.toFloat();
    const shifted = tf.sub(x32, tf.max(x32, ax, true));
    const e = tf.exp(shifted);
    const y = tf.div(e, tf.sum(e, ax, true));
    save([y]);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const [ys] = saved as [tf.Tensor];
        return tf.mul(ys, tf.sub(dy, tf.sum(tf.mul(dy, ys), ax, true)));
      },
    };
  });
  return tf.tidy(() => f(x));
}

/** Numerically stable log-softmax in float32, with an exact gradient. */
export function logSoftmax(x: tf.Tensor, axis = -1): tf.Tensor {
  const ax = lastAxis(x, axis);
  const f = customGrad((xIn: tf.Tensor, save: GradSave) => {
    const x32 = xIn.toFloat();
    const shifted = tf.sub(x32, tf.max(x32, ax, true));
    const y = tf.sub(shifted, tf.log(tf.sum(tf.exp(shifted), ax, true)));
    save([y]);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const [ys] = saved as [tf.Tensor];
        return tf.sub(dy, tf.mul(tf.exp(ys), tf.sum(dy, ax, true)));
      },
    };
  });
  return tf.tidy(() => f(x));
}

/**
 * Numerically stable `log(sum(exp(x), axis))` in float32, with an exact gradient (the softmax).
 */
export function logSumExp(x: tf.Tensor, axis = -1, keepDims = false): tf.Tensor {
  const ax = lastAxis(x, axis);
  const f = customGrad((xIn: tf.Tensor, save: GradSave) => {
    const x32 = xIn.toFloat();
    const m = tf.max(x32, ax, true);
    const lse = tf.add(m, tf.log(tf.sum(tf.exp(tf.sub(x32, m)), ax, true)));
    save([x32, lse]);
    return {
      value: keepDims ? lse : tf.squeeze(lse, [ax]),
      gradFunc: (dy, saved) => {
        const [xs, l] = saved as [tf.Tensor, tf.Tensor];
        const dyK = keepDims ? dy : tf.expandDims(dy, ax);
        return tf.mul(dyK, tf.exp(tf.sub(xs, l)));
      },
    };
  });
  return tf.tidy(() => f(x));
}

/** Logistic sigmoid in float32: `1 / (1 + exp(-x))`. */
export function sigmoid(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.sigmoid(x.toFloat()));
}

function checkSwigluPair(fn: string, gate: tf.Tensor, up: tf.Tensor): void {
  if (!(gate instanceof tf.Tensor)) throw invalidArgument(fn, 'gate', 'a float32 tensor', gate);
  if (!(up instanceof tf.Tensor)) throw invalidArgument(fn, 'up', 'a float32 tensor', up);
  checkDtype(fn, 'gate', gate, ['float32']);
  checkDtype(fn, 'up', up, ['float32']);
  if (gate.shape.join(',') !== up.shape.join(',')) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`up\` passed to ${fn}() must have the shape of gate [${gate.shape.join(', ')}], got [${up.shape.join(', ')}]`,
    );
  }
}

/**
 * SwiGLU's gating, `silu(gate) * up` elementwise (Shazeer 2020; the FFN of LLaMA, Mixtral,
 * DeepSeek), differentiable in both inputs. On wasm the product and its backward each run as one
 * pass over memory (Switchyard's kernel) instead of a chain of elementwise ops.
 *
 * When to use: between the gate/up projections and the down projection of a SwiGLU FFN; inside a
 * hand-written backward, pair it with {@link swigluGrad}.
 *
 * @example
 * ```ts
 * swiglu(tf.tensor1d([0, 1]), tf.tensor1d([3, 2])); // [0, 2 * sigmoid(1)] = [0, 1.4621]
 * ```
 */
export function swiglu(gate: tf.Tensor, up: tf.Tensor): tf.Tensor {
  checkSwigluPair('swiglu', gate, up);
  const f = customGrad((g: tf.Tensor, u: tf.Tensor, save: GradSave) => {
    save([g, u]);
    const s = tf.sigmoid(g);
    const value = wasmSwigluForward(g, s, u) ?? tf.mul(tf.mul(g, s), u);
    s.dispose();
    return { value, gradFunc: (dy, [sg, su]) => swigluGrad(dy, sg!, su!) };
  });
  return f(gate, up);
}

/**
 * The gradients `[dGate, dUp]` of {@link swiglu} at `(gate, up)` for an output gradient `dOut`:
 * `dUp = dOut silu(gate)`, `dGate = dOut up s (1 + gate (1 - s))` with s = sigmoid(gate).
 *
 * When to use: hand-written backward passes (a custom gradient over a whole FFN) that keep the
 * gate and up activations and need their gradients without recording ops on the tape.
 *
 * @example
 * ```ts
 * const [dGate, dUp] = swigluGrad(tf.ones([2]), tf.tensor1d([0, 1]), tf.tensor1d([3, 2]));
 * // dGate = [1.5, 1.8554], dUp = [0, 0.7311]
 * ```
 */
export function swigluGrad(dOut: tf.Tensor, gate: tf.Tensor, up: tf.Tensor): [tf.Tensor, tf.Tensor] {
  checkSwigluPair('swigluGrad', gate, up);
  if (!(dOut instanceof tf.Tensor) || dOut.shape.join(',') !== gate.shape.join(',')) {
    throw invalidArgument(
      'swigluGrad',
      'dOut',
      `a float32 tensor [${gate.shape.join(', ')}] like gate`,
      dOut,
    );
  }
  const s = tf.sigmoid(gate);
  const fused = wasmSwigluBackward(dOut, gate, s, up);
  if (fused !== null) {
    s.dispose();
    return fused;
  }
  return tf.tidy(() => {
    const dUp = tf.mul(dOut, tf.mul(gate, s));
    // d silu(h)/dh = s (1 + h (1 - s))
    const dGate = tf.mul(tf.mul(dOut, up), tf.mul(s, tf.add(1, tf.mul(gate, tf.sub(1, s)))));
    s.dispose();
    return [dGate, dUp] as [tf.Tensor, tf.Tensor];
  });
}

/**
 * One AdamW update of one float32 tensor, returning the new `[w, m, v]`:
 * `m1 = beta1 m + mScale g`, `v1 = beta2 v + vScale g^2`,
 * `w1 = keep w - step m1 / (sqrt(v1) vNorm + eps)` (`keep w` only when `decay`). The scalars fold
 * the bias corrections, the clipping factor and decoupled weight decay in (the caller computes them
 * once per step). On wasm it is one pass over memory (Switchyard's kernel), elsewhere the same
 * float32 operations in the same order as tfjs ops, so both give the same bits.
 *
 * When to use: inside an optimizer's step, once per variable (then `assign` the results).
 *
 * @example
 * ```ts
 * const c = { beta1: 0.9, beta2: 0.95, mScale: 0.1, vScale: 0.05, step: 1e-3, vNorm: 1, eps: 1e-8, keep: 1 };
 * const [w1, m1, v1] = adamWUpdate(tf.ones([2]), tf.zeros([2]), tf.zeros([2]), tf.ones([2]), c, false);
 * ```
 */
export function adamWUpdate(
  w: tf.Tensor,
  m: tf.Tensor,
  v: tf.Tensor,
  g: tf.Tensor,
  c: AdamWCoefficients,
  decay: boolean,
): [tf.Tensor, tf.Tensor, tf.Tensor] {
  for (const [name, t] of [
    ['m', m],
    ['v', v],
    ['g', g],
  ] as const) {
    if (!(t instanceof tf.Tensor) || t.dtype !== 'float32' || t.shape.join(',') !== w.shape.join(',')) {
      throw invalidArgument('adamWUpdate', name, `a float32 tensor [${w.shape.join(', ')}] like w`, t);
    }
  }
  if (w.dtype !== 'float32') throw invalidArgument('adamWUpdate', 'w', 'a float32 tensor', w);
  return (
    wasmAdamW(w, m, v, g, c, decay && c.keep !== 1) ??
    tf.tidy(() => {
      const m1 = m.mul(c.beta1).add(g.mul(c.mScale));
      const v1 = v.mul(c.beta2).add(g.square().mul(c.vScale));
      const update = m1.mul(c.step).div(v1.sqrt().mul(c.vNorm).add(c.eps));
      const kept = decay && c.keep !== 1 ? w.mul(c.keep) : w;
      return [kept.sub(update), m1, v1] as [tf.Tensor, tf.Tensor, tf.Tensor];
    })
  );
}

/** SiLU (swish): `x * sigmoid(x)`, with a fused exact gradient. */
export function silu(x: tf.Tensor): tf.Tensor {
  const f = customGrad((xIn: tf.Tensor, save: GradSave) => {
    const x32 = xIn.toFloat();
    const s = tf.sigmoid(x32);
    save([x32, s]);
    return {
      value: tf.mul(x32, s),
      gradFunc: (dy, saved) => {
        const [xs, ss] = saved as [tf.Tensor, tf.Tensor];
        // d/dx x s(x) = s (1 + x (1 - s))
        return tf.mul(dy, tf.mul(ss, tf.add(1, tf.mul(xs, tf.sub(1, ss)))));
      },
    };
  });
  return tf.tidy(() => f(x));
}

/** GELU variants: exact (erf) or the tanh approximation used by GPT-2. */
export type GeluApproximation = 'none' | 'tanh';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);
const INV_SQRT_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/**
 * GELU: `x * Phi(x)`, exact (`approximate = 'none'`, default) or with the tanh approximation.
 */
export function gelu(x: tf.Tensor, approximate: GeluApproximation = 'none'): tf.Tensor {
  if (approximate !== 'none' && approximate !== 'tanh')
    throw invalidArgument('gelu', 'approximate', '"none" or "tanh"', approximate);
  const f = customGrad((xIn: tf.Tensor, save: GradSave) => {
    const x32 = xIn.toFloat();
    save([x32]);
    let value: tf.Tensor;
    if (approximate === 'none') {
      value = tf.mul(tf.mul(0.5, x32), tf.add(1, tf.erf(tf.mul(x32, INV_SQRT_2))));
    } else {
      const inner = tf.mul(SQRT_2_OVER_PI, tf.add(x32, tf.mul(0.044715, tf.pow(x32, 3))));
      value = tf.mul(tf.mul(0.5, x32), tf.add(1, tf.tanh(inner)));
    }
    return {
      value,
      gradFunc: (dy, saved) => {
        const [xs] = saved as [tf.Tensor];
        if (approximate === 'none') {
          const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(xs, INV_SQRT_2))));
          const pdf = tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(-0.5, tf.square(xs))));
          return tf.mul(dy, tf.add(cdf, tf.mul(xs, pdf)));
        }
        const x2 = tf.square(xs);
        const inner = tf.mul(SQRT_2_OVER_PI, tf.add(xs, tf.mul(0.044715, tf.mul(x2, xs))));
        const th = tf.tanh(inner);
        const dInner = tf.mul(SQRT_2_OVER_PI, tf.add(1, tf.mul(3 * 0.044715, x2)));
        const grad = tf.add(
          tf.mul(0.5, tf.add(1, th)),
          tf.mul(tf.mul(0.5, xs), tf.mul(tf.sub(1, tf.square(th)), dInner)),
        );
        return tf.mul(dy, grad);
      },
    };
  });
  return tf.tidy(() => f(x));
}

/** ReLU in float32. */
export function relu(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.relu(x.toFloat()));
}
