/**
 * Token-choice routers that score all E experts with one product x @ W: softmax top-k, Switch
 * top-1, GShard top-2 and sigmoid + bias (DeepSeek-V3), each optionally group-limited.
 *
 * The pipeline reads top to bottom like DeepSeek-V3's gate: scores -> optional bias -> group mask
 * -> top-k -> (GShard random second expert) -> capacity -> combine weights (renormalise, scale).
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token, G groups.
 */

import type { Rng } from '@switchyard/tensor';
import { matMul, scoped, sigmoid, softmax, type Tensor2D } from '@switchyard/tensor';
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
import { decideOnDevice, makeDevicePlan } from '../internal/device';
import { addColumnBias, gatherHost, groupLimitedMask, hostTopK, randomScores } from '../internal/select';
import type { RouteOptions, RoutingPlan } from '../types';

/**
 * Routes xTD [T, D] with router weights weightDE [D, E] (a variable or any tensor on the tape).
 * Exposed separately from the Router object so gradients can be checked with respect to the weights.
 */
export function routeScored(
  cfg: ResolvedRouterConfig,
  weightDE: Tensor2D,
  xTD: Tensor2D,
  options: RouteOptions,
): RoutingPlan {
  checkRouteInput(cfg, xTD, options);
  const T = xTD.shape[0];
  const E = cfg.numExperts;
  const K = cfg.k;
  const rng = callRng(options, 'jitter, random-routing warm-up and GShard random routing');
  const warm = inWarmup(cfg, options);
  const useSigmoid = cfg.type === 'sigmoid';

  return scoped(() => {
    // Scores, in float32 whatever the model's precision.
    const x32TD = jitter(cfg, xTD, options, rng);
    const logitsTE = matMul(x32TD, weightDE) as Tensor2D;
    const probsTE = (useSigmoid ? sigmoid(logitsTE) : softmax(logitsTE, -1)) as Tensor2D;
    if (cfg.decideOn === 'device') return routeScoredOnDevice(cfg, logitsTE, probsTE, options, rng, warm);

    // Read the logits (to reject non-finite input) and the scores; every integer decision below is
    // host work, off the tape.
    throwNonFinite(logitsTE.dataSync(), xTD, 'logits');
    const scores = probsTE.dataSync();

    // Selection scores: random during warm-up, else scores plus the selection-only bias.
    let selection: ArrayLike<number> = scores;
    if (warm) selection = randomScores(T * E, rng().fork('warmup'));
    else if (options.selectionBiasE !== undefined)
      selection = addColumnBias(scores, T, E, options.selectionBiasE);

    const allowed =
      cfg.groupLimited === null
        ? undefined
        : groupLimitedMask(selection, T, E, cfg.groupLimited.numGroups, cfg.groupLimited.groupTopK);
    const expertIdx = hostTopK(selection, T, E, K, allowed);

    // GShard: the second expert is used only if 2 * g2 > U(0, 1) (g normalised over the pair).
    let active: Uint8Array | undefined;
    let skipped = 0;
    if (cfg.type === 'gshard') {
      active = new Uint8Array(T * K).fill(1);
      const u = options.training ? rng().fork('gshard-second') : undefined;
      for (let t = 0; t < T; t++) {
        const g1 = scores[t * E + expertIdx[t * K]!]!;
        const g2 = scores[t * E + expertIdx[t * K + 1]!]!;
        const g2n = g2 / (g1 + g2);
        const use = u !== undefined ? 2 * g2n > u.float() : g2n >= cfg.evalSecondExpertThreshold;
        if (!use) {
          active[t * K + 1] = 0;
          skipped++;
        }
      }
    }

    const capacity = capacityFor(cfg, T, K, options.training);
    const gateTK = gatherHost(scores, expertIdx, T, E, K);
    const res = dropByCapacity(expertIdx, gateTK, T, K, E, capacity, cfg.dropPolicy, {
      ...(active === undefined ? {} : { active }),
      order: cfg.type === 'gshard' ? 'slot' : 'token',
    });
    const decision = decisionOf(expertIdx, res, E, capacity);

    // Combine weights on the tape: gathered from probsTE, so they differentiate w.r.t. W and x.
    const { topkIdxTK, keptMaskTK } = decisionTensors(decision, T, K);
    const topkWeightTK = combineWeights(probsTE, topkIdxTK, keptMaskTK, cfg.normTopK, cfg.routeScale);
    const tensors: RoutingPlanTensors = { logitsTE, probsTE, topkIdxTK, topkWeightTK, keptMaskTK };
    return makePlan(cfg.type, tensors, decision, T, E, K, {
      skipped,
      randomRouted: warm,
      capacityFactor: options.training ? cfg.capacityFactor : cfg.evalCapacityFactor,
    });
  });
}

/**
 * The same pipeline with the decisions as tensor ops (`decideOn: 'device'`): nothing is read to the
 * host. The host inputs the decisions draw (warm-up scores, GShard's uniforms) come from the same
 * generators in the same order as on the host path, so both paths decide alike. The router's logits
 * are not checked for non-finite values here (that would be a read); the trainer's loss guard is.
 */
function routeScoredOnDevice(
  cfg: ResolvedRouterConfig,
  logitsTE: Tensor2D,
  probsTE: Tensor2D,
  options: RouteOptions,
  rng: () => Rng,
  warm: boolean,
): RoutingPlan {
  const [T, E] = probsTE.shape;
  const K = cfg.k;
  const capacity = capacityFor(cfg, T, K, options.training);
  // Drawn in the host path's order: warm-up scores, then GShard's uniforms.
  const randomSelection = warm ? randomScores(T * E, rng().fork('warmup')) : undefined;
  let gshardUniform: Float32Array | undefined;
  if (cfg.type === 'gshard' && options.training) {
    const u = rng().fork('gshard-second');
    gshardUniform = Float32Array.from({ length: T }, () => u.float());
  }
  const { topkIdxTK, keptMaskTK, activeMaskTK } = decideOnDevice(probsTE, {
    numExperts: E,
    k: K,
    groupLimited: cfg.groupLimited,
    ...(randomSelection !== undefined ? { randomSelection } : {}),
    ...(!warm && options.selectionBiasE !== undefined ? { selectionBiasE: options.selectionBiasE } : {}),
    ...(gshardUniform !== undefined ? { gshardUniform } : {}),
    ...(cfg.type === 'gshard' && !options.training ? { gshardThreshold: cfg.evalSecondExpertThreshold } : {}),
    capacity,
    dropPolicy: cfg.dropPolicy,
    order: cfg.type === 'gshard' ? 'slot' : 'token',
  });
  const topkWeightTK = combineWeights(probsTE, topkIdxTK, keptMaskTK, cfg.normTopK, cfg.routeScale);
  const tensors = { logitsTE, probsTE, topkIdxTK, topkWeightTK, keptMaskTK };
  if (cfg.type !== 'gshard') activeMaskTK.dispose(); // every assignment is used
  return makeDevicePlan(
    cfg.type,
    cfg.type === 'gshard' ? { ...tensors, activeMaskTK } : tensors,
    T,
    E,
    K,
    capacity,
    { randomRouted: warm, capacityFactor: options.training ? cfg.capacityFactor : cfg.evalCapacityFactor },
  );
}
