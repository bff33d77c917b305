/**
 * Expert similarity, the input of expert clustering: structural (cosine of the experts' flattened
 * weights), functional (cosine of their activation centroids, where a token's embedding is its
 * router-logit vector) and the fused `S = lambda * structural + (1 - lambda) * functional`.
 *
 * Shape letters: T tokens, E experts, K slots per token, D model width, F expert hidden width.
 */
import type { ExpertWeights } from '@switchyard/experts';
import type { RoutingPlan } from '@switchyard/routing';
import { checkInt, checkNumber, invalidArgument, SwitchyardError, tf } from '@switchyard/tensor';

/** An E x E similarity matrix: `s[i][j]` for experts i and j, symmetric, 1 on the diagonal. */
export type SimilarityMatrix = number[][];

/**
 * The default weight of structural similarity in the fused similarity: 0.5, equal weights. Chosen by
 * measurement on the default model (G 2, r 4 and 16, lambda in {0, 0.25, 0.5, 0.75, 1}): every
 * lambda below 1 gave the same groups, with a reconstruction error and evaluation loss after
 * compression lower than or equal to structural similarity alone (lambda 1); the differences were
 * at most 0.0015 nats. The compression guide's "Choosing lambda" section has the command and numbers.
 */
export const DEFAULT_LAMBDA = 0.5;

/** Cosine similarity of every pair of rows of `rows` (E rows of equal length); 0 against an all-zero row. */
function cosineMatrix(fn: string, arg: string, rows: readonly ArrayLike<number>[]): SimilarityMatrix {
  const E = rows.length;
  if (E === 0) throw invalidArgument(fn, arg, 'at least one expert', rows);
  const n = rows[0]!.length;
  const norms = rows.map((r, i) => {
    if (r.length !== n) throw invalidArgument(fn, `${arg}[${i}]`, `${n} values like ${arg}[0]`, r.length);
    let s = 0;
    for (let k = 0; k < n; k++) {
      const v = r[k]!;
      if (!Number.isFinite(v)) throw invalidArgument(fn, `${arg}[${i}][${k}]`, 'a finite number', v);
      s += v * v;
    }
    return Math.sqrt(s);
  });
  const out: SimilarityMatrix = Array.from({ length: E }, () => new Array<number>(E).fill(0));
  for (let i = 0; i < E; i++) {
    out[i]![i] = 1;
    for (let j = i + 1; j < E; j++) {
      let dot = 0;
      const [a, b] = [rows[i]!, rows[j]!];
      for (let k = 0; k < n; k++) dot += a[k]! * b[k]!;
      const c = norms[i]! > 0 && norms[j]! > 0 ? dot / (norms[i]! * norms[j]!) : 0;
      out[i]![j] = c;
      out[j]![i] = c;
    }
  }
  return out;
}

/**
 * Each expert's weights flattened into one vector: `w1[e]`, then `w3[e]` (SwiGLU), then `w2[e]`.
 *
 * When to use: to compare experts yourself; {@link structuralSimilarity} uses it.
 *
 * @example
 * ```ts
 * const [v0] = flattenExperts(experts.weights()); // D*F + D*F + F*D values for a SwiGLU expert
 * ```
 */
export function flattenExperts(weights: ExpertWeights): Float32Array[] {
  const fn = 'flattenExperts';
  if (weights === null || typeof weights !== 'object' || !(weights.w1EDF instanceof tf.Tensor))
    throw invalidArgument(fn, 'weights', 'an ExpertWeights object ({ w1EDF, w3EDF?, w2EFD })', weights);
  const mats = [weights.w1EDF, ...(weights.w3EDF ? [weights.w3EDF] : []), weights.w2EFD];
  const E = weights.w1EDF.shape[0];
  for (const m of mats) {
    if (m.rank !== 3 || m.shape[0] !== E)
      throw invalidArgument(fn, 'weights', `3-D tensors with E = ${E} on the first axis`, m.shape);
  }
  const host = mats.map((m) => m.dataSync() as Float32Array);
  const per = mats.map((m) => m.shape[1] * m.shape[2]);
  const total = per.reduce((a, b) => a + b, 0);
  return Array.from({ length: E }, (_, e) => {
    const v = new Float32Array(total);
    let off = 0;
    host.forEach((h, i) => {
      v.set(h.subarray(e * per[i]!, (e + 1) * per[i]!), off);
      off += per[i]!;
    });
    return v;
  });
}

/**
 * Structural similarity: `s[i][j] = cos(vec(W_i), vec(W_j))` over each expert's flattened weights
 * (w1, w3 for SwiGLU, w2).
 *
 * When to use: as the parameter half of the fused similarity before clustering experts.
 *
 * @example
 * ```ts
 * const sStruct = structuralSimilarity(layer.experts instanceof RoutedExperts ? layer.experts.weights() : w);
 * ```
 */
export function structuralSimilarity(weights: ExpertWeights): SimilarityMatrix {
  return cosineMatrix('structuralSimilarity', 'weights', flattenExperts(weights));
}

/** What {@link ActivationCentroids.add} reads of a routing plan. */
export type CentroidSource = Pick<
  RoutingPlan,
  'logitsTE' | 'expertIdx' | 'kept' | 'numTokens' | 'numExperts' | 'k'
>;

/**
 * Running activation centroids of one MoE layer's experts: a token's embedding is its router-logit
 * vector (E values), and expert i's centroid is the mean embedding of the tokens routed to it (its
 * kept assignments). Accumulates over any number of routing plans.
 *
 * When to use: feed it the plans of a few batches (calibration data, or the training steps since the
 * last clustering), then take {@link functionalSimilarity} of its centroids.
 *
 * @example
 * ```ts
 * const acc = new ActivationCentroids(8);
 * acc.add(plan);
 * const sFunc = functionalSimilarity(acc.centroids());
 * ```
 */
export class ActivationCentroids {
  readonly numExperts: number;
  private readonly sumEE: Float64Array;
  private readonly countE: Float64Array;

  constructor(numExperts: number) {
    this.numExperts = checkInt('ActivationCentroids', 'numExperts', numExperts, { min: 1 });
    this.sumEE = new Float64Array(numExperts * numExperts);
    this.countE = new Float64Array(numExperts);
  }

  /** Adds the kept assignments of one routing plan (reads its logits once from the backend). */
  add(plan: CentroidSource): void {
    const fn = 'ActivationCentroids.add';
    const E = this.numExperts;
    if (plan === null || typeof plan !== 'object' || !(plan.logitsTE instanceof tf.Tensor))
      throw invalidArgument(fn, 'plan', 'a RoutingPlan', plan);
    if (plan.numExperts !== E)
      throw invalidArgument(fn, 'plan.numExperts', `${E} like the accumulator`, plan.numExperts);
    const { numTokens: T, k: K, expertIdx, kept } = plan;
    if (plan.logitsTE.shape[0] !== T || plan.logitsTE.shape[1] !== E)
      throw invalidArgument(fn, 'plan.logitsTE', `a tensor [${T}, ${E}]`, plan.logitsTE.shape);
    const logits = plan.logitsTE.dataSync();
    for (let a = 0; a < T * K; a++) {
      if (!kept[a]) continue;
      const e = expertIdx[a]!;
      const t = Math.floor(a / K);
      this.countE[e]! += 1;
      for (let j = 0; j < E; j++) this.sumEE[e * E + j]! += logits[t * E + j]!;
    }
  }

  /** Tokens routed to each expert so far. */
  counts(): number[] {
    return Array.from(this.countE);
  }

  /** The centroids, one row of E values per expert (all zeros for an expert no token reached). */
  centroids(): number[][] {
    const E = this.numExperts;
    return Array.from({ length: E }, (_, e) => {
      const c = this.countE[e]!;
      return Array.from(this.sumEE.subarray(e * E, (e + 1) * E), (v) => (c > 0 ? v / c : 0));
    });
  }

  /** Forgets everything added. */
  reset(): void {
    this.sumEE.fill(0);
    this.countE.fill(0);
  }
}

/**
 * Functional similarity: `s[i][j] = cos(c_i, c_j)` of the experts' activation centroids (see
 * {@link ActivationCentroids}). An expert no token reached has similarity 0 to every other.
 *
 * When to use: as the activation half of the fused similarity.
 *
 * @example
 * ```ts
 * const sFunc = functionalSimilarity(acc.centroids());
 * ```
 */
export function functionalSimilarity(centroids: readonly (readonly number[])[]): SimilarityMatrix {
  if (!Array.isArray(centroids))
    throw invalidArgument('functionalSimilarity', 'centroids', 'an array of E centroid rows', centroids);
  return cosineMatrix('functionalSimilarity', 'centroids', centroids);
}

/** Throws unless `s` is a square matrix of finite numbers; returns its size. */
export function checkSimilarity(fn: string, arg: string, s: unknown): number {
  if (!Array.isArray(s) || s.length === 0)
    throw invalidArgument(fn, arg, 'an E x E similarity matrix (array of rows)', s);
  const E = s.length;
  s.forEach((row, i) => {
    if (!Array.isArray(row) || row.length !== E)
      throw invalidArgument(fn, `${arg}[${i}]`, `a row of ${E} numbers`, row);
    for (const v of row)
      if (typeof v !== 'number' || !Number.isFinite(v))
        throw invalidArgument(fn, `${arg}[${i}]`, 'finite numbers', v);
  });
  return E;
}

/**
 * The fused similarity `S = lambda * structural + (1 - lambda) * functional`, element-wise.
 *
 * When to use: to cluster on both the experts' parameters and what they are used for.
 *
 * @example
 * ```ts
 * const s = fusedSimilarity(structuralSimilarity(w), functionalSimilarity(acc.centroids()), 0.5);
 * ```
 */
export function fusedSimilarity(
  structural: SimilarityMatrix,
  functional: SimilarityMatrix,
  lambda: number = DEFAULT_LAMBDA,
): SimilarityMatrix {
  const fn = 'fusedSimilarity';
  checkNumber(fn, 'lambda', lambda, { min: 0, max: 1 });
  const E = checkSimilarity(fn, 'structural', structural);
  const E2 = checkSimilarity(fn, 'functional', functional);
  if (E !== E2)
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`functional\` passed to ${fn}() must be ${E} x ${E} like \`structural\`, got ${E2} x ${E2}`,
    );
  return structural.map((row, i) => row.map((v, j) => lambda * v + (1 - lambda) * functional[i]![j]!));
}
