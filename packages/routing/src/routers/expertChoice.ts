/**
 * Expert choice (Zhou et al. 2022): softmax over E per token, then every expert takes its top
 * k_e = ceil(T * c / E) tokens by score. Perfect load balance by construction; a token may get
 * zero, one or many experts.
 *
 * Causality: expert e's choice of token t depends on the scores of every token in the batch,
 * later ones included. In a causal language model this leaks the future into the training loss;
 * use it only where all T tokens are visible to each other (encoders, non-causal scoring). With
 * `evalRouting: 'causal'` evaluation routes each token by itself instead: its top round(c) experts by
 * softmax probability (c experts per token is what expert choice gives on average), combined with
 * the raw probabilities as in training (no renormalisation). Zhou et al. (2022) leave autoregressive
 * decoding open; a per-token top-k at the same compute is the usual causal stand-in (Raposo et al.
 * 2024, Mixture-of-Depths, discuss the same train/inference mismatch).
 *
 * Plan layout: K = E. Row t of `topkIdxTK` lists experts 0..E-1; `keptMaskTK[t, e]` is 1 where
 * expert e chose token t; weights are probsTE * mask (times routeScale).
 *
 * Shape letters: T tokens, D model width, E experts.
 */
import { matMul, scoped, softmax, type Tensor2D, tf } from '@switchyard/tensor';
import { computeCapacity } from '../capacity';
import type { ResolvedRouterConfig } from '../config';
import {
  callRng,
  checkRouteInput,
  decisionTensors,
  jitter,
  makePlan,
  type RoutingPlanTensors,
  throwNonFinite,
} from '../internal/common';
import { hostTopK } from '../internal/select';
import type { RouteOptions, RoutingPlan } from '../types';

/**
 * Tokens each expert takes under expert choice: ceil(T * c / E), clamped to [1, T].
 *
 * When to use: to size expert buffers for an expert-choice router.
 *
 * @example
 * ```ts
 * expertChoiceCapacity(4096, 64, 2); // 128
 * ```
 */
export function expertChoiceCapacity(T: number, E: number, c: number): number {
  const kE = computeCapacity(T, 1, E, c) ?? T;
  return Math.max(1, Math.min(T, kE));
}

/** Routes xTD [T, D] with weightDE [D, E]; see the file comment for the plan layout. */
export function routeExpertChoice(
  cfg: ResolvedRouterConfig,
  weightDE: Tensor2D,
  xTD: Tensor2D,
  options: RouteOptions,
): RoutingPlan {
  checkRouteInput(cfg, xTD, options);
  const T = xTD.shape[0];
  const E = cfg.numExperts;
  const c = (options.training ? cfg.capacityFactor : cfg.evalCapacityFactor) ?? 2;
  const causal = !options.training && cfg.evalRouting === 'causal';
  const kE = expertChoiceCapacity(T, E, c);
  const rng = callRng(options, 'jitter');

  return scoped(() => {
    const x32TD = jitter(cfg, xTD, options, rng);
    const logitsTE = matMul(x32TD, weightDE) as Tensor2D;
    const probsTE = softmax(logitsTE, -1) as Tensor2D;
    throwNonFinite(logitsTE.dataSync(), xTD, 'logits');
    const scoresTE = probsTE.dataSync();
    const kept = causal ? chooseCausal(scoresTE, T, E, c) : chooseByExpert(scoresTE, T, E, kE);

    const expertIdx = new Int32Array(T * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) expertIdx[t * E + e] = e;
    let unroutedTokens = 0;
    for (let t = 0; t < T; t++) {
      let any = 0;
      for (let e = 0; e < E; e++) any |= kept[t * E + e]!;
      if (!any) unroutedTokens++;
    }
    const countsE = new Int32Array(E);
    for (let i = 0; i < T * E; i++) countsE[i % E]! += kept[i]!;
    const decision = {
      expertIdx,
      kept,
      countsE,
      keptCountsE: countsE.slice(),
      capacity: causal ? null : kE,
      dropped: 0,
    };
    const { topkIdxTK, keptMaskTK } = decisionTensors(decision, T, E);
    let topkWeightTK = tf.mul(probsTE, keptMaskTK) as Tensor2D;
    if (cfg.routeScale !== 1) topkWeightTK = tf.mul(topkWeightTK, cfg.routeScale) as Tensor2D;
    const tensors: RoutingPlanTensors = { logitsTE, probsTE, topkIdxTK, topkWeightTK, keptMaskTK };
    return makePlan(cfg.type, tensors, decision, T, E, E, { unroutedTokens, capacityFactor: c });
  });
}

/** Batch routing: every expert takes its top kE tokens (scores transposed to [E, T]); kept [T * E]. */
function chooseByExpert(scoresTE: ArrayLike<number>, T: number, E: number, kE: number): Uint8Array {
  const scoresET = new Float64Array(E * T);
  for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) scoresET[e * T + t] = scoresTE[t * E + e]!;
  const chosenEK = hostTopK(scoresET, E, T, kE);
  const kept = new Uint8Array(T * E);
  for (let e = 0; e < E; e++) for (let j = 0; j < kE; j++) kept[chosenEK[e * kE + j]! * E + e] = 1;
  return kept;
}

/**
 * Causal routing: every token takes its own top round(c) experts (at least 1, at most E), c experts
 * per token being expert choice's average; kept [T * E].
 */
function chooseCausal(scoresTE: ArrayLike<number>, T: number, E: number, c: number): Uint8Array {
  const k = Math.max(1, Math.min(E, Math.round(c)));
  const chosenTK = hostTopK(scoresTE, T, E, k);
  const kept = new Uint8Array(T * E);
  for (let t = 0; t < T; t++) for (let j = 0; j < k; j++) kept[t * E + chosenTK[t * k + j]!] = 1;
  return kept;
}
