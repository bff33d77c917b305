/**
 * Plumbing shared by every router: input and option checks, jitter, capacity lookup, combine
 * weights on the tape, and assembling a RoutingPlan.
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token.
 */
import {
  checkDtype,
  checkInt,
  checkShape,
  describeValue,
  invalidArgument,
  type Rng,
  SwitchyardError,
  type Tensor2D,
  takeAlongLastAxis,
  tf,
} from '@switchyard/tensor';
import { type CapacityResult, computeCapacity } from '../capacity';
import type { ResolvedRouterConfig } from '../config';
import type { RouteOptions, RoutingPlan } from '../types';
import { firstNonFinite } from './select';

export const ROUTE_FN = 'Router.route';

/** Validates xTD and the route options against the router config. */
export function checkRouteInput(cfg: ResolvedRouterConfig, xTD: Tensor2D, options: RouteOptions): void {
  if (!(xTD instanceof tf.Tensor)) throw invalidArgument(ROUTE_FN, 'xTD', 'a 2-D float32 tensor [T, D]', xTD);
  checkShape(ROUTE_FN, 'xTD', xTD, [null, cfg.dModel], 'TD');
  checkDtype(ROUTE_FN, 'xTD', xTD, ['float32']);
  if (xTD.shape[0] < 1)
    throw invalidArgument(ROUTE_FN, 'xTD', 'a tensor with at least one token (T >= 1)', xTD);
  if (options === null || typeof options !== 'object') {
    throw invalidArgument(ROUTE_FN, 'options', 'a RouteOptions object ({ training })', options);
  }
  if (typeof options.training !== 'boolean') {
    throw invalidArgument(ROUTE_FN, 'options.training', 'a boolean', options.training);
  }
  const bias = options.selectionBiasE;
  if (bias !== undefined) {
    if (!(bias instanceof Float32Array) || bias.length !== cfg.numExperts) {
      throw invalidArgument(
        ROUTE_FN,
        'options.selectionBiasE',
        `a Float32Array of length numExperts (${cfg.numExperts})`,
        bias instanceof Float32Array ? `length ${bias.length}` : bias,
      );
    }
    const bad = firstNonFinite(bias);
    if (bad >= 0) throw invalidArgument(ROUTE_FN, `options.selectionBiasE[${bad}]`, 'finite', bias[bad]);
  }
  if (options.step !== undefined) checkInt(ROUTE_FN, 'options.step', options.step, { min: 0 });
  if (options.totalSteps !== undefined)
    checkInt(ROUTE_FN, 'options.totalSteps', options.totalSteps, { min: 1 });
}

/** Lazily splits one child generator per route call from options.rng (advancing it once). */
export function callRng(options: RouteOptions, why: string): () => Rng {
  let child: Rng | undefined;
  return () => {
    if (child === undefined) {
      if (options.rng === undefined) {
        throw invalidArgument(ROUTE_FN, 'options.rng', `an Rng (needed for ${why} in training)`, options.rng);
      }
      child = options.rng.split();
    }
    return child;
  };
}

/** True while the random-routing warm-up is active for this call. */
export function inWarmup(cfg: ResolvedRouterConfig, options: RouteOptions): boolean {
  if (!options.training || cfg.randomRoutingWarmup === 0) return false;
  if (options.step === undefined || options.totalSteps === undefined) {
    throw invalidArgument(
      ROUTE_FN,
      options.step === undefined ? 'options.step' : 'options.totalSteps',
      'an integer when randomRoutingWarmup > 0 in training',
      options.step === undefined ? options.step : options.totalSteps,
    );
  }
  return options.step < cfg.randomRoutingWarmup * options.totalSteps;
}

/** Multiplies xTD by U(1 - eps, 1 + eps) noise in training; float32 either way. */
export function jitter(
  cfg: ResolvedRouterConfig,
  xTD: Tensor2D,
  options: RouteOptions,
  rng: () => Rng,
): Tensor2D {
  const x32 = xTD.toFloat();
  if (!options.training || cfg.jitterEps === 0) return x32;
  const noise = rng()
    .fork('jitter')
    .uniformTensor(xTD.shape, 1 - cfg.jitterEps, 1 + cfg.jitterEps);
  return tf.mul(x32, noise) as Tensor2D;
}

/** Capacity for this call (train or eval factor), or null for dropless. */
export function capacityFor(
  cfg: ResolvedRouterConfig,
  T: number,
  K: number,
  training: boolean,
): number | null {
  const factor = training ? cfg.capacityFactor : cfg.evalCapacityFactor;
  return computeCapacity(T, K, cfg.numExperts, factor);
}

/**
 * Throws NON_FINITE for router scores read to the host: names `xTD` when the input holds a
 * non-finite value (one more device read, only on this error path), else the router weights.
 */
export function throwNonFinite(host: ArrayLike<number>, xTD: Tensor2D, what: string): void {
  const bad = firstNonFinite(host);
  if (bad < 0) return;
  const xs = xTD.dataSync();
  const badX = firstNonFinite(xs);
  if (badX >= 0) {
    throw new SwitchyardError(
      'NON_FINITE',
      `\`xTD\` passed to ${ROUTE_FN}() must be finite, got ${describeValue(xs[badX])} at flat index ${badX} of a ${describeValue(xTD)}`,
      { details: { fn: ROUTE_FN, arg: 'xTD', index: badX, value: xs[badX] } },
    );
  }
  throw new SwitchyardError(
    'NON_FINITE',
    `router ${what} computed in ${ROUTE_FN}() must be finite, got ${describeValue(host[bad])} at flat index ${bad}: the router weights hold non-finite values`,
    { details: { fn: ROUTE_FN, arg: what, index: bad, value: host[bad] } },
  );
}

/**
 * Combine weights on the tape: gather the chosen scores from probsTE, optionally renormalise over
 * the K chosen (before dropping, so a dropped slot does not inflate the others), scale, then zero
 * dropped slots.
 */
export function combineWeights(
  probsTE: Tensor2D,
  topkIdxTK: Tensor2D,
  keptMaskTK: Tensor2D,
  normTopK: boolean,
  routeScale: number,
): Tensor2D {
  let w = takeAlongLastAxis(probsTE, topkIdxTK); // [T, K]
  if (normTopK) w = tf.div(w, tf.add(tf.sum(w, 1, true), 1e-20)) as Tensor2D;
  if (routeScale !== 1) w = tf.mul(w, routeScale) as Tensor2D;
  return tf.mul(w, keptMaskTK) as Tensor2D;
}

/** Fields of a plan beyond the tensors, computed on the host. */
export interface HostDecision {
  readonly expertIdx: Int32Array;
  readonly kept: Uint8Array;
  readonly countsE: Int32Array;
  readonly keptCountsE: Int32Array;
  readonly capacity: number | null;
  readonly dropped: number;
}

/** Builds the int32 index and float32 mask tensors [T, K] of a host decision. */
export function decisionTensors(
  d: HostDecision,
  T: number,
  K: number,
): { topkIdxTK: Tensor2D; keptMaskTK: Tensor2D } {
  const topkIdxTK = tf.tensor2d(d.expertIdx, [T, K], 'int32');
  const mask = new Float32Array(T * K);
  for (let i = 0; i < mask.length; i++) mask[i] = d.kept[i]!;
  const keptMaskTK = tf.tensor2d(mask, [T, K], 'float32');
  return { topkIdxTK, keptMaskTK };
}

/** The five tensors every plan carries. */
export interface RoutingPlanTensors {
  readonly logitsTE: Tensor2D;
  readonly probsTE: Tensor2D;
  readonly topkIdxTK: Tensor2D;
  readonly topkWeightTK: Tensor2D;
  readonly keptMaskTK: Tensor2D;
}

/** Assembles the plan object. */
export function makePlan(
  router: string,
  tensors: RoutingPlanTensors,
  d: HostDecision,
  T: number,
  E: number,
  K: number,
  extra: Partial<RoutingPlan> = {},
): RoutingPlan {
  const total = T * K;
  return {
    ...tensors,
    expertIdx: d.expertIdx,
    kept: d.kept,
    countsE: d.countsE,
    keptCountsE: d.keptCountsE,
    capacity: d.capacity,
    numTokens: T,
    numExperts: E,
    k: K,
    dropRate: total === 0 ? 0 : d.dropped / total,
    router,
    ...extra,
  };
}

/** Counts selections per expert (sums to the number of assignments). */
export function countSelections(expertIdx: Int32Array, E: number): Int32Array {
  const c = new Int32Array(E);
  for (let i = 0; i < expertIdx.length; i++) c[expertIdx[i]!]! += 1;
  return c;
}

/** The host-side routing decision every router hands to makePlan: selections, what capacity kept, counts. */
export function decisionOf(expertIdx: Int32Array, res: CapacityResult, E: number, capacity: number | null) {
  return {
    expertIdx,
    kept: res.kept,
    countsE: countSelections(expertIdx, E),
    keptCountsE: res.keptCountsE,
    capacity,
    dropped: res.dropped,
  };
}
