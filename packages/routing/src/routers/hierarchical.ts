/**
 * Two-level hierarchical routing (Shazeer et al. 2017, appendix B): a softmax over G group
 * prototypes picks `groupK` groups per token; then a softmax over the E/G experts of each chosen
 * group, and top-K over the candidates by p_group * p_expert, renormalised.
 *
 * Only the chosen groups' expert logits are computed: tokens are sorted by group and each group
 * runs one [n_g, D] @ [D, E/G] product, so the router costs O(G*D + groupK*(E/G)*D) per token
 * instead of O(E*D).
 *
 * Weights: `groupWeight` [D, G] (group prototypes) and `expertWeight` [D, E] whose columns
 * g*(E/G) .. (g+1)*(E/G)-1 are the experts of group g (expert e is in group floor(e / (E/G))).
 *
 * Plan: probsTE[t, e] = p_group * p_expert for experts of the chosen groups and 0 elsewhere;
 * logitsTE[t, e] = group logit + expert logit where evaluated and {@link UNEVALUATED_LOGIT}
 * elsewhere (so logsumexp and softmax over logitsTE ignore unevaluated experts).
 *
 * Shape letters: T tokens, D model width, E experts, G groups, P groups per token, N = T*P,
 * M = E/G experts per group, K slots per token.
 */
import {
  matMul,
  scoped,
  segmentSum,
  softmax,
  type Tensor2D,
  takeAlongLastAxis,
  tf,
} from '@switchyard/tensor';
import { dropByCapacity } from '../capacity';
import type { ResolvedRouterConfig } from '../config';
import {
  callRng,
  capacityFor,
  checkRouteInput,
  combineWeights,
  decisionOf,
  decisionTensors,
  inWarmup,
  jitter,
  makePlan,
  type RoutingPlanTensors,
  throwNonFinite,
} from '../internal/common';
import { type GroupedImpl, groupAssignments, groupedLogits } from '../internal/grouped';
import { hostSoftmax, hostTopK, randomScores } from '../internal/select';
import type { RouteOptions, RoutingPlan } from '../types';

/**
 * Logit reported in `logitsTE` for experts a hierarchical router never evaluated for a token.
 *
 * When to use: to mask unevaluated entries when reading a hierarchical plan's logits.
 *
 * @example
 * ```ts
 * const evaluated = tf.notEqual(plan.logitsTE, UNEVALUATED_LOGIT);
 * ```
 */
export const UNEVALUATED_LOGIT = -1e9;

/** Routes xTD [T, D] with groupWeightDG [D, G] and expertWeightDE [D, E]. */
export function routeHierarchical(
  cfg: ResolvedRouterConfig,
  groupWeightDG: Tensor2D,
  expertWeightDE: Tensor2D,
  xTD: Tensor2D,
  options: RouteOptions,
  impl: GroupedImpl = 'auto',
): RoutingPlan {
  checkRouteInput(cfg, xTD, options);
  const T = xTD.shape[0];
  const E = cfg.numExperts;
  const G = cfg.numGroups;
  const P = cfg.groupK;
  const M = E / G;
  const K = cfg.k;
  const N = T * P;
  const C = P * M; // candidates per token
  const rng = callRng(options, 'jitter and random-routing warm-up');
  const warm = inWarmup(cfg, options);

  return scoped(() => {
    const x32TD = jitter(cfg, xTD, options, rng);

    // Level 1: group prototypes.
    const groupLogitsTG = matMul(x32TD, groupWeightDG) as Tensor2D;
    const groupProbsTG = softmax(groupLogitsTG, -1) as Tensor2D;
    const groupLogitsHost = groupLogitsTG.dataSync();
    throwNonFinite(groupLogitsHost, xTD, 'group logits');
    const groupProbsHost = hostSoftmax(groupLogitsHost, T, G);
    const groupSel = warm ? randomScores(T * G, rng().fork('warmup-groups')) : groupProbsHost;
    const groupIdx = hostTopK(groupSel, T, G, P); // [N], assignment a = t*P + j

    // Level 2: one product per group over the (token, group) assignments that chose it.
    const tokenOf = new Int32Array(N);
    for (let a = 0; a < N; a++) tokenOf[a] = Math.floor(a / P);
    const assignments = groupAssignments(tokenOf, groupIdx, G);
    const inLogitsNM = groupedLogits(x32TD, expertWeightDE, assignments, G, impl); // [N, M], assignment order
    const inLogitsHost = inLogitsNM.dataSync();
    throwNonFinite(inLogitsHost, xTD, 'expert logits');
    const inProbsHost = hostSoftmax(inLogitsHost, N, M);

    // Candidates [T, C]: column j*M + i is expert groupIdx[t*P+j]*M + i, score p_group * p_expert.
    const candExpert = new Int32Array(T * C);
    const candScore = new Float64Array(T * C);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < P; j++) {
        const g = groupIdx[t * P + j]!;
        const pg = groupProbsHost[t * G + g]!;
        for (let i = 0; i < M; i++) {
          const c = t * C + j * M + i;
          candExpert[c] = g * M + i;
          candScore[c] = pg * inProbsHost[(t * P + j) * M + i]!;
        }
      }
    }
    let selection: ArrayLike<number> = candScore;
    if (warm) selection = randomScores(T * C, rng().fork('warmup-experts'));
    else if (options.selectionBiasE !== undefined) {
      const bias = options.selectionBiasE;
      const biased = new Float64Array(T * C);
      for (let c = 0; c < T * C; c++) biased[c] = candScore[c]! + bias[candExpert[c]!]!;
      selection = biased;
    }
    const candIdx = hostTopK(selection, T, C, K);
    const expertIdx = new Int32Array(T * K);
    const gateTK = new Float64Array(T * K);
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < K; j++) {
        const c = t * C + candIdx[t * K + j]!;
        expertIdx[t * K + j] = candExpert[c]!;
        gateTK[t * K + j] = candScore[c]!;
      }
    }
    const capacity = capacityFor(cfg, T, K, options.training);
    const res = dropByCapacity(expertIdx, gateTK, T, K, E, capacity, cfg.dropPolicy);
    const decision = decisionOf(expertIdx, res, E, capacity);

    // On the tape: p_group * p_expert scattered into [T, E].
    const groupIdxTP = tf.tensor2d(groupIdx, [T, P], 'int32');
    const pGroupN1 = takeAlongLastAxis(groupProbsTG, groupIdxTP).reshape([N, 1]);
    const candNM = tf.mul(softmax(inLogitsNM, -1), pGroupN1); // [N, M]
    const scatterIdx = new Int32Array(N * M); // flat [T*E] slot of each candidate
    for (let a = 0; a < N; a++) {
      const t = Math.floor(a / P);
      const g = groupIdx[a]!;
      for (let i = 0; i < M; i++) scatterIdx[a * M + i] = t * E + g * M + i;
    }
    const probsTE = segmentSum(candNM.reshape([N * M, 1]), scatterIdx, T * E).reshape([T, E]) as Tensor2D;
    const gLogitN1 = takeAlongLastAxis(groupLogitsTG, groupIdxTP).reshape([N, 1]);
    const evalLogitsNM = tf.add(inLogitsNM, gLogitN1);
    const fill = new Float32Array(T * E).fill(UNEVALUATED_LOGIT);
    for (let s = 0; s < scatterIdx.length; s++) fill[scatterIdx[s]!] = 0;
    const logitsTE = tf.add(
      segmentSum(evalLogitsNM.reshape([N * M, 1]), scatterIdx, T * E).reshape([T, E]),
      tf.tensor2d(fill, [T, E]),
    ) as Tensor2D;

    const { topkIdxTK, keptMaskTK } = decisionTensors(decision, T, K);
    const topkWeightTK = combineWeights(probsTE, topkIdxTK, keptMaskTK, cfg.normTopK, cfg.routeScale);
    const tensors: RoutingPlanTensors = { logitsTE, probsTE, topkIdxTK, topkWeightTK, keptMaskTK };
    return makePlan(cfg.type, tensors, decision, T, E, K, {
      randomRouted: warm,
      capacityFactor: options.training ? cfg.capacityFactor : cfg.evalCapacityFactor,
      groupLogitsTG,
      groupProbsTG,
      groupIdx,
    });
  });
}
