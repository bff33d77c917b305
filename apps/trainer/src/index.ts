/**
 * switchyard-train: train Mixture-of-Experts language models on real text (the Brown corpus or your
 * own files), with checkpoints, exact resumption, metrics, plots and experiments. The command line
 * (`switchyard-train`) wraps these functions.
 *
 * @packageDocumentation
 */

export type { OptionDoc } from './config/help';
export { configOptions, helpText } from './config/help';
export type { ConfigObject, ConfigSources } from './config/load';
export { applySet, mergeConfig, parseConfig, presets, readConfigFile, resolveConfig } from './config/load';
export type { BalanceMethod, TrainConfig, TrainConfigInput } from './config/schema';
export { BALANCE_METHODS, MODEL_PRESETS, trainConfigSchema } from './config/schema';
export type { BatcherOptions, BatcherState, BatchingMode, DomainStream, MicroBatch } from './data/batcher';
export { Batcher, windowStarts } from './data/batcher';
export type { BrownOptions } from './data/brown';
export { BROWN_GENRES, brownToText, detokenize, loadBrownCorpus } from './data/brown';
export type { PreparedData } from './data/prepare';
export { loadSamples, prepareData } from './data/prepare';
export type { DataFormat, TextFileOptions } from './data/sources';
export { loadTextFiles, parseJsonl, splitByText } from './data/sources';
export type { CorpusSplit, TextSample } from './data/types';
export type { EvalBatch, EvalSet } from './eval/evaluate';
export { buildEvalSet, evaluateModel } from './eval/evaluate';
export type { Sample, SampleEnd, SampleOptions } from './eval/generate';
export {
  DEFAULT_SAMPLE_OPTIONS,
  generateCommand,
  generateFromCheckpoint,
  sampleText,
} from './eval/generate';
export type { CheckpointEval, ScoreResult, ScoringWindow } from './eval/score';
export { evaluateCheckpoint, scoreTokens, scoringWindows } from './eval/score';
export { UnigramModel } from './eval/unigram';
export type { ArmLookup, ArmResult, Claim, ClaimCheck, ClaimVerdict } from './experiments/claims';
export type { ExperimentArm, ExperimentDefinition } from './experiments/definitions';
export { EXPERIMENTS } from './experiments/definitions';
export type { ExperimentOptions, ExperimentResult } from './experiments/run';
export { ExperimentInterrupted, experimentHelp, runExperiment } from './experiments/run';
export type { CliIO } from './main';
export { main } from './main';
export type { EvalRecord, StepPhases, StepRecord } from './report/records';
export { chartToSvg, renderChart } from './report/render';
export { writeRunReport } from './report/report';
export type { ProgressInfo, ProgressMode, Reporter, ReporterOptions } from './reporter';
export { collectingReporter, createReporter } from './reporter';
export { StopRequest, stopOnCtrlC } from './run/interrupt';
export type { AdamWConfig } from './train/adamw';
export { AdamW, clipByGlobalNorm, GradAccumulator, gradientClip } from './train/adamw';
export type { BalanceSettings } from './train/balance';
export { BalanceController } from './train/balance';
export type { LrSchedule } from './train/schedule';
export { learningRate } from './train/schedule';
export { buildModelConfig } from './train/setup';
export type { InterruptedRun, TrainOptions, TrainResult } from './train/trainer';
export { RunInterrupted, train } from './train/trainer';
