/**
 * Forced-balanced debug router: no learned scores. Slot j of token t goes to expert
 * (t * K + j) mod E (`round-robin`) or (hash(tokenId) + j) mod E (`hash`); every combine weight is
 * 1/K (times routeScale). For throughput benchmarks that must not depend on convergence
 * (Megatron's force-load-balancing); never for training a model.
 *
 * logitsTE is all zeros and probsTE uniform (1/E), constants with no gradient.
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token.
 */
import { invalidArgument, scoped, type Tensor2D, tf } from '@switchyard/tensor';
import { dropByCapacity } from '../capacity';
import type { ResolvedRouterConfig } from '../config';
import {
  capacityFor,
  checkRouteInput,
  decisionOf,
  decisionTensors,
  makePlan,
  ROUTE_FN,
  type RoutingPlanTensors,
} from '../internal/common';
import type { RouteOptions, RoutingPlan } from '../types';

/** 32-bit integer hash (lowbias32), so nearby token ids land on unrelated experts. */
export function hashTokenId(id: number): number {
  let x = id >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** Routes xTD [T, D] (only its row count is used). */
export function routeBalanced(cfg: ResolvedRouterConfig, xTD: Tensor2D, options: RouteOptions): RoutingPlan {
  checkRouteInput(cfg, xTD, options);
  const T = xTD.shape[0];
  const E = cfg.numExperts;
  const K = cfg.k;
  const ids = options.tokenIds;
  if (cfg.assignment === 'hash' && (!(ids instanceof Int32Array) || ids.length !== T)) {
    throw invalidArgument(
      ROUTE_FN,
      'options.tokenIds',
      `an Int32Array of length T (${T}) for hash routing`,
      ids instanceof Int32Array ? `length ${ids.length}` : ids,
    );
  }
  const expertIdx = new Int32Array(T * K);
  for (let t = 0; t < T; t++) {
    const base = cfg.assignment === 'hash' ? hashTokenId(ids![t]!) % E : (t * K) % E;
    for (let j = 0; j < K; j++) expertIdx[t * K + j] = (base + j) % E;
  }
  const capacity = capacityFor(cfg, T, K, options.training);
  const res = dropByCapacity(expertIdx, new Float32Array(T * K), T, K, E, capacity, cfg.dropPolicy);
  const decision = decisionOf(expertIdx, res, E, capacity);
  return scoped(() => {
    const logitsTE = tf.zeros([T, E], 'float32') as Tensor2D;
    const probsTE = tf.fill([T, E], 1 / E, 'float32') as Tensor2D;
    const { topkIdxTK, keptMaskTK } = decisionTensors(decision, T, K);
    const topkWeightTK = tf.mul(keptMaskTK, cfg.routeScale / K) as Tensor2D;
    const tensors: RoutingPlanTensors = { logitsTE, probsTE, topkIdxTK, topkWeightTK, keptMaskTK };
    return makePlan(cfg.type, tensors, decision, T, E, K, {
      capacityFactor: options.training ? cfg.capacityFactor : cfg.evalCapacityFactor,
    });
  });
}
