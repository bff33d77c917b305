/**
 * @switchyard/experts: expert FFNs with stacked weights, dispatch (tokens permuted so each expert's
 * rows are contiguous), grouped expert compute (dropless and capacity-padded), combine, shared
 * experts, a dense FFN baseline, the expert bank (how a layer holds its routed experts) and the MoE
 * layer that composes them with a router.
 *
 * @packageDocumentation
 */

export type { BankOutput, BankShape, ExpertBank } from './bank';
export { checkBankInput, StackedExpertBank } from './bank';
export type {
  ComputeMode,
  DenseFFNConfig,
  ExpertActivation,
  ExpertsConfig,
  FineGrainedExperts,
  MoELayerConfig,
  ResolvedDenseFFNConfig,
  ResolvedExpertsConfig,
  SharedExpertsConfig,
} from './config';
export {
  COMPUTE_MODES,
  defaultDenseFFNConfig,
  defaultExpertsConfig,
  defaultMoELayerConfig,
  defaultSharedExpertsConfig,
  EXPERT_ACTIVATIONS,
  fineGrainedExperts,
} from './config';
export { deviceCapacity, deviceRoutedExperts } from './device';
export type { DispatchPlan, DispatchSource } from './dispatch';
export { buildDispatch, combine, dispatch, dispatchedWeights } from './dispatch';
export type { ExpertWeightName } from './experts';
export { expertWeightsOf, RoutedExperts } from './experts';
export type { SharedExpertsOptions } from './ffn';
export { DenseFFN, SharedExperts } from './ffn';
export type { ExpertWeights, ResolvedComputeMode } from './grouped';
export { groupedExperts, resolveComputeMode } from './grouped';
export { splitRowsRaw, stackExperts } from './internal/rows';
export type { MoEForwardResult, MoELayerOptions } from './layer';
export { MoELayer } from './layer';
