/**
 * Shared-basis low-rank factors of a layer's experts: per group g and per expert matrix (w1, w3,
 * w2), `W_i ~ S_g + U_i V_i^T` with U_i [d_in, r] and V_i^T [r, d_out]. Initialised by SVD from
 * trained experts (S_g = mean of the group's W_i, U V^T = the rank-r truncated SVD of W_i - S_g,
 * split as U = U_r sqrt(s), V^T = sqrt(s) V_r^T), or from scratch (random bases and U, zero V^T).
 *
 * Shape letters: E experts, G groups, D model width, F expert hidden width, I = d_in, O = d_out of a
 * matrix ([D, F] for w1 and w3, [F, D] for w2), R rank.
 */
import type { ExpertActivation, ExpertWeights } from '@switchyard/experts';
import { checkNumber, checkOneOf, invalidArgument, Rng, tf } from '@switchyard/tensor';
import { checkGrouping, type ExpertGrouping } from './cluster';
import { svd } from './svd';

/** The expert matrices, in the order banks store them. */
export type MatrixName = 'w1' | 'w3' | 'w2';

/** Host copies of one matrix kind's factors over a layer (row-major). */
export interface MatrixFactors {
  /** d_in of the matrix (D for w1 and w3, F for w2). */
  readonly dIn: number;
  /** d_out of the matrix (F for w1 and w3, D for w2). */
  readonly dOut: number;
  /** Shared bases [G, I, O]. */
  readonly sharedGIO: Float32Array;
  /** Left factors U_i [E, I, R]. */
  readonly uEIR: Float32Array;
  /** Right factors V_i^T [E, R, O]. */
  readonly vtERO: Float32Array;
}

/** Every factor of one compressed MoE layer, on the host. */
export interface LayerFactors {
  readonly numExperts: number;
  readonly dModel: number;
  readonly dFF: number;
  readonly activation: ExpertActivation;
  /** R: rank of every residual. */
  readonly rank: number;
  readonly grouping: ExpertGrouping;
  /** Factors of w1, w3 (SwiGLU only) and w2. */
  readonly matrices: Readonly<Partial<Record<MatrixName, MatrixFactors>>> & {
    readonly w1: MatrixFactors;
    readonly w2: MatrixFactors;
  };
}

/**
 * A {@link LayerFactors} from its parts (the matrices must hold w1, w2 and, for SwiGLU, w3).
 *
 * @example
 * ```ts
 * const f = layerFactors(bank, 16, grouping, { w1, w3, w2 });
 * ```
 */
export function layerFactors(
  shape: Pick<LayerFactors, 'numExperts' | 'dModel' | 'dFF' | 'activation'>,
  rank: number,
  grouping: ExpertGrouping,
  matrices: Partial<Record<MatrixName, MatrixFactors>>,
): LayerFactors {
  const { numExperts, dModel, dFF, activation } = shape;
  return {
    numExperts,
    dModel,
    dFF,
    activation,
    rank,
    grouping,
    matrices: matrices as LayerFactors['matrices'],
  };
}

/** How factors start: `svd` from trained experts, `scratch` random (to be learned by training). */
export type FactorInit = 'svd' | 'scratch';

/** Options of {@link factorizeExperts}. */
export interface FactorizeOptions {
  /** Rank R of each expert's residual, in [1, min(d_in, d_out)] of every matrix (min(D, F)). */
  readonly rank: number;
  readonly grouping: ExpertGrouping;
  /** `svd` (default) or `scratch`. */
  readonly init?: FactorInit;
  /** Scratch init: the generator of the random bases and left factors. */
  readonly rng?: Rng;
  /** Scratch init: standard deviation of the random bases and left factors. Default 0.02. */
  readonly initStd?: number;
}

/** Relative reconstruction error of one expert, `||W - S - U V^T||_F / ||W||_F`, per matrix and over all. */
export interface ExpertError {
  readonly expert: number;
  readonly group: number;
  readonly w1: number;
  readonly w3?: number;
  readonly w2: number;
  /** Over the expert's matrices together: sqrt(sum of squared errors / sum of squared norms). */
  readonly total: number;
}

/** What {@link factorizeExperts} returns. */
export interface FactorizeResult {
  readonly factors: LayerFactors;
  /** One entry per expert (the scratch init reports the error of its random start). */
  readonly errors: readonly ExpertError[];
}

/** Every matrix a bank of `activation` experts has, with its [d_in, d_out]. */
export function matrixShapes(
  activation: ExpertActivation,
  D: number,
  F: number,
): [MatrixName, number, number][] {
  return activation === 'swiglu'
    ? [
        ['w1', D, F],
        ['w3', D, F],
        ['w2', F, D],
      ]
    : [
        ['w1', D, F],
        ['w2', F, D],
      ];
}

/**
 * Checks that rank `rank` fits every matrix of experts with width D and hidden width F: r <= min(d_in,
 * d_out) = min(D, F). The error names the constraint and the matrix; returns the rank.
 *
 * When to use: to refuse a bad rank before a long job (the compressing functions check it too).
 *
 * @example
 * ```ts
 * checkRank('myTool', 16, 128, 256); // 16
 * ```
 */
export function checkRank(fn: string, rank: number, D: number, F: number): number {
  if (!Number.isInteger(rank) || rank < 1) throw invalidArgument(fn, 'rank', 'an integer >= 1', rank);
  const most = Math.min(D, F);
  if (rank > most)
    throw invalidArgument(
      fn,
      'rank',
      `<= min(d_in, d_out) = min(${D}, ${F}) = ${most}, the largest rank a ${D} x ${F} expert matrix allows`,
      rank,
    );
  return rank;
}

/** Row-major host copy of a stacked weight and its [E, I, O]. */
function hostOf(t: tf.Tensor): { data: Float32Array; E: number; I: number; O: number } {
  return { data: t.dataSync() as Float32Array, E: t.shape[0]!, I: t.shape[1]!, O: t.shape[2]! };
}

/** Factorises one matrix kind; returns its factors and each expert's squared error and squared norm. */
function factorizeMatrix(
  w: { data: Float32Array; E: number; I: number; O: number },
  grouping: ExpertGrouping,
  R: number,
  init: FactorInit,
  rng: Rng,
  std: number,
): { factors: MatrixFactors; err2: Float64Array; norm2: Float64Array } {
  const { data, E, I, O } = w;
  const n = I * O;
  const G = grouping.numGroups;
  const sharedGIO = new Float32Array(G * n);
  const uEIR = new Float32Array(E * I * R);
  const vtERO = new Float32Array(E * R * O);
  const err2 = new Float64Array(E);
  const norm2 = new Float64Array(E);
  for (let e = 0; e < E; e++) for (let k = 0; k < n; k++) norm2[e]! += data[e * n + k]! ** 2;

  if (init === 'scratch') {
    const [rs, ru] = [rng.fork('shared'), rng.fork('u')];
    for (let k = 0; k < sharedGIO.length; k++) sharedGIO[k] = rs.normal(0, std);
    for (let k = 0; k < uEIR.length; k++) uEIR[k] = ru.normal(0, std);
  } else {
    grouping.groups.forEach((members, g) => {
      const mean = new Float64Array(n);
      for (const e of members) for (let k = 0; k < n; k++) mean[k]! += data[e * n + k]!;
      for (let k = 0; k < n; k++) mean[k]! /= members.length;
      sharedGIO.set(mean, g * n);
      for (const e of members) {
        const residual = new Float64Array(n);
        let any = false;
        for (let k = 0; k < n; k++) {
          residual[k] = data[e * n + k]! - mean[k]!;
          if (residual[k] !== 0) any = true;
        }
        if (!any) continue; // a group of one: the basis is the expert, the residual is zero
        const d = svd(residual, I, O, R);
        for (let k = 0; k < R; k++) {
          const root = Math.sqrt(d.s[k]!);
          for (let i = 0; i < I; i++) uEIR[(e * I + i) * R + k] = d.uMR[i * R + k]! * root;
          for (let o = 0; o < O; o++) vtERO[(e * R + k) * O + o] = root * d.vNR[o * R + k]!;
        }
      }
    });
  }
  // Errors of what was stored (float32), measured against the original weights.
  for (let e = 0; e < E; e++) {
    const g = grouping.groupOf[e]!;
    for (let i = 0; i < I; i++) {
      for (let o = 0; o < O; o++) {
        let approx = sharedGIO[g * n + i * O + o]!;
        for (let k = 0; k < R; k++) approx += uEIR[(e * I + i) * R + k]! * vtERO[(e * R + k) * O + o]!;
        err2[e]! += (data[e * n + i * O + o]! - approx) ** 2;
      }
    }
  }
  return { factors: { dIn: I, dOut: O, sharedGIO, uEIR, vtERO }, err2, norm2 };
}

const FN = 'factorizeExperts';

/**
 * Compresses a layer's stacked expert weights into shared bases and rank-R factors per the grouping:
 * by SVD of each expert's residual from its group's mean (the best rank-R fit of that residual), or
 * from scratch. Returns host copies (a {@link CompressedExperts} bank takes them) and the relative
 * reconstruction error of every expert. At R = min(D, F) every expert is reproduced exactly (up to
 * float32 rounding), and so is an expert alone in its group at any R.
 *
 * When to use: to compress trained experts; {@link compressModel} calls it for every MoE layer.
 *
 * @example
 * ```ts
 * const { factors, errors } = factorizeExperts(experts.weights(), 'swiglu', { rank: 16, grouping });
 * ```
 */
export function factorizeExperts(
  weights: ExpertWeights,
  activation: ExpertActivation,
  options: FactorizeOptions,
): FactorizeResult {
  if (weights === null || typeof weights !== 'object' || !(weights.w1EDF instanceof tf.Tensor))
    throw invalidArgument(FN, 'weights', 'an ExpertWeights object ({ w1EDF, w3EDF?, w2EFD })', weights);
  checkOneOf(FN, 'activation', activation, ['swiglu', 'gelu', 'relu'] as const);
  if (options === null || typeof options !== 'object')
    throw invalidArgument(FN, 'options', 'a FactorizeOptions object ({ rank, grouping })', options);
  const [E, D, F] = weights.w1EDF.shape;
  const R = checkRank(FN, options.rank, D, F);
  const grouping = checkGrouping(FN, 'options.grouping', options.grouping, E);
  const init = checkOneOf(FN, 'options.init', options.init ?? 'svd', ['svd', 'scratch'] as const);
  const std = checkNumber(FN, 'options.initStd', options.initStd ?? 0.02, { min: 0, minExclusive: true });
  const rng = options.rng ?? new Rng(0);
  if (activation === 'swiglu' && !(weights.w3EDF instanceof tf.Tensor))
    throw invalidArgument(FN, 'weights.w3EDF', 'a tensor [E, D, F] for SwiGLU experts', weights.w3EDF);
  const tensors: Record<MatrixName, tf.Tensor | undefined> = {
    w1: weights.w1EDF,
    w3: activation === 'swiglu' ? weights.w3EDF : undefined,
    w2: weights.w2EFD,
  };
  const matrices: Partial<Record<MatrixName, MatrixFactors>> = {};
  const err2 = new Map<MatrixName, Float64Array>();
  const norm2 = new Map<MatrixName, Float64Array>();
  for (const [name, I, O] of matrixShapes(activation, D, F)) {
    const t = tensors[name]!;
    if (t.rank !== 3 || t.shape[0] !== E || t.shape[1] !== I || t.shape[2] !== O)
      throw invalidArgument(FN, `weights.${name}`, `a tensor [${E}, ${I}, ${O}]`, t.shape);
    const r = factorizeMatrix(hostOf(t), grouping, R, init, rng.fork(name), std);
    matrices[name] = r.factors;
    err2.set(name, r.err2);
    norm2.set(name, r.norm2);
  }
  const rel = (name: MatrixName, e: number) => {
    const n = norm2.get(name)![e]!;
    return n > 0 ? Math.sqrt(err2.get(name)![e]! / n) : Math.sqrt(err2.get(name)![e]!);
  };
  const errors: ExpertError[] = Array.from({ length: E }, (_, e) => {
    let se = 0;
    let sn = 0;
    for (const name of err2.keys()) {
      se += err2.get(name)![e]!;
      sn += norm2.get(name)![e]!;
    }
    return {
      expert: e,
      group: grouping.groupOf[e]!,
      w1: rel('w1', e),
      ...(err2.has('w3') ? { w3: rel('w3', e) } : {}),
      w2: rel('w2', e),
      total: sn > 0 ? Math.sqrt(se / sn) : Math.sqrt(se),
    };
  });
  return {
    factors: layerFactors({ numExperts: E, dModel: D, dFF: F, activation }, R, grouping, matrices),
    errors,
  };
}
