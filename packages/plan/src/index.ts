/**
 * @switchyard/plan: plans without tensors. Pipeline schedules (GPipe, 1F1B, interleaved 1F1B,
 * ZB-H1, DualPipe, DualPipeV, 1F1B with EP overlap) as plain data, and the validator that replays
 * them. No TensorFlow.js and no Node-only imports: it bundles for the browser.
 *
 * @packageDocumentation
 */

export type { A2aShape, A2aVolume } from './cluster/comm';
export { a2aTime, expertA2aVolume, flatA2aBytes, ringBytes } from './cluster/comm';
export { formatSimulationText } from './cluster/format';
export type { ClusterSpec, HardwarePreset, HostCosts, LinkTier } from './cluster/hardware';
export { HARDWARE_PRESETS, linkTime, parseCluster } from './cluster/hardware';
export type { AllReduceSample, ElementwiseBytes, GemmSample, MachineProfile } from './cluster/machine';
export { linkFromAllReduce, machinePreset } from './cluster/machine';
export type { AttentionSpec, LayerFlops, LayerParams, ModelSpec, ParamCounts } from './cluster/model';
export {
  attentionParams,
  DEEPSEEK_V3,
  headFlops,
  layerFlops,
  layerParams,
  MIXTRAL_8X7B,
  MODEL_PRESETS,
  modelPreset,
  paramCounts,
  parseModelConfig,
  trainingFlopsPerToken,
} from './cluster/model';
export type { ReplayedOp } from './cluster/pipeline';
export { replayPipeline } from './cluster/pipeline';
export type {
  LayerCost,
  Precision,
  RankMemory,
  SimulateOptions,
  SimulationReport,
  StageCost,
} from './cluster/simulate';
export { simulateCluster } from './cluster/simulate';
export type { StreamKind, StreamRun, StreamTask } from './cluster/streams';
export { runStreams } from './cluster/streams';
export type { PlanErrorCode } from './errors';
export { isPlanError, PLAN_ERROR_CODES, PlanError } from './errors';
export type { ExpertPlacement, PlacementBalance, RebalanceOptions } from './placement/eplb';
export { balancedness, rebalanceExperts } from './placement/eplb';
export type {
  CrossDcStrategy,
  DatacenterPlacement,
  HybridEpLayer,
  HybridEpOptions,
  HybridEpPlan,
  MigrationBytes,
  MigrationEncoding,
} from './placement/hybridep';
export { hybridEpDatacenterPlacement, migrationBytes, planHybridEp } from './placement/hybridep';
export type { OnlineRebalanceOptions, RebalanceDecision, SlotMove } from './placement/online';
export { decideRebalance, OnlineRebalancer } from './placement/online';
export type { RefinedPlacement, RefineOptions } from './placement/refine';
export { refinePlacement } from './placement/refine';
export type { RunLoadOptions, RunLoads } from './placement/runload';
export { parseRunLoads } from './placement/runload';
export type {
  LocalizedPlacement,
  LocalizeOptions,
  PlacementTraffic,
  ReplicaChoice,
  RoutingTrace,
  TraceOptions,
  TrafficOptions,
} from './placement/traffic';
export { localizePlacement, placementTraffic, sampleRoutingTrace, traceCounts } from './placement/traffic';
export type { DualPipeOptions, DualPipeSteps } from './schedule/dualpipe';
export { dualPipe, dualPipeSteps, dualPipeV } from './schedule/dualpipe';
export type { SvgOptions, TimelineSource } from './schedule/format';
export { formatScheduleSvg, formatScheduleText, opToken, scheduleToJson } from './schedule/format';
export { generateSchedule } from './schedule/generate';
export type { InterleavedOptions } from './schedule/interleaved';
export { DEFAULT_INTERLEAVED_CHUNKS, interleavedOneFOneB } from './schedule/interleaved';
export type { PipelineOptions } from './schedule/onef1b';
export { gpipe, oneFOneB, oneFOneBOverlap, zbH1 } from './schedule/onef1b';
export { scheduleReceives, scheduleTransfers } from './schedule/transfers';
export type {
  OpCosts,
  OverlapOp,
  Schedule,
  ScheduleKind,
  ScheduleOp,
  ScheduleRequest,
  StageWork,
  Transfer,
  WorkKind,
} from './schedule/types';
export { SCHEDULE_KINDS } from './schedule/types';
export type { RankReport, ScheduleReport, TimedOp, ValidateOptions } from './schedule/validate';
export { defaultOpCosts, opLabel, partsOf, validateSchedule } from './schedule/validate';
