/**
 * @switchyard/parallel: collectives and point-to-point messages over three transports (one rank
 * in-process, worker threads on one machine, ZeroMQ between processes and hosts) and a launcher that
 * starts ranks (`comm/`); the strategies that run a model on them (`strategies/`): data parallelism,
 * ZeRO-1 sharded optimizer steps, and expert parallelism as an expert bank installed through the
 * model's `moeLayers()`; redundant experts placed and rebalanced online by EPLB (`replicas/`); and the
 * executor of @switchyard/plan's pipeline schedules (`pipeline/`).
 *
 * @packageDocumentation
 */

export type { SchedulerEnv, SchedulerKind, SchedulerLaunch } from './comm/env';
export { DEFAULT_MASTER_PORT, expandHostlist, schedulerLaunchConfig } from './comm/env';
export { groupCommunicator } from './comm/groups';
export type { LaunchConfig, LaunchEvent, LaunchOptions, LaunchResult, MasterAddress } from './comm/launch';
export { defaultLaunchConfig, LAUNCH_FLAGS, launch, parseLaunchArgs, parseMaster } from './comm/launch';
export { createLocalCommunicator, DEFAULT_COLLECTIVE_TIMEOUT_MS } from './comm/local';
export type {
  CollectiveOptions,
  Communicator,
  HostBuffer,
  PeerInfo,
  RankContext,
  RankFunction,
  ReduceOp,
  TransportKind,
} from './comm/types';
export type {
  ExecutedOp,
  PipelineStages,
  PipelineStepResult,
  StageOutput,
} from './pipeline/executor';
export { PipelineExecutor } from './pipeline/executor';
export type {
  ModelStagesOptions,
  PipelineLayout,
  PipelineModel,
  StageBlockOptions,
} from './pipeline/stages';
export { blockRanges, modelStages, pipelineLayout } from './pipeline/stages';
export type { GradientSeed, TapeStage } from './pipeline/tape';
export { ForwardTape, recordForward } from './pipeline/tape';
export type { MigrationStats, SlotFollowers } from './replicas/bank';
export { ReplicatedExpertBank } from './replicas/bank';
export type { ExpertParallelGroups, InitialPlacement, RebalanceResult } from './replicas/layout';
export {
  applyReplicatedExperts,
  expertParallelGroups,
  rebalanceReplicatedExperts,
} from './replicas/layout';
export type { GradientSet, GradientSyncConfig, VariableSet } from './strategies/data';
export {
  allReduceGradients,
  broadcastVariables,
  defaultGradientSyncConfig,
  globalGradNorm,
  isShardedVariable,
  shardRange,
  sumOverRanks,
} from './strategies/data';
export type { MoELayerHost } from './strategies/expert';
export {
  allToAllRows,
  applyExpertParallel,
  DistributedExpertBank,
  ExpertParallelBank,
  withFullExperts,
} from './strategies/expert';
export type { FlatEntry, FlatLayout, FlatRange } from './strategies/zero';
export {
  allGatherFlat,
  allGatherVariables,
  flatLayout,
  flatRange,
  readFlat,
  reduceScatterGradients,
  writeFlat,
} from './strategies/zero';
