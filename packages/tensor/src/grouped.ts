/**
 * Grouped matrix products: E independent products over contiguous row segments of one tensor, each
 * against its own matrix of a stack (mixture-of-experts FFNs, after rows are sorted by expert). On
 * wasm they run in one call into Switchyard's own SIMD kernel, weights read in place from the stack
 * (no slices, no concatenation), so E experts cost what one product over all rows costs; elsewhere
 * they loop over segments with tfjs's matMul.
 *
 * Shape letters: S rows, E segments (experts), K contracted width, N output width, M rows of a
 * per-segment result.
 */
import * as tf from '@tensorflow/tfjs';
import { invalidArgument, SwitchyardError } from './errors';
import { customGrad, type GradSave } from './grad';
import { wasmGroupedMatMul, wasmGroupedMatMulTransposeA } from './internal/grouped-wasm';
import { wasmKernels } from './internal/wasm-kernels';
import { checkDtype } from './validate';

/** Options of {@link groupedMatMul}. */
export interface GroupedMatMulOptions {
  /** Read each stacked matrix transposed: `b` is `[E, N, K]` and segment e uses `b[e]^T`. Default false. */
  readonly transposeB?: boolean;
}

/**
 * Whether {@link groupedMatMul} and {@link groupedMatMulTransposeA} run as one fused kernel call on
 * the current backend (wasm, after {@link initBackend}); otherwise they loop over segments.
 *
 * When to use: choosing between whole-tensor grouped compute and a per-segment formulation that is
 * faster with tfjs's own kernels.
 *
 * @example
 * ```ts
 * await initBackend({ backend: 'wasm' });
 * groupedMatMulIsFused(); // true
 * ```
 */
export function groupedMatMulIsFused(): boolean {
  return wasmKernels() !== null;
}

/** Segment sizes as int32, checked against the row count and the stack size. */
function checkCounts(fn: string, countsE: ArrayLike<number>, rows: number, E: number): Int32Array {
  if (countsE === null || typeof countsE !== 'object' || typeof countsE.length !== 'number') {
    throw invalidArgument(fn, 'countsE', 'an array of segment sizes', countsE);
  }
  if (countsE.length !== E) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`countsE\` passed to ${fn}() must have one count per stacked matrix (${E}), got ${countsE.length}`,
    );
  }
  const out = new Int32Array(E);
  let total = 0;
  for (let e = 0; e < E; e++) {
    const c = countsE[e]!;
    if (!Number.isInteger(c) || c < 0) throw invalidArgument(fn, `countsE[${e}]`, 'an integer >= 0', c);
    out[e] = c;
    total += c;
  }
  if (total !== rows) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`countsE\` passed to ${fn}() must sum to the number of rows (${rows}), got ${total}`,
    );
  }
  return out;
}

function check2d(fn: string, arg: string, t: unknown, what: string): tf.Tensor2D {
  if (!(t instanceof tf.Tensor) || t.rank !== 2)
    throw invalidArgument(fn, arg, `a 2-D float32 tensor ${what}`, t);
  checkDtype(fn, arg, t, ['float32']);
  return t as tf.Tensor2D;
}

function shapeError(fn: string, arg: string, expected: string, got: readonly number[]): SwitchyardError {
  return new SwitchyardError(
    'SHAPE_MISMATCH',
    `\`${arg}\` passed to ${fn}() must have shape ${expected}, got [${got.join(', ')}]`,
  );
}

/** Segment e's rows of `xSK`, for the per-segment fallback. */
function segments(xSK: tf.Tensor2D, countsE: Int32Array): tf.Tensor2D[] {
  const out: tf.Tensor2D[] = [];
  let row = 0;
  for (const c of countsE) {
    out.push(tf.slice(xSK, [row, 0], [c, xSK.shape[1]]));
    row += c;
  }
  return out;
}

function matrixOf(bEKN: tf.Tensor3D, e: number): tf.Tensor2D {
  const [, K, N] = bEKN.shape;
  return tf.slice(bEKN, [e, 0, 0], [1, K, N]).reshape([K, N]);
}

/** Forward of the NN / NT product, without a gradient. */
function groupedProduct(
  aSK: readonly tf.Tensor2D[],
  countsE: Int32Array,
  bEKN: readonly tf.Tensor3D[],
  transposeB: boolean,
): tf.Tensor2D {
  const S = aSK[0]!.shape[0];
  const N = transposeB ? bEKN[0]!.shape[1] : bEKN[0]!.shape[2];
  if (S === 0 || N === 0) return tf.zeros([S, N]);
  const fast = wasmGroupedMatMul(aSK, bEKN, countsE, transposeB);
  if (fast !== null) return fast;
  return tf.tidy(() => {
    const parts: tf.Tensor2D[] = [];
    const perTerm = aSK.map((a) => segments(a, countsE));
    countsE.forEach((c, e) => {
      if (c === 0) return;
      const terms = perTerm.map(
        (segs, i) => tf.matMul(segs[e]!, matrixOf(bEKN[i]!, e), false, transposeB) as tf.Tensor2D,
      );
      parts.push(terms.length === 1 ? terms[0]! : (tf.addN(terms) as tf.Tensor2D));
    });
    return parts.length === 1 ? parts[0]! : tf.concat(parts, 0);
  });
}

/** Forward of the TN product, without a gradient. */
function groupedProductTransposeA(aSM: tf.Tensor2D, countsE: Int32Array, gSN: tf.Tensor2D): tf.Tensor3D {
  const [M, N] = [aSM.shape[1], gSN.shape[1]];
  const E = countsE.length;
  if (M * N === 0) return tf.zeros([E, M, N]);
  const fast = wasmGroupedMatMulTransposeA(aSM, gSN, countsE);
  if (fast !== null) return fast;
  return tf.tidy(() => {
    const as = segments(aSM, countsE);
    const gs = segments(gSN, countsE);
    const parts = Array.from(countsE, (c, e) =>
      c === 0 ? tf.zeros([M, N]) : tf.matMul(as[e]!, gs[e]!, true, false),
    );
    return tf.stack(parts) as tf.Tensor3D;
  });
}

/**
 * Grouped product: segment e of `a` (the next `countsE[e]` rows) times matrix e of the stack `b`,
 * i.e. `out[rows of e] = a[rows of e] @ b[e]` (or `@ b[e]^T` with `transposeB`). With arrays of
 * tensors it returns the sum of the terms' grouped products (`sum_i a_i @ b_i` per segment), fused
 * into one output. Differentiable in every tensor.
 *
 * When to use: the expert FFNs of a mixture-of-experts layer over rows sorted by expert, one op
 * instead of one product, one slice and one concatenation per expert. On wasm it runs Switchyard's
 * SIMD kernel over all segments in one call; on other backends it loops over segments.
 *
 * @example
 * ```ts
 * const xSK = tf.ones([3, 2]);
 * const wEKN = tf.stack([tf.ones([2, 4]), tf.fill([2, 4], 2)]) as tf.Tensor3D;
 * groupedMatMul(xSK, [1, 2], wEKN); // row 0: 2s, rows 1-2: 4s; shape [3, 4]
 * ```
 */
export function groupedMatMul(
  a: tf.Tensor2D | readonly tf.Tensor2D[],
  countsE: ArrayLike<number>,
  b: tf.Tensor3D | readonly tf.Tensor3D[],
  options: GroupedMatMulOptions = {},
): tf.Tensor2D {
  const FN = 'groupedMatMul';
  const transposeB = options.transposeB ?? false;
  const as = (Array.isArray(a) ? a : [a]) as readonly unknown[];
  const bs = (Array.isArray(b) ? b : [b]) as readonly unknown[];
  if (as.length === 0 || as.length !== bs.length) {
    throw invalidArgument(FN, 'b', `as many stacked matrices as terms of a (${as.length}, at least 1)`, b);
  }
  const aSK = as.map((t, i) => check2d(FN, as.length > 1 ? `a[${i}]` : 'a', t, '[S, K]'));
  const S = aSK[0]!.shape[0];
  let N = -1;
  const bEKN = bs.map((t, i) => {
    const arg = bs.length > 1 ? `b[${i}]` : 'b';
    const what = transposeB ? '[E, N, K]' : '[E, K, N]';
    if (!(t instanceof tf.Tensor) || t.rank !== 3)
      throw invalidArgument(FN, arg, `a 3-D float32 tensor ${what}`, t);
    checkDtype(FN, arg, t, ['float32']);
    const [E, r, c] = t.shape as [number, number, number];
    const [K, n] = transposeB ? [c, r] : [r, c];
    const ai = aSK[i]!;
    if (ai.shape[0] !== S) throw shapeError(FN, `a[${i}]`, `[${S}, K] like a[0]`, ai.shape);
    if (K !== ai.shape[1] || (N >= 0 && n !== N)) {
      const expected = transposeB
        ? `[E, ${N >= 0 ? N : 'N'}, ${ai.shape[1]}]`
        : `[E, ${ai.shape[1]}, ${N >= 0 ? N : 'N'}]`;
      throw shapeError(FN, arg, expected, t.shape);
    }
    if (i > 0 && E !== (bs[0] as tf.Tensor).shape[0])
      throw shapeError(FN, arg, `[${(bs[0] as tf.Tensor).shape[0]}, ...] like b[0]`, t.shape);
    N = n;
    return t as tf.Tensor3D;
  });
  const counts = checkCounts(FN, countsE, S, bEKN[0]!.shape[0]);
  const terms = aSK.length;
  const op = customGrad((...args: [...tf.Tensor[], GradSave]) => {
    const save = args[args.length - 1] as GradSave;
    const inputs = args.slice(0, -1) as tf.Tensor[];
    const xs = inputs.slice(0, terms) as tf.Tensor2D[];
    const ws = inputs.slice(terms) as tf.Tensor3D[];
    save(inputs);
    return {
      value: groupedProduct(xs, counts, ws, transposeB),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const dySN = dy as tf.Tensor2D;
        const sx = saved.slice(0, terms) as tf.Tensor2D[];
        const sw = saved.slice(terms) as tf.Tensor3D[];
        // out = x W (W [K, N]): dx = dy W^T, dW = x^T dy.  out = x W^T (W [N, K]): dx = dy W, dW = dy^T x.
        const dxs = sw.map((w) => groupedProduct([dySN], counts, [w], !transposeB));
        const dws = sx.map((x) =>
          transposeB ? groupedProductTransposeA(dySN, counts, x) : groupedProductTransposeA(x, counts, dySN),
        );
        return [...dxs, ...dws];
      },
    };
  });
  return op(...aSK, ...bEKN) as tf.Tensor2D;
}

/**
 * Grouped product with the segments transposed: `out[e] = a[rows of e]^T @ g[rows of e]`, an
 * `[E, M, N]` stack from `a` [S, M] and `g` [S, N]; a segment without rows gives zeros. This is the
 * weight gradient of {@link groupedMatMul}. Differentiable in both tensors.
 *
 * When to use: per-expert outer-product sums (weight gradients, per-expert statistics) over rows
 * sorted by expert, written straight into one stacked tensor.
 *
 * @example
 * ```ts
 * const aSM = tf.ones([3, 2]);
 * const gSN = tf.ones([3, 4]);
 * groupedMatMulTransposeA(aSM, [0, 3], gSN); // [2, 2, 4]: zeros, then 3s
 * ```
 */
export function groupedMatMulTransposeA(
  a: tf.Tensor2D,
  countsE: ArrayLike<number>,
  g: tf.Tensor2D,
): tf.Tensor3D {
  const FN = 'groupedMatMulTransposeA';
  const aSM = check2d(FN, 'a', a, '[S, M]');
  const gSN = check2d(FN, 'g', g, '[S, N]');
  if (gSN.shape[0] !== aSM.shape[0])
    throw shapeError(FN, 'g', `[${aSM.shape[0]}, N] (one row per row of a)`, gSN.shape);
  const E = countsE?.length;
  if (typeof E !== 'number' || E < 1)
    throw invalidArgument(FN, 'countsE', 'a non-empty array of segment sizes', countsE);
  const counts = checkCounts(FN, countsE, aSM.shape[0], E);
  const op = customGrad((x: tf.Tensor, y: tf.Tensor, save: GradSave) => {
    save([x, y]);
    return {
      value: groupedProductTransposeA(x as tf.Tensor2D, counts, y as tf.Tensor2D),
      gradFunc: (dy: tf.Tensor, [sx, sy]: tf.Tensor[]) => {
        // out_e = x_e^T y_e: dx_e = y_e dout_e^T, dy_e = x_e dout_e.
        const dOut = dy as tf.Tensor3D;
        return [
          groupedProduct([sy as tf.Tensor2D], counts, [dOut], true),
          groupedProduct([sx as tf.Tensor2D], counts, [dOut], false),
        ];
      },
    };
  });
  return op(aSM, gSN) as tf.Tensor3D;
}
