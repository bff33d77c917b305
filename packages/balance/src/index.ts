/**
 * @switchyard/balance: balancing losses (micro-batch, sequence, global-batch, shuffled-batch,
 * device-level, usage variance, router z-loss), the loss-free bias controller, and balance metrics
 * (MaxVio and its noise floor, CV, entropy, drop rate, specialisation, router LSE^2).
 *
 * Canonical normalisation: f_i = c_i / (T K), P_i = mean_t p_i(t), loss = alpha * E * sum_i f_i P_i,
 * which equals alpha at perfect balance.
 *
 * @packageDocumentation
 */
export type {
  AllGatherFn,
  AllReduceFn,
  GlobalAuxLossConfig,
  ShuffledBatchAuxLossConfig,
} from './global';
export {
  defaultGlobalAuxLossConfig,
  defaultShuffledBatchAuxLossConfig,
  GlobalAuxLoss,
  ShuffledBatchAuxLoss,
} from './global';
export type { MaybePromise } from './internal/common';
export type {
  LossFreeBalancerConfig,
  LossFreeBalancerState,
  LossFreeStepResult,
  UpdateRateSchedule,
} from './loss-free';
export { defaultLossFreeBalancerConfig, LossFreeBalancer, piecewiseConstant } from './loss-free';
export type {
  AuxLossConfig,
  DeviceBalanceLossConfig,
  ScoresAndCounts,
  UsageVarianceLossConfig,
  ZLossConfig,
} from './losses';
export {
  defaultAuxLossConfig,
  defaultDeviceBalanceLossConfig,
  defaultSequenceAuxLossConfig,
  defaultUsageVarianceLossConfig,
  defaultZLossConfig,
  deviceBalanceLoss,
  microBatchAuxLoss,
  routerZLoss,
  sequenceAuxLoss,
  usageVarianceLoss,
} from './losses';
export type {
  BalanceStats,
  MaxVioGlobalConfig,
  PlanCounts,
  SpecialisationConfig,
  SpecialisationSummary,
} from './metrics';
export {
  balanceStats,
  coefficientOfVariation,
  domainExpertMutualInformation,
  domainLiftPeak,
  dropRate,
  MaxVioGlobal,
  maxVio,
  normalisedEntropy,
  perSequenceMaxVio,
  planBalanceStats,
  routerLse2,
  SpecialisationAccumulator,
  usageVariance,
} from './metrics';
export type { NoiseFloorConfig } from './noise-floor';
export { defaultNoiseFloorConfig, expectedMaxOfNormals, maxVioNoiseFloor } from './noise-floor';
