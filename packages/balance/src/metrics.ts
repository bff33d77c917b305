/**
 * Balance metrics: pure functions on host arrays of per-expert load, and streaming accumulators over
 * an evaluation set (MaxVio_global, the per-domain specialisation matrix). All per layer; the
 * accumulators also average over layers.
 *
 * Shape letters: L layers, E routed experts, K slots per token, T tokens, G domains.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { checkInt, invalidArgument, logSumExp, SwitchyardError, type tf } from '@switchyard/tensor';
import { checkCountsE, checkScores } from './internal/common';

function loads(fn: string, loadE: ArrayLike<number>, arg = 'loadE'): Float64Array {
  if (loadE === null || typeof loadE !== 'object' || !(loadE.length >= 1)) {
    throw invalidArgument(fn, arg, 'a non-empty array of per-expert loads', loadE);
  }
  return checkCountsE(fn, arg, loadE, loadE.length);
}

function sumOf(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]!;
  return s;
}

/**
 * MaxVio = (max_i load_i - mean load) / mean load. 0 at perfect balance, E - 1 when one expert takes
 * everything. NaN when the load is all zero.
 *
 * When to use: the headline balance metric; per training step (MaxVio_batch, compare it with
 * {@link maxVioNoiseFloor}) or over an eval set ({@link MaxVioGlobal}).
 *
 * @example
 * ```ts
 * maxVio([3, 1, 1, 3]); // 0.5
 * ```
 */
export function maxVio(loadE: ArrayLike<number>): number {
  const x = loads('maxVio', loadE);
  const mean = sumOf(x) / x.length;
  let max = 0;
  for (const v of x) max = Math.max(max, v);
  return mean > 0 ? (max - mean) / mean : Number.NaN;
}

/**
 * Mean over sequences of each sequence's MaxVio: `expertIdxTK` holds the K experts of T = B * S
 * tokens (B sequences of `seqLen` tokens, row-major); each sequence's counts are its own load.
 * Sequences whose load is all zero are skipped; NaN when none is left.
 *
 * When to use: how unbalanced single sequences are (the sequence-wise aux loss balances them);
 * compare with {@link maxVioNoiseFloor} at T = S.
 *
 * @example
 * ```ts
 * perSequenceMaxVio([0, 0, 1, 1], 2, 2, 1); // each sequence sends both tokens to one expert: 1
 * ```
 */
export function perSequenceMaxVio(
  expertIdxTK: ArrayLike<number>,
  seqLen: number,
  numExperts: number,
  k: number,
): number {
  const fn = 'perSequenceMaxVio';
  const S = checkInt(fn, 'seqLen', seqLen, { min: 1 });
  const E = checkInt(fn, 'numExperts', numExperts, { min: 1 });
  const K = checkInt(fn, 'k', k, { min: 1 });
  if (expertIdxTK?.length === undefined || expertIdxTK.length % (S * K) !== 0) {
    throw invalidArgument(
      fn,
      'expertIdxTK',
      `a [B * ${S}, ${K}] row-major array of expert indices`,
      expertIdxTK,
    );
  }
  const B = expertIdxTK.length / (S * K);
  const countsE = new Float64Array(E);
  let sum = 0;
  let n = 0;
  for (let b = 0; b < B; b++) {
    countsE.fill(0);
    for (let i = b * S * K; i < (b + 1) * S * K; i++) {
      const e = expertIdxTK[i]!;
      if (!Number.isInteger(e) || e < 0 || e >= E)
        throw invalidArgument(fn, `expertIdxTK[${i}]`, `an integer in [0, ${E - 1}]`, e);
      countsE[e]! += 1;
    }
    const v = maxVio(countsE);
    if (Number.isNaN(v)) continue;
    sum += v;
    n++;
  }
  return n > 0 ? sum / n : Number.NaN;
}

/**
 * Mutual information I(domain; expert) in nats between a token's domain and the experts it selects,
 * from the specialisation matrix of one layer: `frequenciesGE[g][e]` is the share of domain g's
 * tokens whose top-K includes e, `tokensG[g]` the domain's token count. The joint distribution is
 * that of selections: p(g, e) proportional to tokens_g * F[g][e]. 0 when every domain routes alike
 * (whatever the overall imbalance); at most log G, reached when the domains use disjoint experts.
 *
 * When to use: to tell specialisation (experts tied to domains) from imbalance (a few experts
 * taking everything), which the peak F/(K/E) mixes.
 *
 * @example
 * ```ts
 * domainExpertMutualInformation([[1, 0], [0, 1]], [5, 5]); // log 2 = 0.693
 * domainExpertMutualInformation([[1, 0], [1, 0]], [5, 5]); // 0 (collapse, no specialisation)
 * ```
 */
export function domainExpertMutualInformation(
  frequenciesGE: readonly (readonly number[])[],
  tokensG: readonly number[],
): number {
  const fn = 'domainExpertMutualInformation';
  if (
    !Array.isArray(frequenciesGE) ||
    frequenciesGE.length === 0 ||
    frequenciesGE.length !== tokensG?.length
  ) {
    throw invalidArgument(
      fn,
      'frequenciesGE',
      `one row per domain (${tokensG?.length ?? 0} domains in tokensG)`,
      frequenciesGE?.length,
    );
  }
  const E = frequenciesGE[0]!.length;
  const joint: number[][] = frequenciesGE.map((row: readonly number[], g: number) => {
    if (row.length !== E) throw invalidArgument(fn, `frequenciesGE[${g}]`, `${E} values`, row.length);
    const n = tokensG[g]!;
    if (!(n >= 0)) throw invalidArgument(fn, `tokensG[${g}]`, 'a count >= 0', n);
    return row.map((f: number) => {
      if (!(f >= 0)) throw invalidArgument(fn, `frequenciesGE[${g}]`, 'frequencies >= 0', f);
      return n * f;
    });
  });
  const total = sumOf(joint.flat());
  if (!(total > 0)) return Number.NaN;
  const pG = joint.map((row) => sumOf(row) / total);
  const pE = Array.from({ length: E }, (_, e) => sumOf(joint.map((row) => row[e]!)) / total);
  let mi = 0;
  joint.forEach((row, g) => {
    row.forEach((c, e) => {
      if (c > 0) mi += (c / total) * Math.log(c / total / (pG[g]! * pE[e]!));
    });
  });
  return Math.max(0, mi);
}

/**
 * Largest per-domain lift F[g][e] / mean_g F[g][e] of one layer's specialisation matrix (domains
 * without tokens left out): how much more often a domain picks an expert than the domains do on
 * average. 1 when every domain routes alike, G when an expert serves one domain only. Unlike the peak
 * F/(K/E), a collapsed router (every domain on the same experts) has lift 1.
 *
 * When to use: beside {@link domainExpertMutualInformation}, as the per-expert view of specialisation.
 *
 * @example
 * ```ts
 * domainLiftPeak([[0.5, 0.5], [1, 0]]); // 0.5 / 0.25 = 2
 * ```
 */
export function domainLiftPeak(frequenciesGE: readonly (readonly number[])[]): number {
  const rows = frequenciesGE.filter((r) => r.some((f) => f > 0));
  if (rows.length === 0) return Number.NaN;
  const E = rows[0]!.length;
  let peak = Number.NaN;
  for (let e = 0; e < E; e++) {
    const mean = sumOf(rows.map((r) => r[e]!)) / rows.length;
    if (!(mean > 0)) continue;
    for (const r of rows) {
      const lift = r[e]! / mean;
      if (!(lift <= peak)) peak = lift;
    }
  }
  return peak;
}

/**
 * Coefficient of variation of load: population std / mean (0 at balance). NaN for all-zero load.
 *
 * When to use: a balance summary less dominated by the single worst expert than MaxVio.
 *
 * @example
 * ```ts
 * coefficientOfVariation([2, 0]); // 1
 * ```
 */
export function coefficientOfVariation(loadE: ArrayLike<number>): number {
  const x = loads('coefficientOfVariation', loadE);
  const mean = sumOf(x) / x.length;
  if (!(mean > 0)) return Number.NaN;
  let v = 0;
  for (const c of x) v += (c - mean) * (c - mean);
  return Math.sqrt(v / x.length) / mean;
}

/**
 * Entropy of the load distribution divided by log E: 1 at perfect balance, 0 when one expert takes
 * everything (and 1 for a single expert). NaN for all-zero load.
 *
 * When to use: a scale-free view of how many experts are effectively used (exp(H) of them).
 *
 * @example
 * ```ts
 * normalisedEntropy([1, 1, 1, 1]); // 1
 * ```
 */
export function normalisedEntropy(loadE: ArrayLike<number>): number {
  const x = loads('normalisedEntropy', loadE);
  const total = sumOf(x);
  if (!(total > 0)) return Number.NaN;
  if (x.length === 1) return 1;
  let h = 0;
  for (const c of x) if (c > 0) h -= (c / total) * Math.log(c / total);
  return h / Math.log(x.length);
}

/**
 * Usage variance: population variance over experts of `load_i / sum load` (0 at balance).
 *
 * When to use: the quantity {@link usageVarianceLoss} penalises.
 *
 * @example
 * ```ts
 * usageVariance([1, 0]); // 0.25
 * ```
 */
export function usageVariance(loadE: ArrayLike<number>): number {
  const x = loads('usageVariance', loadE);
  const total = sumOf(x);
  if (!(total > 0)) return Number.NaN;
  const E = x.length;
  let v = 0;
  for (const c of x) v += (c / total - 1 / E) ** 2;
  return v / E;
}

/**
 * Drop rate = dropped assignments / all assignments, from counts before and after capacity dropping.
 *
 * When to use: with capacity-limited routing, to see how much of the batch passes by residual only.
 *
 * @example
 * ```ts
 * dropRate(plan.countsE, plan.keptCountsE); // equals plan.dropRate
 * ```
 */
export function dropRate(countsE: ArrayLike<number>, keptCountsE: ArrayLike<number>): number {
  const c = loads('dropRate', countsE, 'countsE');
  const kept = checkCountsE('dropRate', 'keptCountsE', keptCountsE, c.length);
  const total = sumOf(c);
  for (let i = 0; i < c.length; i++) {
    if (kept[i]! > c[i]!) {
      throw invalidArgument('dropRate', `keptCountsE[${i}]`, `<= countsE[${i}] (${c[i]})`, kept[i]);
    }
  }
  return total > 0 ? (total - sumOf(kept)) / total : 0;
}

/** The per-step balance summary of one layer's counts. */
export interface BalanceStats {
  readonly maxVio: number;
  readonly cv: number;
  readonly normalisedEntropy: number;
  readonly usageVariance: number;
}

/**
 * All load metrics of one count vector at once.
 *
 * When to use: logging a layer's balance each training step.
 *
 * @example
 * ```ts
 * const { maxVio, cv } = balanceStats(plan.countsE);
 * ```
 */
export function balanceStats(loadE: ArrayLike<number>): BalanceStats {
  return {
    maxVio: maxVio(loadE),
    cv: coefficientOfVariation(loadE),
    normalisedEntropy: normalisedEntropy(loadE),
    usageVariance: usageVariance(loadE),
  };
}

/**
 * Router LSE^2: mean over tokens of (logsumexp_j logits_tj)^2, read back to the host. This is what
 * {@link routerZLoss} penalises; it stays bounded when the z-loss works.
 *
 * When to use: logging router logit growth during training.
 *
 * @example
 * ```ts
 * const lse2 = routerLse2(plan.logitsTE);
 * ```
 */
export function routerLse2(logitsTE: tf.Tensor2D): number {
  const [T] = checkScores('routerLse2', logitsTE, undefined, 'logitsTE');
  if (T === 0) return Number.NaN;
  const lseT = logSumExp(logitsTE, -1);
  const values = lseT.dataSync();
  lseT.dispose();
  let s = 0;
  for (const v of values) s += v * v;
  return s / T;
}

function layerIndex(fn: string, layer: number, numLayers: number): number {
  return checkInt(fn, 'layer', layer, { min: 0, max: numLayers - 1 });
}

/** Settings of {@link MaxVioGlobal}. */
export interface MaxVioGlobalConfig {
  /** MoE layers L. */
  readonly numLayers: number;
  /** Routed experts E per layer. */
  readonly numExperts: number;
}

/**
 * Streaming MaxVio_global: sums each layer's counts over every batch of an evaluation set, then
 * reports MaxVio of the totals (per layer and averaged over layers).
 *
 * When to use: evaluation; balance over a whole set, where per-batch noise averages out.
 *
 * @example
 * ```ts
 * const acc = new MaxVioGlobal({ numLayers: 2, numExperts: 8 });
 * for (const batch of evalSet) for (const [l, plan] of model.plans(batch).entries()) acc.add(l, plan.countsE);
 * const { perLayer, mean } = acc.result();
 * ```
 */
export class MaxVioGlobal {
  readonly config: MaxVioGlobalConfig;
  private readonly loadLE: Float64Array[];

  constructor(config: MaxVioGlobalConfig) {
    checkInt('MaxVioGlobal', 'config.numLayers', config?.numLayers, { min: 1 });
    checkInt('MaxVioGlobal', 'config.numExperts', config.numExperts, { min: 1 });
    this.config = { numLayers: config.numLayers, numExperts: config.numExperts };
    this.loadLE = Array.from({ length: config.numLayers }, () => new Float64Array(config.numExperts));
  }

  /** Adds one batch's counts of `layer`. */
  add(layer: number, countsE: ArrayLike<number>): void {
    const l = layerIndex('MaxVioGlobal.add', layer, this.config.numLayers);
    const c = checkCountsE('MaxVioGlobal.add', 'countsE', countsE, this.config.numExperts);
    const acc = this.loadLE[l]!;
    for (let i = 0; i < c.length; i++) acc[i]! += c[i]!;
  }

  /** Total load of `layer` so far (a copy). */
  loadE(layer: number): Float64Array {
    return this.loadLE[layerIndex('MaxVioGlobal.loadE', layer, this.config.numLayers)]!.slice();
  }

  /** MaxVio_global per layer and its mean over the layers that saw tokens. */
  result(): { readonly perLayer: readonly number[]; readonly mean: number } {
    const perLayer = this.loadLE.map((x) => maxVio(x));
    const seen = perLayer.filter((v) => !Number.isNaN(v));
    return { perLayer, mean: seen.length ? sumOf(seen) / seen.length : Number.NaN };
  }

  /**
   * Every layer's total load as one flat [L, E] row-major copy, to merge accumulators that saw
   * different batches (e.g. one per rank) with {@link MaxVioGlobal.addCounts}.
   */
  counts(): Float64Array {
    const { numLayers: L, numExperts: E } = this.config;
    const out = new Float64Array(L * E);
    this.loadLE.forEach((x, l) => {
      out.set(x, l * E);
    });
    return out;
  }

  /**
   * Adds counts from {@link MaxVioGlobal.counts} of an accumulator with the same shape.
   *
   * @example
   * ```ts
   * const mine = acc.counts();
   * acc.reset();
   * acc.addCounts(comm.allReduce(Float32Array.from(mine), 'sum')); // the load over every rank
   * ```
   */
  addCounts(flatLE: ArrayLike<number>): void {
    const { numLayers: L, numExperts: E } = this.config;
    const c = checkCountsE('MaxVioGlobal.addCounts', 'flatLE', flatLE, L * E, `[${L}, ${E}] row-major`);
    this.loadLE.forEach((x, l) => {
      for (let e = 0; e < E; e++) x[e]! += c[l * E + e]!;
    });
  }

  /** Clears every layer. */
  reset(): void {
    for (const x of this.loadLE) x.fill(0);
  }
}

/** Settings of {@link SpecialisationAccumulator}. */
export interface SpecialisationConfig {
  /** Domains G (e.g. code, math, prose). */
  readonly numDomains: number;
  /** Routed experts E per layer. */
  readonly numExperts: number;
  /** Experts selected per token K. */
  readonly k: number;
  /** MoE layers L. */
  readonly numLayers: number;
}

/** Summary of one layer's specialisation matrix. */
export interface SpecialisationSummary {
  /** F[domain][expert]: share of the domain's tokens whose top-K includes the expert (NaN rows: domain unseen). */
  readonly frequencies: readonly (readonly number[])[];
  /** Largest F over domains and experts (uniform routing gives K/E). */
  readonly max: number;
  /** Mean over seen domains of the sum of the domain's K largest F values (uniform: K*K/E, most specialised: K). */
  readonly meanTopKSum: number;
  /** K/E, what every F would be under uniform routing. */
  readonly uniform: number;
  /** Tokens seen per domain. */
  readonly tokensPerDomain: readonly number[];
}

/**
 * Streaming per-domain specialisation: F[domain][expert] = share of that domain's tokens whose top-K
 * includes the expert, with its max and the mean sum of the top-K values per domain.
 *
 * When to use: evaluating whether experts specialise by domain (global-batch vs micro-batch losses).
 *
 * @example
 * ```ts
 * const spec = new SpecialisationAccumulator({ numDomains: 3, numExperts: 8, k: 2, numLayers: 1 });
 * spec.add(0, domainId, plan.expertIdx); // one domain for the whole batch, or one per token
 * const { max, meanTopKSum, uniform } = spec.summary(0);
 * ```
 */
export class SpecialisationAccumulator {
  readonly config: SpecialisationConfig;
  private readonly hitsLGE: Float64Array[];
  private readonly tokensLG: Float64Array[];

  constructor(config: SpecialisationConfig) {
    const fn = 'SpecialisationAccumulator';
    checkInt(fn, 'config.numDomains', config?.numDomains, { min: 1 });
    checkInt(fn, 'config.numExperts', config.numExperts, { min: 1 });
    checkInt(fn, 'config.k', config.k, { min: 1, max: config.numExperts });
    checkInt(fn, 'config.numLayers', config.numLayers, { min: 1 });
    this.config = { ...config };
    const { numLayers: L, numDomains: G, numExperts: E } = config;
    this.hitsLGE = Array.from({ length: L }, () => new Float64Array(G * E));
    this.tokensLG = Array.from({ length: L }, () => new Float64Array(G));
  }

  /**
   * Adds one batch of `layer`: `expertIdx` is the plan's [T, K] row-major selections; `domain` is one
   * domain for the whole batch or one per token.
   */
  add(layer: number, domain: number | ArrayLike<number>, expertIdx: ArrayLike<number>): void {
    const fn = 'SpecialisationAccumulator.add';
    const { numDomains: G, numExperts: E, k: K } = this.config;
    const l = layerIndex(fn, layer, this.config.numLayers);
    if (expertIdx?.length === undefined || expertIdx.length % K !== 0) {
      throw invalidArgument(fn, 'expertIdx', `a [T, ${K}] row-major array of expert indices`, expertIdx);
    }
    const T = expertIdx.length / K;
    if (typeof domain !== 'number' && domain?.length !== T) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `\`domain\` passed to ${fn}() must be one domain or one per token (${T}), got ${domain?.length}`,
      );
    }
    const hits = this.hitsLGE[l]!;
    const tokens = this.tokensLG[l]!;
    for (let t = 0; t < T; t++) {
      const g = typeof domain === 'number' ? domain : domain[t]!;
      if (!Number.isInteger(g) || g < 0 || g >= G) {
        throw invalidArgument(
          fn,
          typeof domain === 'number' ? 'domain' : `domain[${t}]`,
          `an integer in [0, ${G - 1}]`,
          g,
        );
      }
      tokens[g]! += 1;
      for (let j = 0; j < K; j++) {
        const e = expertIdx[t * K + j]!;
        if (!Number.isInteger(e) || e < 0 || e >= E) {
          throw invalidArgument(fn, `expertIdx[${t * K + j}]`, `an integer in [0, ${E - 1}]`, e);
        }
        hits[g * E + e]! += 1;
      }
    }
  }

  /** F, its max and the mean top-K sum for `layer`. */
  summary(layer: number): SpecialisationSummary {
    const l = layerIndex('SpecialisationAccumulator.summary', layer, this.config.numLayers);
    const { numDomains: G, numExperts: E, k: K } = this.config;
    const hits = this.hitsLGE[l]!;
    const tokens = this.tokensLG[l]!;
    const frequencies: number[][] = [];
    let max = Number.NaN;
    let topKSum = 0;
    let seen = 0;
    for (let g = 0; g < G; g++) {
      const n = tokens[g]!;
      const row = Array.from(hits.subarray(g * E, (g + 1) * E), (h) => (n > 0 ? h / n : Number.NaN));
      frequencies.push(row);
      if (n === 0) continue;
      seen++;
      for (const f of row) if (!(f <= max)) max = f;
      topKSum += row
        .slice()
        .sort((a, b) => b - a)
        .slice(0, K)
        .reduce((a, b) => a + b, 0);
    }
    return {
      frequencies,
      max,
      meanTopKSum: seen > 0 ? topKSum / seen : Number.NaN,
      uniform: K / E,
      tokensPerDomain: Array.from(tokens),
    };
  }

  /** Max and mean top-K sum averaged over layers that saw tokens. */
  meanOverLayers(): { readonly max: number; readonly meanTopKSum: number } {
    const s = Array.from({ length: this.config.numLayers }, (_, l) => this.summary(l)).filter(
      (x) => !Number.isNaN(x.max),
    );
    if (s.length === 0) return { max: Number.NaN, meanTopKSum: Number.NaN };
    return {
      max: sumOf(s.map((x) => x.max)) / s.length,
      meanTopKSum: sumOf(s.map((x) => x.meanTopKSum)) / s.length,
    };
  }

  /**
   * Every layer's hits and token counts as one flat copy: [L, G, E] hits then [L, G] tokens, to merge
   * accumulators that saw different batches (e.g. one per rank) with
   * {@link SpecialisationAccumulator.addCounts}.
   */
  counts(): Float64Array {
    const { numLayers: L, numDomains: G, numExperts: E } = this.config;
    const out = new Float64Array(L * G * E + L * G);
    for (let l = 0; l < L; l++) {
      out.set(this.hitsLGE[l]!, l * G * E);
      out.set(this.tokensLG[l]!, L * G * E + l * G);
    }
    return out;
  }

  /** Adds counts from {@link SpecialisationAccumulator.counts} of an accumulator with the same shape. */
  addCounts(flat: ArrayLike<number>): void {
    const { numLayers: L, numDomains: G, numExperts: E } = this.config;
    const c = checkCountsE(
      'SpecialisationAccumulator.addCounts',
      'flat',
      flat,
      L * G * E + L * G,
      `[${L}, ${G}, ${E}] hits then [${L}, ${G}] tokens row-major`,
    );
    for (let l = 0; l < L; l++) {
      const hits = this.hitsLGE[l]!;
      const tokens = this.tokensLG[l]!;
      for (let i = 0; i < G * E; i++) hits[i]! += c[l * G * E + i]!;
      for (let g = 0; g < G; g++) tokens[g]! += c[L * G * E + l * G + g]!;
    }
  }

  /** Clears every layer. */
  reset(): void {
    for (const x of this.hitsLGE) x.fill(0);
    for (const x of this.tokensLG) x.fill(0);
  }
}

/** A routing plan's fields read by {@link planBalanceStats}. */
export type PlanCounts = Pick<RoutingPlan, 'countsE' | 'dropRate'>;

/**
 * Balance stats of a plan's counts plus the drop rate its router reported.
 *
 * When to use: one call per layer per training step for the metrics log.
 *
 * @example
 * ```ts
 * const { maxVio, dropRate } = planBalanceStats(plan);
 * ```
 */
export function planBalanceStats(plan: PlanCounts): BalanceStats & { readonly dropRate: number } {
  return { ...balanceStats(plan.countsE), dropRate: plan.dropRate };
}
