/**
 * Grouped expert compute: every expert's FFN over its contiguous block of dispatched rows, with
 * weights stacked per layer. Two variants with the same result:
 *
 * - dropless: one product per (expert, weight) on exactly that expert's rows; no padding. Forward
 *   and backward are hand-written (one custom gradient for the whole group), so the per-expert
 *   slices never cost a gradient of their own.
 * - padded: rows are laid out [E, C, D] (C = capacity, or the largest count when dropless) and each
 *   weight is one batched product [E, C, D] x [E, D, F]; differentiated by the tape.
 *
 * Shape letters: S dispatched rows, D model width, E experts, F expert hidden width, C padded rows
 * per expert, c one expert's rows.
 */
import {
  backendInfo,
  batchMatMul,
  checkDtype,
  checkOneOf,
  checkShape,
  customGrad,
  type GradSave,
  gelu,
  groupedMatMul,
  groupedMatMulIsFused,
  groupedMatMulTransposeA,
  invalidArgument,
  relu,
  silu,
  swiglu,
  swigluGrad,
  type Tensor2D,
  type Tensor3D,
  tf,
} from '@switchyard/tensor';
import type { ComputeMode, ExpertActivation } from './config';
import { EXPERT_ACTIVATIONS } from './config';
import { type DispatchPlan, paddedRowMap } from './dispatch';
import { gatherRowsByMap, scatterRows, splitRowsRaw, stackExperts, unstackExpertsRaw } from './internal/rows';

/** Stacked weights of E expert FFNs. */
export interface ExpertWeights {
  /** First projection `[E, D, F]` (SwiGLU: the gate projection, Mixtral's w1). */
  readonly w1EDF: Tensor3D;
  /** SwiGLU up projection `[E, D, F]` (Mixtral's w3); absent for GELU and ReLU. */
  readonly w3EDF?: Tensor3D;
  /** Down projection `[E, F, D]` (Mixtral's w2). */
  readonly w2EFD: Tensor3D;
}

/** A compute mode after `auto` is resolved. */
export type ResolvedComputeMode = Exclude<ComputeMode, 'auto'>;

/**
 * Resolves `auto` to the faster variant on the current backend. On wasm and cpu that is
 * `dropless` (wasm's batched product with a per-batch weight runs ~20x slower than its 2-D product;
 * on cpu padding only adds work). On the native `tensorflow` backend it is `padded` when routing has
 * a capacity (batched GEMMs, no per-expert op overhead), else `dropless`.
 *
 * When to use: to know which path a layer will take, e.g. when reporting benchmarks.
 *
 * @example
 * ```ts
 * resolveComputeMode('auto', null); // 'dropless' on wasm
 * ```
 */
export function resolveComputeMode(mode: ComputeMode, capacity: number | null): ResolvedComputeMode {
  checkOneOf('resolveComputeMode', 'mode', mode, ['dropless', 'padded', 'auto'] as const);
  if (mode !== 'auto') return mode;
  let backend: string;
  try {
    backend = backendInfo().name;
  } catch {
    backend = tf.getBackend();
  }
  return backend === 'tensorflow' && capacity !== null ? 'padded' : 'dropless';
}

const FN = 'groupedExperts';

function checkWeights(
  weights: ExpertWeights,
  activation: ExpertActivation,
  d: DispatchPlan,
  D: number,
): number {
  if (weights === null || typeof weights !== 'object') {
    throw invalidArgument(FN, 'weights', 'an ExpertWeights object', weights);
  }
  const E = d.numExperts;
  if (!(weights.w1EDF instanceof tf.Tensor))
    throw invalidArgument(FN, 'weights.w1EDF', 'a tensor [E, D, F]', weights.w1EDF);
  checkShape(FN, 'weights.w1EDF', weights.w1EDF, [E, D, null], 'EDF');
  checkDtype(FN, 'weights.w1EDF', weights.w1EDF, ['float32']);
  const F = weights.w1EDF.shape[2];
  if (!(weights.w2EFD instanceof tf.Tensor))
    throw invalidArgument(FN, 'weights.w2EFD', 'a tensor [E, F, D]', weights.w2EFD);
  checkShape(FN, 'weights.w2EFD', weights.w2EFD, [E, F, D], 'EFD');
  checkDtype(FN, 'weights.w2EFD', weights.w2EFD, ['float32']);
  if (activation === 'swiglu') {
    if (!(weights.w3EDF instanceof tf.Tensor)) {
      throw invalidArgument(FN, 'weights.w3EDF', 'a tensor [E, D, F] for SwiGLU experts', weights.w3EDF);
    }
    checkShape(FN, 'weights.w3EDF', weights.w3EDF, [E, D, F], 'EDF');
    checkDtype(FN, 'weights.w3EDF', weights.w3EDF, ['float32']);
  } else if (weights.w3EDF !== undefined) {
    throw invalidArgument(FN, 'weights.w3EDF', `undefined for ${activation} experts`, weights.w3EDF);
  }
  return F;
}

/**
 * Runs every expert's FFN over its rows of a dispatched batch: row s of the result is
 * `FFN_e(xSD[s])` for the expert e owning row s. Differentiable in `xSD` and every weight.
 *
 * When to use: between {@link dispatch} and {@link combine} when you manage weights yourself;
 * {@link RoutedExperts} wraps all three.
 *
 * @example
 * ```ts
 * const d = buildDispatch(plan);
 * const ySD = groupedExperts(dispatch(xTD, d), d, { w1EDF, w3EDF, w2EFD }, 'swiglu', 'dropless');
 * const yTD = combine(ySD, plan.topkWeightTK, d);
 * ```
 */
export function groupedExperts(
  xSD: Tensor2D,
  d: DispatchPlan,
  weights: ExpertWeights,
  activation: ExpertActivation,
  mode: ComputeMode = 'auto',
): Tensor2D {
  checkOneOf(FN, 'activation', activation, EXPERT_ACTIVATIONS);
  if (!(xSD instanceof tf.Tensor)) throw invalidArgument(FN, 'xSD', 'a 2-D float32 tensor [S, D]', xSD);
  checkShape(FN, 'xSD', xSD, [d.numRows, null], 'SD');
  checkDtype(FN, 'xSD', xSD, ['float32']);
  const D = xSD.shape[1];
  checkWeights(weights, activation, d, D);
  const resolved = resolveComputeMode(mode, d.capacity);
  if (d.numRows === 0) return tf.zeros([0, D]) as Tensor2D;
  if (resolved === 'padded') return paddedExperts(xSD, d, weights, activation);
  return groupedMatMulIsFused()
    ? fusedDroplessExperts(xSD, d, weights, activation)
    : droplessExperts(xSD, d, weights, activation);
}

// ---------------------------------------------------------------------------------------------
// Padded: [E, C, D] x [E, D, F], differentiated by the tape.

/**
 * Every expert's FFN on its padded block of rows: one batched product per weight, [E, C, D] x
 * [E, D, F], differentiated by the tape. Shared by the padded layout of a host plan and the device
 * dispatch (device.ts).
 */
export function paddedExpertFFN(xECD: Tensor3D, w: ExpertWeights, activation: ExpertActivation): Tensor3D {
  const h1ECF = batchMatMul(xECD, w.w1EDF);
  let aECF: Tensor3D;
  if (activation === 'swiglu') aECF = tf.mul(silu(h1ECF), batchMatMul(xECD, w.w3EDF!));
  else if (activation === 'gelu') aECF = gelu(h1ECF) as Tensor3D;
  else aECF = relu(h1ECF) as Tensor3D;
  return batchMatMul(aECF, w.w2EFD);
}

function paddedExperts(
  xSD: Tensor2D,
  d: DispatchPlan,
  w: ExpertWeights,
  activation: ExpertActivation,
): Tensor2D {
  const E = d.numExperts;
  const C = d.paddedCapacity;
  const D = xSD.shape[1];
  const map = paddedRowMap(d);
  return tf.tidy(() => {
    const xECD = scatterRows(xSD, map).reshape([E, C, D]) as Tensor3D; // [E*C, D] -> [E, C, D]
    const yECD = paddedExpertFFN(xECD, w, activation);
    return gatherRowsByMap(yECD.reshape([E * C, D]), map) as Tensor2D; // [E, C, D] -> [E*C, D] -> [S, D]
  });
}

/**
 * `sum_i g_i W_i^T` for token rows g_i [c, n] and weights W_i [m, n]. wasm has no fast transposed
 * product (one operand is transposed first), so there `cheaperOnTokens` (the caller's element
 * count) picks what to transpose: the weights (m x n each), or the token rows and the result
 * (c x n each plus c x m), computing `(sum_i W_i g_i^T)^T`.
 */
function productWithTransposedWeight(g: tf.Tensor[], w: tf.Tensor[], cheaperOnTokens: boolean): tf.Tensor {
  const tokenSide = cheaperOnTokens && tf.getBackend() === 'wasm';
  let out: tf.Tensor | undefined;
  for (let i = 0; i < g.length; i++) {
    const term = tokenSide ? tf.matMul(w[i]!, tf.transpose(g[i]!)) : tf.matMul(g[i]!, w[i]!, false, true);
    out = out === undefined ? term : tf.add(out, term);
  }
  return tokenSide ? tf.transpose(out!) : out!;
}

// ---------------------------------------------------------------------------------------------
// Dropless: one product per (expert, weight) on that expert's rows, one custom gradient.

const INV_SQRT_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** The forward of a grouped-experts custom gradient, given its inputs unpacked (w3 only for SwiGLU). */
type ExpertsForward = (
  x: tf.Tensor2D,
  w1: tf.Tensor3D,
  w3: tf.Tensor3D | undefined,
  w2: tf.Tensor3D,
  save: GradSave,
) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[] };

/** One custom gradient over (x, w1, [w3,] w2), so the tape sees the whole group as one op. */
function expertsOp(xSD: Tensor2D, w: ExpertWeights, gated: boolean, forward: ExpertsForward): Tensor2D {
  const f = customGrad((...args: [...inputs: tf.Tensor[], save: GradSave]) => {
    const save = args[args.length - 1] as GradSave;
    const w3 = gated ? (args[2] as tf.Tensor3D) : undefined;
    return forward(
      args[0] as tf.Tensor2D,
      args[1] as tf.Tensor3D,
      w3,
      args[gated ? 3 : 2] as tf.Tensor3D,
      save,
    );
  });
  const inputs = gated ? [xSD, w.w1EDF, w.w3EDF!, w.w2EFD] : [xSD, w.w1EDF, w.w2EFD];
  return f(...inputs) as Tensor2D;
}

/** a = act(h1) for GELU (exact) or ReLU: the gradient of h1 from that of a. */
function activationGrad(activation: ExpertActivation, da: tf.Tensor, h1: tf.Tensor): tf.Tensor {
  if (activation === 'gelu') {
    const cdf = tf.mul(0.5, tf.add(1, tf.erf(tf.mul(h1, INV_SQRT_2))));
    const pdf = tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(-0.5, tf.square(h1))));
    return tf.mul(da, tf.add(cdf, tf.mul(h1, pdf)));
  }
  return tf.mul(da, tf.step(h1));
}

/** Tensors one expert's backward needs, saved by the forward: x, w1, w2, h1, a (+ w3, h3). */
const SAVED_PER_EXPERT: Record<ExpertActivation, number> = { swiglu: 7, gelu: 5, relu: 5 };

function droplessExperts(
  xSD: Tensor2D,
  d: DispatchPlan,
  w: ExpertWeights,
  activation: ExpertActivation,
): Tensor2D {
  const E = d.numExperts;
  const counts = Array.from(d.countsE);
  const active = counts.flatMap((c, e) => (c > 0 ? [e] : []));
  const gated = activation === 'swiglu';
  const [D, F] = [w.w1EDF.shape[1], w.w1EDF.shape[2]];
  const per = SAVED_PER_EXPERT[activation];

  const forward: ExpertsForward = (x, w1, w3, w2, save) => {
    const xs = splitRowsRaw(x, counts);
    const w1s = unstackExpertsRaw(w1, active);
    const w3s = w3 ? unstackExpertsRaw(w3, active) : [];
    const w2s = unstackExpertsRaw(w2, active);
    const ys: tf.Tensor[] = [];
    const keep: tf.Tensor[] = [];
    active.forEach((_, i) => {
      const xe = xs[i]!;
      const [w1e, w2e] = [w1s[i]!, w2s[i]!];
      const h1 = tf.matMul(xe, w1e); // [c, F]
      if (gated) {
        const w3e = w3s[i]!;
        const h3 = tf.matMul(xe, w3e);
        const a = swiglu(h1, h3); // silu(h1) h3
        ys.push(tf.matMul(a, w2e));
        keep.push(xe, w1e, w2e, h1, a, w3e, h3);
      } else {
        const a = activation === 'gelu' ? gelu(h1) : tf.relu(h1);
        ys.push(tf.matMul(a, w2e));
        keep.push(xe, w1e, w2e, h1, a);
      }
    });
    save(keep);
    const value = ys.length === 1 ? ys[0]! : tf.concat(ys, 0);
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => backward(dy as tf.Tensor2D, saved),
    };
  };

  const backward = (dySD: tf.Tensor2D, saved: tf.Tensor[]): tf.Tensor[] => {
    const dys = splitRowsRaw(dySD, counts);
    const dxs: tf.Tensor[] = [];
    const dW1 = new Map<number, tf.Tensor>();
    const dW3 = new Map<number, tf.Tensor>();
    const dW2 = new Map<number, tf.Tensor>();
    active.forEach((e, i) => {
      const [xe, w1e, w2e, h1, a] = saved.slice(i * per, i * per + 5) as [
        tf.Tensor,
        tf.Tensor,
        tf.Tensor,
        tf.Tensor,
        tf.Tensor,
      ];
      const dy = dys[i]!;
      const xT = tf.transpose(xe); // [D, c]
      dW2.set(e, tf.matMul(tf.transpose(a), dy)); // [F, D]
      const c = xe.shape[0]!;
      const da = productWithTransposedWeight([dy], [w2e], c * (D + F) < D * F); // dy W2^T: [c, F]
      if (gated) {
        const [w3e, h3] = saved.slice(i * per + 5, i * per + 7) as [tf.Tensor, tf.Tensor];
        const [dh1, dh3] = swigluGrad(da, h1, h3);
        dW1.set(e, tf.matMul(xT, dh1));
        dW3.set(e, tf.matMul(xT, dh3));
        dxs.push(productWithTransposedWeight([dh1, dh3], [w1e, w3e], c * (2 * F + D) < 2 * D * F));
      } else {
        const dh1 = activationGrad(activation, da, h1);
        dW1.set(e, tf.matMul(xT, dh1));
        dxs.push(productWithTransposedWeight([dh1], [w1e], c * (F + D) < D * F));
      }
    });
    const dx = dxs.length === 1 ? dxs[0]! : tf.concat(dxs, 0);
    const grads = [dx, stackExperts(dW1, E, [D, F])];
    if (gated) grads.push(stackExperts(dW3, E, [D, F]));
    grads.push(stackExperts(dW2, E, [F, D]));
    return grads;
  };

  return expertsOp(xSD, w, gated, forward);
}

// ---------------------------------------------------------------------------------------------
// Dropless, fused: grouped products over all rows at once (one kernel call per weight on wasm),
// elementwise activations on the whole [S, F], one custom gradient.

function fusedDroplessExperts(
  xSD: Tensor2D,
  d: DispatchPlan,
  w: ExpertWeights,
  activation: ExpertActivation,
): Tensor2D {
  const counts = d.countsE;
  const gated = activation === 'swiglu';

  const forward: ExpertsForward = (x, w1, w3, w2, save) => {
    const h1SF = groupedMatMul(x, counts, w1);
    let aSF: tf.Tensor2D;
    if (w3) {
      const h3SF = groupedMatMul(x, counts, w3);
      aSF = swiglu(h1SF, h3SF) as tf.Tensor2D; // silu(h1) h3
      save([x, w1, w2, h1SF, aSF, w3, h3SF]);
    } else {
      aSF = (activation === 'gelu' ? gelu(h1SF) : tf.relu(h1SF)) as tf.Tensor2D;
      save([x, w1, w2, h1SF, aSF]);
    }
    return {
      value: groupedMatMul(aSF, counts, w2),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => backward(dy as tf.Tensor2D, saved),
    };
  };

  const backward = (dySD: tf.Tensor2D, saved: tf.Tensor[]): tf.Tensor[] => {
    const [x, w1, w2, h1, a] = saved as [tf.Tensor2D, tf.Tensor3D, tf.Tensor3D, tf.Tensor2D, tf.Tensor2D];
    const dW2 = groupedMatMulTransposeA(a, counts, dySD); // [E, F, D]
    const daSF = groupedMatMul(dySD, counts, w2, { transposeB: true }); // dy W2^T: [S, F]
    if (gated) {
      const [w3, h3] = saved.slice(5) as [tf.Tensor3D, tf.Tensor2D];
      const [dh1, dh3] = swigluGrad(daSF, h1, h3) as [tf.Tensor2D, tf.Tensor2D];
      const dx = groupedMatMul([dh1, dh3], counts, [w1, w3], { transposeB: true }); // dh1 W1^T + dh3 W3^T
      return [dx, groupedMatMulTransposeA(x, counts, dh1), groupedMatMulTransposeA(x, counts, dh3), dW2];
    }
    const dh1 = activationGrad(activation, daSF, h1) as tf.Tensor2D;
    const dx = groupedMatMul(dh1, counts, w1, { transposeB: true });
    return [dx, groupedMatMulTransposeA(x, counts, dh1), dW2];
  };

  return expertsOp(xSD, w, gated, forward);
}
