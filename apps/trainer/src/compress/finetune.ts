/**
 * Fine-tuning a compressed model for a few steps with the trainer's own step (micro-batches,
 * balance terms, AdamW with clipping): the bases and factors are the model's variables, so the same
 * `TrainStep` trains them.
 */
import type { MoETransformerLM } from '@switchyard/model';
import { createLocalCommunicator } from '@switchyard/parallel';
import { Rng } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import { Batcher } from '../data/batcher';
import type { PreparedData } from '../data/prepare';
import type { EvalModelInfo } from '../eval/evaluate';
import type { Reporter } from '../reporter';
import { balanceController, optimizerStep } from '../train/setup';
import { TrainStep } from '../train/step';

/** What {@link fineTune} did. */
export interface FineTuneResult {
  readonly steps: number;
  /** Peak learning rate (cosine decay after a linear warm-up). */
  readonly lr: number;
  /** Training loss of each step. */
  readonly losses: readonly number[];
}

/**
 * Trains `model` for `steps` optimizer steps on the run's training data, with the run's batch shape,
 * balance method and AdamW settings at peak learning rate `lr`, warm-up of a tenth of the steps. A
 * loss-free run keeps the selection biases stored in the model and adds no balance term.
 *
 * @example
 * ```ts
 * const r = fineTune(model, config, data, shape, 100, 3e-4, reporter);
 * ```
 */
export function fineTune(
  model: MoETransformerLM,
  base: TrainConfig,
  data: PreparedData,
  shape: EvalModelInfo,
  steps: number,
  lr: number,
  reporter: Reporter,
): FineTuneResult {
  const config: TrainConfig = {
    ...base,
    train: { ...base.train, steps, lr, warmupSteps: Math.floor(steps / 10) },
    compress: { ...base.compress, clusterEvery: 0 },
    // A loss-free run's selection biases stay as stored in the model (a new controller would start at zero).
    balance: base.balance.method === 'loss-free' ? { ...base.balance, method: 'none' } : base.balance,
    debug: { nanAtStep: 0, nanLayer: 0 },
  };
  const comm = createLocalCommunicator();
  const { seqLen: S, microBatchSize: B } = config.train;
  const optimizer = optimizerStep(config, comm, model.namedVariables(), undefined);
  const balance = balanceController(config, shape.numMoELayers, shape.numExperts, comm);
  const batcher = new Batcher(data.trainStreams, {
    seqLen: S,
    batchSize: B,
    mode: config.data.batching,
    seed: config.seed + 1, // not the batches the model was trained on first
  });
  const noiseRng = new Rng(config.seed).fork('finetune-noise');
  const trainStep = new TrainStep(config, { model, shape, optimizer, balance, batcher, noiseRng }, comm);
  const losses: number[] = [];
  const t0 = performance.now();
  try {
    for (let step = 0; step < steps; step++) {
      const o = trainStep.run(step, undefined);
      losses.push(o.loss);
      reporter.progress({
        step: step + 1,
        totalSteps: steps,
        loss: o.loss,
        lr: o.lr,
        tokensPerSec: o.tokensPerSec,
        maxVioBatch: o.maxVioBatch,
        elapsedSec: (performance.now() - t0) / 1000,
        stepsThisRun: step + 1,
      });
    }
  } finally {
    trainStep.dispose();
    optimizer.dispose();
  }
  return { steps, lr, losses };
}
