/**
 * @switchyard/compress: dual-similarity expert clustering (structural, functional and fused
 * similarity), shared-basis low-rank experts (a compressed ExpertBank) and two-level routing.
 *
 * @packageDocumentation
 */

export type { CompressedExpertsOptions, CompressedExpertsStats, MaterializeMode } from './bank';
export { CompressedExperts } from './bank';
export type { CompressionRecord, LoadedCompressedCheckpoint, SaveCompressedOptions } from './checkpoint';
export {
  COMPRESSION_FILES,
  compressionTensorNames,
  loadCompressedCheckpoint,
  saveCompressedCheckpoint,
} from './checkpoint';
export type { ClusterOptions, ExpertGrouping } from './cluster';
export {
  clusterExperts,
  groupingFromAssignment,
  groupingJaccard,
  withinGroupSimilarity,
} from './cluster';
export type {
  ExpertError,
  FactorInit,
  FactorizeOptions,
  FactorizeResult,
  LayerFactors,
  MatrixFactors,
  MatrixName,
} from './factorize';
export { checkRank, factorizeExperts, layerFactors } from './factorize';
export type {
  ClusterModelOptions,
  CompressModelOptions,
  CompressModelResult,
  GroupRouted,
  LayerClustering,
  LayerCompression,
} from './model';
export { activationCentroids, clusterModel, compressModel, routeByGroup } from './model';
export type { RatioShape } from './ratio';
export { compressionRatio } from './ratio';
export type { CentroidSource, SimilarityMatrix } from './similarity';
export {
  ActivationCentroids,
  DEFAULT_LAMBDA,
  flattenExperts,
  functionalSimilarity,
  fusedSimilarity,
  structuralSimilarity,
} from './similarity';
export type { Svd } from './svd';
export { reconstruct, svd } from './svd';
