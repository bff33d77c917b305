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
import { broadcastVariables, type Communicator, sumOverRanks } from '@switchyard/parallel';
import { type RouterConfig, resolveRouterConfig } from '@switchyard/routing';
import { concatInt32, isSwitchyardError, Rng, SwitchyardError, tf } from '@switchyard/tensor';
import { startCompressed } from '../compress/scratch';
import type { TrainConfig } from '../config/schema';
import { Batcher } from '../data/batcher';
import type { PreparedData } from '../data/prepare';
import { buildEvalSet, type EvalModelInfo, type EvalSet } from '../eval/evaluate';
import { UnigramModel } from '../eval/unigram';
import { BalanceController } from './balance';
import { OptimizerStep, resolvePlacement } from './optimizer-step';
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

/** Refuses more data-parallel ranks than sequences per micro-batch (CONFIG_INVALID). */
export function checkRanks(config: TrainConfig, ranks: number): void {
  if (config.train.microBatchSize < ranks) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `train.microBatchSize: expected >= the number of ranks (${ranks}), got ${config.train.microBatchSize}`,
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
  readonly unigramValLoss: number;
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
  const unigramValLoss = unigram.crossEntropy(evalSet.targets);

  const model = resumed
    ? resumed.loaded.model
    : startCompressed(new MoETransformerLM(modelConfig, new Rng(config.seed).fork('init')), config);
  const L = model.moeLayerIndices.length;
  const { k: K, numExperts: E } = routingShape(modelConfig);
  const named = model.namedVariables();
  const optimizer = optimizerStep(config, comm, named);
  const balance = balanceController(config, L, E, comm);
  // Identical replicas: the same seed builds the same weights, the broadcast makes it certain.
  if (comm.worldSize > 1) broadcastVariables(comm, named);
  let noiseRng = new Rng(config.seed).fork('routing-noise');
  if (resumed) {
    const { state, loaded } = resumed;
    try {
      optimizer.loadState(state.optimizerSteps, loaded.extraTensors ?? {});
    } finally {
      tf.dispose(Object.values(loaded.extraTensors ?? {}));
    }
    batcher.setState(state.batcher);
    noiseRng = Rng.fromState(state.noiseRng);
    balance.loadState(state.balance);
  }
  const shape = { numMoELayers: L, numExperts: E, k: K };
  return { modelConfig, model, shape, optimizer, balance, batcher, noiseRng, evalSet, unigramValLoss };
}

/** AdamW as the run configures it, with its clipping and placement. */
export function optimizerStep(
  config: TrainConfig,
  comm: Communicator,
  named: ReadonlyMap<string, tf.Variable>,
): OptimizerStep {
  const t = config.train;
  return new OptimizerStep(
    comm,
    named,
    { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay },
    resolvePlacement(t.optimizerOn),
    t.clipNorm,
  );
}

/** The run's balancing method; across ranks its counts are summed and its indices gathered. */
export function balanceController(
  config: TrainConfig,
  L: number,
  E: number,
  comm: Communicator,
): BalanceController {
  return new BalanceController({
    method: config.balance.method,
    alpha: config.balance.alpha,
    localRatio: config.balance.localRatio,
    biasUpdateRate: config.balance.biasUpdateRate,
    zLoss: config.balance.zLoss,
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
  });
}
