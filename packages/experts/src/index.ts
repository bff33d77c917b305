/**
 * @switchyard/experts: expert FFNs with stacked weights, dispatch (tokens permuted so each expert's
 * rows are contiguous), grouped expert compute (dropless and capacity-padded), combine, shared
 * experts, a dense FFN baseline, and the MoE layer that composes them with a router.
 *
 * @packageDocumentation
 */
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
export type { DispatchPlan } from './dispatch';
export { buildDispatch, combine, dispatch, dispatchedWeights } from './dispatch';
export { RoutedExperts } from './experts';
export type { SharedExpertsOptions } from './ffn';
export { DenseFFN, SharedExperts } from './ffn';
export type { ExpertWeights, ResolvedComputeMode } from './grouped';
export { groupedExperts, resolveComputeMode } from './grouped';
export type { MoEForwardResult } from './layer';
export { MoELayer } from './layer';
