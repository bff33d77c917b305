/**
 * @switchyard/parallel: collectives over three transports (one rank in-process, worker threads on one
 * machine, ZeroMQ between processes and hosts), a launcher that starts ranks, and expert and data
 * parallelism for MoE layers.
 *
 * @packageDocumentation
 */

export type { GradientSet, GradientSyncConfig, VariableSet } from './data-parallel';
export {
  allReduceGradients,
  broadcastVariables,
  defaultGradientSyncConfig,
  globalGradNorm,
  isShardedVariable,
  shardRange,
  sumOverRanks,
} from './data-parallel';
export type { ExpertParallelConfig, ExpertWeightName } from './expert-parallel';
export {
  allToAllRows,
  applyExpertParallel,
  defaultExpertParallelConfig,
  ExpertParallelMoE,
  withFullExperts,
} from './expert-parallel';
export type { LaunchConfig, LaunchEvent, LaunchOptions, LaunchResult, MasterAddress } from './launch';
export { defaultLaunchConfig, LAUNCH_FLAGS, launch, parseLaunchArgs, parseMaster } from './launch';
export { createLocalCommunicator, DEFAULT_COLLECTIVE_TIMEOUT_MS } from './local';
export type {
  CollectiveOptions,
  Communicator,
  HostBuffer,
  PeerInfo,
  RankContext,
  RankFunction,
  ReduceOp,
  TransportKind,
} from './types';
export type { FlatEntry, FlatLayout, FlatRange } from './zero';
export {
  allGatherFlat,
  allGatherVariables,
  flatLayout,
  flatRange,
  readFlat,
  reduceScatterGradients,
  writeFlat,
} from './zero';
