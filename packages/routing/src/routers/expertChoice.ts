/**
 * Expert choice (Zhou et al. 2022): softmax over E per token, then every expert takes its top
 * k_e = ceil(T * c / E) tokens by score. Perfect load balance by construction; a token may get
 * zero, one or many experts.
 *
 * Causality: expert e's choice of token t depends on the scores of every token in the batch,
 * later ones included. In a causal language model this leaks the future into the training loss;
 * use it only where all T tokens are visible to each other (encoders, non-causal scoring), or
 * route each position only against earlier ones.
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
  const kE = expertChoiceCapacity(T, E, c);
  const rng = callRng(options, 'jitter');

  return scoped(() => {
    const x32TD = jitter(cfg, xTD, options, rng);
    const logitsTE = matMul(x32TD, weightDE) as Tensor2D;
    const probsTE = softmax(logitsTE, -1) as Tensor2D;
    throwNonFinite(logitsTE.dataSync(), xTD, 'logits');
    const scoresTE = probsTE.dataSync();

    // Per expert, the top kE tokens: top-k over the rows of scores transposed to [E, T].
    const scoresET = new Float64Array(E * T);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) scoresET[e * T + t] = scoresTE[t * E + e]!;
    const chosenEK = hostTopK(scoresET, E, T, kE);

    const expertIdx = new Int32Array(T * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) expertIdx[t * E + e] = e;
    const kept = new Uint8Array(T * E);
    for (let e = 0; e < E; e++) for (let j = 0; j < kE; j++) kept[chosenEK[e * kE + j]! * E + e] = 1;
    let unroutedTokens = 0;
    for (let t = 0; t < T; t++) {
      let any = 0;
      for (let e = 0; e < E; e++) any |= kept[t * E + e]!;
      if (!any) unroutedTokens++;
    }
    const perExpert = new Int32Array(E).fill(kE);
    const decision = {
      expertIdx,
      kept,
      countsE: perExpert,
      keptCountsE: perExpert.slice(),
      capacity: kE,
      dropped: 0,
    };
    const { topkIdxTK, keptMaskTK } = decisionTensors(decision, T, E);
    let topkWeightTK = tf.mul(probsTE, keptMaskTK) as Tensor2D;
    if (cfg.routeScale !== 1) topkWeightTK = tf.mul(topkWeightTK, cfg.routeScale) as Tensor2D;
    const tensors: RoutingPlanTensors = { logitsTE, probsTE, topkIdxTK, topkWeightTK, keptMaskTK };
    return makePlan(cfg.type, tensors, decision, T, E, E, { unroutedTokens, capacityFactor: c });
  });
}
