/**
 * Balancing losses computed from one routing plan. Each returns a float32 scalar on the tape whose
 * gradient flows only through the router's scores (`probsTE`, or `logitsTE` for the z-loss); the
 * counts are host numbers and enter as constants.
 *
 * Canonical normalisation: f_i = c_i / (T * K), P_i = mean_t p_i(t), loss = alpha * E * sum_i f_i P_i,
 * which equals alpha at perfect balance. f is computed as c_i / sum_j c_j, which is c_i / (T * K)
 * whenever every token fills its K slots (and stays a distribution when a router skips some).
 *
 * Shape letters: T tokens, E routed experts, K slots per token, B sequences, S tokens per sequence,
 * G devices.
 */
import type { RoutingPlan } from '@switchyard/routing';
import {
  checkInt,
  customGrad,
  invalidArgument,
  logSumExp,
  SwitchyardError,
  scoped,
  tf,
} from '@switchyard/tensor';
import {
  balanceWeightsE,
  checkBool,
  checkCoef,
  checkCountsE,
  checkScores,
  meanScoresE,
  normalisedScores,
  weightedSum,
} from './internal/common';

/** The plan fields the count-based losses read (any RoutingPlan fits; counts may also be pooled floats). */
export interface ScoresAndCounts {
  /** Normalised scores [T, E], float32, on the tape. */
  readonly probsTE: RoutingPlan['probsTE'];
  /** c_i per expert (selections before dropping). */
  readonly countsE: ArrayLike<number>;
}

/** Settings of the canonical aux losses (micro-batch, sequence). */
export interface AuxLossConfig {
  /** Loss coefficient; the loss equals alpha at perfect balance. */
  readonly alpha: number;
  /** Divide each token's scores by their sum before averaging (DeepSeek-V3's s'; needed for sigmoid scores, a no-op for softmax). */
  readonly normaliseScores: boolean;
}

/** Defaults of {@link microBatchAuxLoss}: alpha = 1e-2 (Switch Transformer). */
export const defaultAuxLossConfig: AuxLossConfig = { alpha: 1e-2, normaliseScores: true };

/** Defaults of {@link sequenceAuxLoss}: alpha = 1e-4, as a complement to another balancer (DeepSeek-V3). */
export const defaultSequenceAuxLossConfig: AuxLossConfig = { alpha: 1e-4, normaliseScores: true };

function resolveAux(fn: string, defaults: AuxLossConfig, config: Partial<AuxLossConfig>): AuxLossConfig {
  const c = { ...defaults, ...config };
  checkCoef(fn, 'config.alpha', c.alpha);
  checkBool(fn, 'config.normaliseScores', c.normaliseScores);
  return c;
}

/**
 * Micro-batch load-balancing loss (Switch Transformer): `alpha * E * sum_i f_i P_i` with
 * `f_i = c_i / (T K)` from `plan.countsE` and `P_i` the mean score over the plan's T tokens. Equals alpha at perfect balance and alpha * E when one expert takes every
 * token with score 1 (K = 1).
 *
 * When to use: the standard auxiliary loss, added to the LM loss of every MoE layer.
 *
 * @example
 * ```ts
 * const plan = router.route(xTD, { training: true });
 * const loss = tf.add(lmLoss, microBatchAuxLoss(plan, { alpha: 1e-2 }));
 * ```
 */
export function microBatchAuxLoss(plan: ScoresAndCounts, config: Partial<AuxLossConfig> = {}): tf.Scalar {
  const fn = 'microBatchAuxLoss';
  const c = resolveAux(fn, defaultAuxLossConfig, config);
  const [, E] = checkScores(fn, plan.probsTE);
  const countsE = checkCountsE(fn, 'plan.countsE', plan.countsE, E);
  return scoped(() =>
    weightedSum(meanScoresE(plan.probsTE, c.normaliseScores), balanceWeightsE(countsE, c.alpha)),
  );
}

/**
 * Sequence-wise balance loss (DeepSeek-V3): f and P computed per sequence of `seqLen` tokens (the T
 * rows are B sequences laid out row-major), the canonical loss averaged over the B sequences.
 * Counts come from `plan.expertIdx` (selections before capacity dropping).
 *
 * When to use: a small complementary term (alpha ~ 1e-4) that keeps single sequences from collapsing
 * onto a few experts, next to the loss-free bias or a global-batch loss.
 *
 * @example
 * ```ts
 * const plan = router.route(xTD, { training: true, seqLen: 128 });
 * const loss = sequenceAuxLoss(plan, 128); // alpha 1e-4
 * ```
 */
export function sequenceAuxLoss(
  plan: Pick<RoutingPlan, 'probsTE' | 'expertIdx' | 'k'>,
  seqLen: number,
  config: Partial<AuxLossConfig> = {},
): tf.Scalar {
  const fn = 'sequenceAuxLoss';
  const c = resolveAux(fn, defaultSequenceAuxLossConfig, config);
  const [T, E] = checkScores(fn, plan.probsTE);
  const S = checkInt(fn, 'seqLen', seqLen, { min: 1 });
  if (T % S !== 0) throw invalidArgument(fn, 'seqLen', `a divisor of the number of tokens (${T})`, seqLen);
  const K = checkInt(fn, 'plan.k', plan.k, { min: 1, max: E });
  if (plan.expertIdx.length !== T * K) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`plan.expertIdx\` passed to ${fn}() must hold T * K = ${T * K} indices, got ${plan.expertIdx.length}`,
    );
  }
  const B = T / S;
  // weightsBE[b, i] = alpha * E * f_bi / B with f_bi = c_bi / (S * K)
  const weightsBE = new Float64Array(B * E);
  const unit = (c.alpha * E) / (S * K * B);
  for (let t = 0; t < T; t++) {
    const row = Math.floor(t / S) * E;
    for (let j = 0; j < K; j++) {
      const e = plan.expertIdx[t * K + j]!;
      if (!(e >= 0 && e < E))
        throw invalidArgument(fn, `plan.expertIdx[${t * K + j}]`, `an expert in [0, ${E - 1}]`, e);
      weightsBE[row + e]! += unit;
    }
  }
  return scoped(() => {
    const pBE = tf.mean(normalisedScores(plan.probsTE, c.normaliseScores).reshape([B, S, E]), 1); // [B, E]
    return weightedSum(pBE, weightsBE);
  });
}

/** Settings of {@link routerZLoss}. */
export interface ZLossConfig {
  /** Loss coefficient (ST-MoE: 1e-3). */
  readonly coef: number;
}

/** Defaults of {@link routerZLoss}. */
export const defaultZLossConfig: ZLossConfig = { coef: 1e-3 };

/**
 * Router z-loss (ST-MoE): `coef * (1/T) sum_t (logsumexp_j logits_tj)^2`. Penalises large router
 * logits, which keeps the softmax in a range where float32 round-off stays small.
 *
 * When to use: with any softmax router, for training stability; watch {@link routerLse2} fall.
 *
 * @example
 * ```ts
 * const loss = tf.add(microBatchAuxLoss(plan), routerZLoss(plan)); // coef 1e-3
 * ```
 */
export function routerZLoss(
  plan: Pick<RoutingPlan, 'logitsTE'>,
  config: Partial<ZLossConfig> = {},
): tf.Scalar {
  const fn = 'routerZLoss';
  const c = { ...defaultZLossConfig, ...config };
  checkCoef(fn, 'config.coef', c.coef);
  checkScores(fn, plan.logitsTE, undefined, 'plan.logitsTE');
  return scoped(() => {
    const lseT = logSumExp(plan.logitsTE.toFloat(), -1);
    return tf.mul(tf.mean(tf.square(lseT)), tf.scalar(c.coef, 'float32')) as tf.Scalar;
  });
}

/** Settings of {@link deviceBalanceLoss}. */
export interface DeviceBalanceLossConfig {
  /** Loss coefficient alpha2 (DeepSeekMoE: 0.05); the loss equals alpha2 at perfect balance. */
  readonly alpha: number;
  /** As in {@link AuxLossConfig.normaliseScores}. */
  readonly normaliseScores: boolean;
}

/** Defaults of {@link deviceBalanceLoss}. */
export const defaultDeviceBalanceLossConfig: DeviceBalanceLossConfig = { alpha: 0.05, normaliseScores: true };

/** Device of each expert: contiguous equal blocks for a count, or the explicit map. */
function deviceMap(
  fn: string,
  devices: number | ArrayLike<number>,
  E: number,
): { ofE: Int32Array; G: number } {
  const ofE = new Int32Array(E);
  if (typeof devices === 'number') {
    const G = checkInt(fn, 'devices', devices, { min: 1, max: E });
    if (E % G !== 0)
      throw invalidArgument(fn, 'devices', `a divisor of the number of experts (${E})`, devices);
    for (let i = 0; i < E; i++) ofE[i] = Math.floor(i / (E / G));
    return { ofE, G };
  }
  if (devices?.length !== E) {
    throw invalidArgument(fn, 'devices', `a device count or one device index per expert (${E})`, devices);
  }
  let G = 0;
  for (let i = 0; i < E; i++) {
    ofE[i] = checkInt(fn, `devices[${i}]`, devices[i], { min: 0 });
    G = Math.max(G, ofE[i]! + 1);
  }
  return { ofE, G };
}

/**
 * Device-level balance loss (DeepSeekMoE): experts are grouped by device d;
 * `alpha2 * sum_d f'_d P'_d` with `f'_d = (E / |E_d|) * sum_{i in d} f_i` (the mean of DeepSeek's
 * E-scaled frequencies) and `P'_d = sum_{i in d} P_i`. Equals alpha2 at perfect balance; balancing
 * devices instead of experts leaves experts on the same device free to specialise.
 *
 * When to use: expert parallelism where only per-device load matters for speed; pair it with a weak
 * expert-level loss.
 *
 * @example
 * ```ts
 * const loss = deviceBalanceLoss(plan, 4);            // 4 devices, contiguous blocks of E/4 experts
 * const loss2 = deviceBalanceLoss(plan, [0, 0, 1, 1]); // explicit device of each expert
 * ```
 */
export function deviceBalanceLoss(
  plan: ScoresAndCounts,
  devices: number | ArrayLike<number>,
  config: Partial<DeviceBalanceLossConfig> = {},
): tf.Scalar {
  const fn = 'deviceBalanceLoss';
  const c = { ...defaultDeviceBalanceLossConfig, ...config };
  checkCoef(fn, 'config.alpha', c.alpha);
  checkBool(fn, 'config.normaliseScores', c.normaliseScores);
  const [, E] = checkScores(fn, plan.probsTE);
  const countsE = checkCountsE(fn, 'plan.countsE', plan.countsE, E);
  const { ofE, G } = deviceMap(fn, devices, E);
  const fE = balanceWeightsE(countsE, 1 / E); // f_i = c_i / sum c
  const fG = new Float64Array(G);
  const sizeG = new Float64Array(G);
  for (let i = 0; i < E; i++) {
    fG[ofE[i]!]! += fE[i]!;
    sizeG[ofE[i]!]! += 1;
  }
  // sum_d f'_d P'_d = sum_i f'_{d(i)} P_i: one weight per expert.
  const weightsE = new Float64Array(E);
  for (let i = 0; i < E; i++) {
    const d = ofE[i]!;
    weightsE[i] = (c.alpha * E * fG[d]!) / sizeG[d]!;
  }
  return scoped(() => weightedSum(meanScoresE(plan.probsTE, c.normaliseScores), weightsE));
}

/** Settings of {@link usageVarianceLoss}. */
export interface UsageVarianceLossConfig {
  /** Loss coefficient; the loss value is coef * var_i(c_i / sum c). */
  readonly coef: number;
  /** As in {@link AuxLossConfig.normaliseScores}. */
  readonly normaliseScores: boolean;
}

/** Defaults of {@link usageVarianceLoss}: coef 1 (the value is the usage variance itself). */
export const defaultUsageVarianceLossConfig: UsageVarianceLossConfig = { coef: 1, normaliseScores: true };

/**
 * Usage-variance loss: value `coef * var_i(u_i)` with `u = c / sum c` (population variance over the E
 * experts; 0 at perfect balance). Counts carry no gradient, so the gradient is passed straight through
 * to the mean scores: `dL/dP_i = coef * 2 (u_i - 1/E) / E`, pushing scores of overloaded experts down.
 *
 * When to use: a minor alternative to the aux loss whose value reads as a plain variance of load.
 *
 * @example
 * ```ts
 * const loss = usageVarianceLoss(plan, { coef: 1e-1 });
 * ```
 */
export function usageVarianceLoss(
  plan: ScoresAndCounts,
  config: Partial<UsageVarianceLossConfig> = {},
): tf.Scalar {
  const fn = 'usageVarianceLoss';
  const c = { ...defaultUsageVarianceLossConfig, ...config };
  checkCoef(fn, 'config.coef', c.coef);
  checkBool(fn, 'config.normaliseScores', c.normaliseScores);
  const [, E] = checkScores(fn, plan.probsTE);
  const countsE = checkCountsE(fn, 'plan.countsE', plan.countsE, E);
  const uE = balanceWeightsE(countsE, 1 / E);
  const counted = countsE.some((v) => v > 0);
  let value = 0;
  const gradE = new Float32Array(E);
  for (let i = 0; i < E && counted; i++) {
    const dev = uE[i]! - 1 / E;
    value += (dev * dev) / E;
    gradE[i] = (c.coef * 2 * dev) / E;
  }
  const straightThrough = customGrad((_pE: tf.Tensor) => ({
    value: tf.scalar(c.coef * value, 'float32'),
    gradFunc: (dy) => tf.mul(dy, tf.tensor1d(gradE, 'float32')),
  }));
  return scoped(() => straightThrough(meanScoresE(plan.probsTE, c.normaliseScores)));
}
