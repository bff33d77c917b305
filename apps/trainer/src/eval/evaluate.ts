/**
 * Evaluation on the validation set: mean next-token loss overall and per domain, MaxVio_global over
 * the whole set, and the domain x expert specialisation matrix of every MoE layer.
 *
 * Shape letters: B sequences per batch, S sequence length, L MoE layers, G domains, E experts.
 */
import {
  domainExpertMutualInformation,
  domainLiftPeak,
  MaxVioGlobal,
  routerLse2,
  SpecialisationAccumulator,
} from '@switchyard/balance';
import type { RoutingPlan } from '@switchyard/routing';
import { tf } from '@switchyard/tensor';
import { type DomainStream, windowStarts } from '../data/batcher';
import type { EvalRecord } from '../report/records';

/** What evaluation needs from a model: the loss and the routing plans of its MoE layers. */
export interface EvaluableModel {
  loss(
    inputsBS: tf.Tensor2D,
    targetsBS: tf.Tensor2D,
    opts: { readonly training: boolean },
  ): { loss: tf.Scalar; plans: readonly RoutingPlan[] };
}

/** One evaluation batch: B windows of one domain, all of length S + 1. */
export interface EvalBatch {
  readonly domain: number;
  readonly inputsBS: Int32Array;
  readonly targetsBS: Int32Array;
  readonly batchSize: number;
  readonly seqLen: number;
}

/** A fixed validation set. */
export interface EvalSet {
  readonly domains: readonly string[];
  readonly batches: readonly EvalBatch[];
  /** Target tokens scored. */
  readonly tokens: number;
  /** Every scored target token, in batch order (for the unigram baseline). */
  readonly targets: Int32Array;
}

/**
 * Builds the validation set: per domain, windows of `seqLen + 1` tokens (overlapping by one), evenly
 * spaced over the domain's text, up to about `tokensPerDomain` targets, in batches of at most `batchSize`.
 *
 * When to use: once per run, so every evaluation scores exactly the same tokens.
 *
 * @example
 * ```ts
 * const set = buildEvalSet(valStreams, 128, 4096, 16);
 * ```
 */
export function buildEvalSet(
  streams: readonly DomainStream[],
  seqLen: number,
  tokensPerDomain: number,
  batchSize: number,
): EvalSet {
  const batches: EvalBatch[] = [];
  const targets: number[] = [];
  streams.forEach((s, d) => {
    const maxWindows = Math.max(1, Math.ceil(tokensPerDomain / seqLen));
    const all = windowStarts(s.tokens.length, seqLen);
    // Evenly spaced windows, so every text of the domain is represented.
    const starts =
      all.length <= maxWindows
        ? all
        : Array.from({ length: maxWindows }, (_, i) => all[Math.floor((i * all.length) / maxWindows)]!);
    for (let i = 0; i < starts.length; i += batchSize) {
      const group = starts.slice(i, i + batchSize);
      const B = group.length;
      const inputsBS = new Int32Array(B * seqLen);
      const targetsBS = new Int32Array(B * seqLen);
      group.forEach((start, b) => {
        inputsBS.set(s.tokens.subarray(start, start + seqLen), b * seqLen);
        targetsBS.set(s.tokens.subarray(start + 1, start + seqLen + 1), b * seqLen);
      });
      for (const t of targetsBS) targets.push(t);
      batches.push({ domain: d, inputsBS, targetsBS, batchSize: B, seqLen });
    }
  });
  return {
    domains: streams.map((s) => s.domain),
    batches,
    tokens: targets.length,
    targets: Int32Array.from(targets),
  };
}

/** Model shape facts evaluation needs. */
export interface EvalModelInfo {
  readonly numMoELayers: number;
  readonly numExperts: number;
  readonly k: number;
}

/**
 * One rank's part of a data-parallel evaluation: the rank scores every `worldSize`-th batch and
 * `sum` adds a buffer element-wise over the ranks (an all-reduce), so every rank gets the record of
 * the whole set.
 */
export interface EvalShard {
  readonly rank: number;
  readonly worldSize: number;
  readonly sum: (buf: Float32Array) => Float32Array;
  /**
   * Every rank runs the same number of forward passes (a rank with fewer batches repeats one and
   * discards it): needed when a forward pass is a collective (expert parallelism).
   */
  readonly lockstep?: boolean;
}

/**
 * Scores the model on an evaluation set (inference mode: no jitter, evaluation capacity). With a
 * `shard`, this rank scores its share of the batches and the sums are combined over the ranks.
 *
 * When to use: periodically during training and at the end.
 *
 * @example
 * ```ts
 * const rec = evaluateModel(model, evalSet, { numMoELayers: 4, numExperts: 8, k: 2 }, step);
 * ```
 */
export function evaluateModel(
  model: EvaluableModel,
  set: EvalSet,
  info: EvalModelInfo,
  step: number,
  shard?: EvalShard,
): EvalRecord {
  const G = set.domains.length;
  const L = info.numMoELayers;
  const sumG = new Float64Array(G);
  const countG = new Float64Array(G);
  const vio = L > 0 ? new MaxVioGlobal({ numLayers: L, numExperts: info.numExperts }) : undefined;
  const spec =
    L > 0
      ? new SpecialisationAccumulator({ numDomains: G, numExperts: info.numExperts, k: info.k, numLayers: L })
      : undefined;
  let dropped = 0;
  let assigned = 0;
  let lse2Sum = 0;
  let lse2Count = 0;
  const R = shard?.worldSize ?? 1;
  for (const [i, b] of set.batches.entries()) {
    if (R > 1 && i % R !== shard!.rank) continue;
    const lossValue = tf.tidy(() => {
      const x = tf.tensor2d(b.inputsBS, [b.batchSize, b.seqLen], 'int32');
      const y = tf.tensor2d(b.targetsBS, [b.batchSize, b.seqLen], 'int32');
      const { loss, plans } = model.loss(x, y, { training: false });
      plans.forEach((p, l) => {
        vio!.add(l, p.countsE);
        spec!.add(l, b.domain, p.expertIdx);
        lse2Sum += routerLse2(p.logitsTE);
        lse2Count++;
        for (let i = 0; i < p.countsE.length; i++) {
          assigned += p.countsE[i]!;
          dropped += p.countsE[i]! - p.keptCountsE[i]!;
        }
      });
      return loss.dataSync()[0]!;
    });
    const n = b.batchSize * b.seqLen;
    sumG[b.domain]! += lossValue * n;
    countG[b.domain]! += n;
  }
  if (R > 1 && shard!.lockstep && set.batches.length > 0) {
    const nb = set.batches.length;
    const mine = shard!.rank < nb ? Math.floor((nb - 1 - shard!.rank) / R) + 1 : 0;
    for (let i = mine; i < Math.ceil(nb / R); i++) fillerForward(model, set.batches[0]!);
  }
  if (R > 1) {
    // One all-reduce of every sum: per-domain losses and tokens, drops, the load and specialisation counts.
    const parts = [sumG, countG, [dropped, assigned], vio?.counts() ?? [], spec?.counts() ?? []];
    const total = shard!.sum(Float32Array.from(parts.flatMap((p) => Array.from(p))));
    let off = 0;
    const take = (n: number): Float32Array => {
      off += n;
      return total.subarray(off - n, off);
    };
    sumG.set(take(G));
    countG.set(take(G));
    const da = take(2);
    dropped = da[0]!;
    assigned = da[1]!;
    if (vio) {
      const c = take(L * info.numExperts);
      vio.reset();
      vio.addCounts(c);
    }
    if (spec) {
      const c = take(L * G * info.numExperts + L * G);
      spec.reset();
      spec.addCounts(c);
    }
  }
  let total = 0;
  let count = 0;
  const perDomainLoss: Record<string, number> = {};
  set.domains.forEach((d, g) => {
    if (countG[g]! > 0) perDomainLoss[d] = sumG[g]! / countG[g]!;
    total += sumG[g]!;
    count += countG[g]!;
  });
  const vioResult = vio?.result();
  const specialization = spec
    ? Array.from({ length: L }, (_, l) =>
        spec.summary(l).frequencies.map((row) => row.map((f) => (Number.isNaN(f) ? 0 : f))),
      )
    : [];
  let peak = Number.NaN;
  let liftPeak = Number.NaN;
  const mutualInformation: number[] = [];
  if (spec) {
    for (let l = 0; l < L; l++) {
      const s = spec.summary(l);
      const r = s.max / s.uniform;
      if (!(r <= peak)) peak = r;
      const lift = domainLiftPeak(specialization[l]!);
      if (!(lift <= liftPeak)) liftPeak = lift;
      mutualInformation.push(domainExpertMutualInformation(specialization[l]!, s.tokensPerDomain));
    }
  }
  return {
    step,
    valLoss: count > 0 ? total / count : Number.NaN,
    perDomainLoss,
    maxVioGlobal: vioResult?.mean ?? Number.NaN,
    maxVioGlobalPerLayer: vioResult ? [...vioResult.perLayer] : [],
    tokens: count,
    dropRate: assigned > 0 ? dropped / assigned : 0,
    domains: set.domains,
    specialization,
    specializationPeak: peak,
    domainExpertMI: mutualInformation,
    liftPeak,
    // Each rank's own batches (rank 0's under data parallelism): a diagnostic, not summed over ranks.
    routerLse2: lse2Count > 0 ? lse2Sum / lse2Count : Number.NaN,
  };
}

/** A forward pass whose result is discarded, so this rank joins the collectives of the others' last batch. */
function fillerForward(model: EvaluableModel, b: EvalBatch): void {
  tf.tidy(() => {
    const x = tf.tensor2d(b.inputsBS, [b.batchSize, b.seqLen], 'int32');
    const y = tf.tensor2d(b.targetsBS, [b.batchSize, b.seqLen], 'int32');
    model.loss(x, y, { training: false }).loss.dataSync();
  });
}
