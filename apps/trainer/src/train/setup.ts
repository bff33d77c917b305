/**
 * What a run trains with, built from its configuration: the model configuration, the model, the
 * optimizer, the balance controller, the batcher, the routing-noise generator, the validation set
 * and the unigram baseline; on `--resume`, restored to the checkpoint's state.
 *
 * Shape letters: B sequences per (global) micro-batch, S sequence length, L MoE layers, E routed
 * experts, K experts per token.
 */
import {
  defineModelConfig,
  type ModelConfig,
  type ModelConfigInput,
  MoETransformerLM,
  presets,
} from '@switchyard/model';
import { broadcastVariables, type Communicator, shardRange, sumOverRanks } from '@switchyard/parallel';
import { type RouterConfig, resolveRouterConfig } from '@switchyard/routing';
import { concatInt32, isSwitchyardError, Rng, SwitchyardError, tf } from '@switchyard/tensor';
import { startCompressed } from '../compress/scratch';
import type { TrainConfig } from '../config/schema';
import { Batcher } from '../data/batcher';
import type { PreparedData } from '../data/prepare';
import { buildEvalSet, type EvalModelInfo, type EvalSet } from '../eval/evaluate';
import { UnigramModel } from '../eval/unigram';
import { BalanceController } from './balance';
import { ExpertParallelTraining } from './expert-parallel';
import { OptimizerStep, resolvePlacement } from './optimizer-step';
import { checkPipeline, TrainingPipeline } from './pipeline';
import type { Resumed } from './resume';

/**
 * Builds the model configuration of a run: the model preset, the run's overrides, the tokenizer's
 * vocabulary size and a context of at least `train.seqLen`. Throws CONFIG_INVALID naming `model.*` keys.
 *
 * @example
 * ```ts
 * const mc = buildModelConfig(config, tokenizer.vocabSize);
 * ```
 */
export function buildModelConfig(config: TrainConfig, vocabSize: number): ModelConfig {
  const m = config.model;
  const base = presets[m.preset];
  const defined = <T extends object>(o: T): Partial<T> =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  const input = {
    ...defined({
      dModel: m.dModel,
      numLayers: m.numLayers,
      numHeads: m.numHeads,
      numKvHeads: m.numKvHeads,
      dFF: m.dFF,
      initStd: m.initStd,
    }),
    vocabSize,
    maxSeqLen: Math.max(base.maxSeqLen, config.train.seqLen),
    moe: {
      ...defined({ every: m.moe.every, firstDense: m.moe.firstDense }),
      router: defined(m.moe.router),
      experts: defined(m.moe.experts),
    },
  } as ModelConfigInput;
  try {
    return defineModelConfig(input, base);
  } catch (e) {
    if (isSwitchyardError(e, 'CONFIG_INVALID')) {
      const body = e.message
        .split('\n')
        .slice(1)
        .join('\n')
        .replace(/^ {2}(\S)/gm, '  model.$1');
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `invalid model configuration (model preset ${m.preset}):\n${body}`,
        {
          cause: e,
        },
      );
    }
    throw e;
  }
}

/** Experts per token K and routed experts E of a model configuration. */
export function routingShape(mc: ModelConfig): { k: number; numExperts: number } {
  const r = resolveRouterConfig({
    ...mc.moe.router,
    numExperts: mc.moe.experts.numExperts,
    dModel: mc.dModel,
  } as RouterConfig);
  return { k: r.k, numExperts: r.numExperts };
}

/**
 * Refuses a rank count that is not a multiple of `parallel.pipeline`, and more data-parallel ranks
 * (ranks / parallel.pipeline) than sequences per micro-batch (CONFIG_INVALID).
 */
export function checkRanks(config: TrainConfig, ranks: number): void {
  const P = config.parallel.pipeline;
  const { rank, clusterEvery } = config.compress;
  if ((rank > 0 || clusterEvery > 0) && (P > 1 || config.parallel.expertParallel > 1)) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `${rank > 0 ? 'compress.rank' : 'compress.clusterEvery'}: expected 0 with parallel.pipeline or parallel.expertParallel > 1 (compressed or clustered experts are not staged or sharded yet), got ${rank > 0 ? rank : clusterEvery}`,
    );
  }
  if (
    config.model.moe.router.decideOn === 'device' &&
    (rank > 0 || clusterEvery > 0 || config.parallel.expertParallel > 1)
  ) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `model.moe.router.decideOn: expected host with ${config.parallel.expertParallel > 1 ? 'parallel.expertParallel > 1' : rank > 0 ? 'compress.rank > 0' : 'compress.clusterEvery > 0'} (deciding on the device runs each layer's own experts, not sharded or compressed ones), got device`,
    );
  }
  if (config.balance.globalPool === 'step' && P > 1) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      "balance.globalPool: expected 'cumulative' with parallel.pipeline > 1 (the routing-only prepass of 'step' is not staged yet), got 'step'",
    );
  }
  const variants = Object.keys(config.eval.routingVariants);
  if (variants.length > 0 && (config.parallel.expertParallel > 1 || rank > 0)) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `eval.routingVariants: expected none with ${rank > 0 ? 'compress.rank > 0' : 'parallel.expertParallel > 1'} (the variants are scored on a single-device copy of the model), got ${variants.join(', ')}`,
    );
  }
  if (ranks % P !== 0) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `parallel.pipeline: expected a divisor of the number of ranks (${ranks}), got ${P}`,
    );
  }
  checkPipeline(config, config.model.numLayers ?? presets[config.model.preset].numLayers);
  const replicas = ranks / P;
  if (config.train.microBatchSize < replicas) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `train.microBatchSize: expected >= the number of ${P > 1 ? 'data-parallel replicas' : 'ranks'} (${replicas}), got ${config.train.microBatchSize}`,
    );
  }
}

/** What a run trains with (see {@link setUpTraining}). */
export interface TrainingSetup {
  readonly modelConfig: ModelConfig;
  /** The model, identical on every rank. */
  readonly model: MoETransformerLM;
  /** MoE layers L, routed experts E and experts per token K, as evaluation needs them. */
  readonly shape: EvalModelInfo;
  readonly optimizer: OptimizerStep;
  readonly balance: BalanceController;
  /** The global micro-batches, the same on every rank. */
  readonly batcher: Batcher;
  /** Routing noise: one child generator per micro-batch. */
  readonly noiseRng: Rng;
  readonly evalSet: EvalSet;
  /** Validation loss of the unigram model over the same tokens, same tokenizer. */
  /** The unigram model's loss on the validation tokens; undefined without a validation set. */
  readonly unigramValLoss: number | undefined;
  /** The pipeline this rank is part of (`parallel.pipeline` > 1). */
  readonly pipeline?: TrainingPipeline;
  /** Expert parallelism (`parallel.expertParallel` > 1): the banks, their placement and rebalancing. */
  readonly experts?: ExpertParallelTraining;
}

/**
 * Builds everything a run trains with, and, when resuming, restores the optimizer moments, the data
 * position, the routing-noise generator and the balance state from the checkpoint (whose extra
 * tensors it releases). Under data parallelism rank 0's weights are broadcast to every rank.
 */
export function setUpTraining(
  config: TrainConfig,
  comm: Communicator,
  data: PreparedData,
  resumed: Resumed | undefined,
): TrainingSetup {
  const { seqLen: S, microBatchSize: B } = config.train;
  const modelConfig = resumed ? resumed.loaded.config : buildModelConfig(config, data.tokenizer.vocabSize);
  if (modelConfig.maxSeqLen < S) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `train.seqLen: expected <= the model's maxSeqLen (${modelConfig.maxSeqLen}), got ${S}`,
    );
  }
  const promptTokens = data.tokenizer.encode(config.log.samplePrompt).length;
  if (config.log.sampleTokens > 0 && promptTokens >= modelConfig.maxSeqLen) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `log.samplePrompt: expected fewer tokens than the model's maxSeqLen (${modelConfig.maxSeqLen}), got ${promptTokens}`,
    );
  }
  const batcher = new Batcher(data.trainStreams, {
    seqLen: S,
    batchSize: B,
    mode: config.data.batching,
    seed: config.seed,
  });
  const evalSet = buildEvalSet(data.valStreams, S, config.eval.tokensPerDomain, config.eval.batchSize);
  const unigram = UnigramModel.fit(
    data.trainStreams.map((s) => s.tokens),
    data.tokenizer.vocabSize,
  );
  const unigramValLoss = evalSet.tokens > 0 ? unigram.crossEntropy(evalSet.targets) : undefined;

  const model = resumed
    ? resumed.loaded.model
    : startCompressed(new MoETransformerLM(modelConfig, new Rng(config.seed).fork('init')), config);
  const L = model.moeLayerIndices.length;
  const { k: K, numExperts: E } = routingShape(modelConfig);
  // Expert slots replace the full experts before the optimizer sees the variables.
  const experts = ExpertParallelTraining.install(config, comm, model, resumed?.state.experts);
  const named = model.namedVariables();
  const pipeline =
    config.parallel.pipeline > 1
      ? new TrainingPipeline(config, comm, model, replicaRows(config, comm.worldSize, comm.rank))
      : undefined;
  const optimizer = pipeline
    ? pipelineOptimizer(config, pipeline)
    : optimizerStep(config, comm, named, experts);
  const balance = balanceController(config, L, E, pipeline?.dataComm ?? comm, pipeline?.poolComm);
  // Identical replicas: the same seed builds the same weights, the broadcast makes it certain.
  if (comm.worldSize > 1) broadcastVariables(comm, named);
  let noiseRng = new Rng(config.seed).fork('routing-noise');
  if (resumed) {
    const { state, loaded } = resumed;
    const saved = loaded.extraTensors ?? {};
    // Checkpoints hold every expert's moments; the slots take their experts'.
    const moments = experts ? experts.slotMoments(saved) : saved;
    try {
      optimizer.loadState(state.optimizerSteps, moments);
    } finally {
      if (experts) experts.releaseConverted(moments, saved);
      tf.dispose(Object.values(saved));
    }
    batcher.setState(state.batcher);
    noiseRng = Rng.fromState(state.noiseRng);
    balance.loadState(state.balance);
  }
  const shape = { numMoELayers: L, numExperts: E, k: K };
  return {
    modelConfig,
    model,
    shape,
    optimizer,
    balance,
    batcher,
    noiseRng,
    evalSet,
    unigramValLoss,
    ...(pipeline ? { pipeline } : {}),
    ...(experts ? { experts } : {}),
  };
}

/** B_r: the sequences of every micro-batch on this rank's data-parallel replica. */
export function replicaRows(config: TrainConfig, ranks: number, rank: number): number {
  const P = config.parallel.pipeline;
  const { start, end } = shardRange(config.train.microBatchSize, Math.floor(rank / P), ranks / P);
  return end - start;
}

/** AdamW for this rank's pipeline stages. */
function pipelineOptimizer(config: TrainConfig, pipeline: TrainingPipeline): OptimizerStep {
  const t = config.train;
  return pipeline.optimizer(
    { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay },
    resolvePlacement(t.optimizerOn),
    t.clipNorm,
  );
}

/** AdamW as the run configures it, with its clipping and placement. */
export function optimizerStep(
  config: TrainConfig,
  comm: Communicator,
  named: ReadonlyMap<string, tf.Variable>,
  experts: ExpertParallelTraining | undefined,
): OptimizerStep {
  const t = config.train;
  return new OptimizerStep(
    comm,
    named,
    { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay },
    resolvePlacement(t.optimizerOn),
    t.clipNorm,
    {},
    experts,
  );
}

/**
 * The run's balancing method; across ranks its counts are summed and its indices gathered. Under a
 * pipeline, `comm` holds the replicas of this rank's stages and `stepComm` every rank running them.
 */
export function balanceController(
  config: TrainConfig,
  L: number,
  E: number,
  comm: Communicator,
  stepComm?: Communicator,
): BalanceController {
  return new BalanceController({
    method: config.balance.method,
    alpha: config.balance.alpha,
    localRatio: config.balance.localRatio,
    biasUpdateRate: config.balance.biasUpdateRate,
    zLoss: config.balance.zLoss,
    globalPool: config.balance.globalPool,
    numLayers: L,
    numExperts: E,
    seqLen: config.train.seqLen,
    seed: config.seed,
    ...(comm.worldSize > 1
      ? {
          allReduce: sumOverRanks(comm),
          allGather: (values: Int32Array): Int32Array => concatInt32(comm.allGather(values)),
        }
      : {}),
    ...(stepComm !== undefined && stepComm.worldSize > 1 ? { stepAllReduce: sumOverRanks(stepComm) } : {}),
  });
}
