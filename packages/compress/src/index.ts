/**
 * @switchyard/compress: dual-similarity expert clustering (structural, functional and fused
 * similarity), shared-basis low-rank experts (a compressed ExpertBank) and two-level routing.
 *
 * @packageDocumentation
 */
export type { ClusterOptions, ExpertGrouping } from './cluster';
export {
  clusterExperts,
  groupingFromAssignment,
  groupingJaccard,
  withinGroupSimilarity,
} from './cluster';
export type { CentroidSource, SimilarityMatrix } from './similarity';
export {
  ActivationCentroids,
  DEFAULT_LAMBDA,
  flattenExperts,
  functionalSimilarity,
  fusedSimilarity,
  structuralSimilarity,
} from './similarity';
