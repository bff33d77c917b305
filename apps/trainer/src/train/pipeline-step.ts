/**
 * One optimizer step of a pipeline-parallel run (`parallel.pipeline` > 1), top to bottom:
 *
 * 1. the `debug.nanAtStep` switch, the learning rate of the step;
 * 2. the step's M global micro-batches (this replica's rows of each) and their routing noise, drawn
 *    as one rank draws them, fed to the stages;
 * 3. the schedule's ops on this rank (`PipelineExecutor`): forwards with the balance terms of the
 *    stage's MoE layers, backwards, activations and gradients to and from the neighbouring stages;
 * 4. the logged losses and expert counts summed over every rank (one all-reduce), refusing a
 *    non-finite loss;
 * 5. gradient averaging over the replicas, clipping by the whole model's norm, and AdamW on this
 *    rank's stage variables (`PipelineOptimizer`);
 * 6. the balance controller's end of step.
 *
 * Shape letters: B sequences per global micro-batch, B_r this replica's share, S sequence length,
 * M micro-batches per step, L MoE layers, E routed experts.
 */
import { type Communicator, shardRange } from '@switchyard/parallel';
import { type Scalar, SwitchyardError, tf } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import { blockOf, nonFiniteError, poisonWeight } from './non-finite';
import type { TrainingPipeline } from './pipeline';
import { type LrSchedule, learningRate } from './schedule';
import type { TrainingSetup } from './setup';
import { expertLoads, type MicroBatchSums, round1, type StepOutcome } from './step';

/**
 * The training step of one rank of a pipeline (with or without data-parallel replicas).
 *
 * When to use: in place of `TrainStep` when the setup built a pipeline; every rank runs every step.
 *
 * @example
 * ```ts
 * const trainStep = new PipelineTrainStep(config, setup, comm);
 * const outcome = trainStep.run(step, lastCheckpoint);
 * trainStep.syncModel(); // before evaluating or saving: every rank gets the current model
 * ```
 */
export class PipelineTrainStep {
  private readonly pipeline: TrainingPipeline;
  private readonly schedule: LrSchedule;
  private readonly L: number;
  private readonly E: number;
  /** This replica's sequences [start, end) of every global micro-batch. */
  private readonly shard: { readonly start: number; readonly end: number };
  /** False once a step changed the stages' variables, until {@link PipelineTrainStep.syncModel}. */
  private synced = true;

  constructor(
    private readonly config: TrainConfig,
    private readonly setup: TrainingSetup,
    private readonly comm: Communicator,
  ) {
    if (setup.pipeline === undefined) {
      throw new SwitchyardError('STATE_INVALID', 'PipelineTrainStep needs a setup with a pipeline');
    }
    this.pipeline = setup.pipeline;
    const { layout } = this.pipeline;
    this.shard = shardRange(config.train.microBatchSize, layout.replica, layout.replicas);
    this.schedule = {
      lr: config.train.lr,
      minLrRatio: config.train.minLrRatio,
      warmupSteps: config.train.warmupSteps,
      totalSteps: config.train.steps,
    };
    this.L = setup.shape.numMoELayers;
    this.E = setup.shape.numExperts;
    const { balance } = setup;
    this.pipeline.feed.selectionBias =
      config.balance.method === 'loss-free' && this.L > 0 ? (l) => balance.selectionBias(l) : undefined;
  }

  /** Trains optimizer step `step` (0-based); throws NON_FINITE (weights unchanged) on a NaN or Infinity. */
  run(step: number, lastCheckpoint: string | undefined): StepOutcome {
    const { gradAccum: M, microBatchSize: B, seqLen: S } = this.config.train;
    const { debug } = this.config;
    const { model, batcher, noiseRng, balance, optimizer } = this.setup;
    if (debug.nanAtStep === step + 1) poisonWeight(model, debug.nanLayer);
    const tStep = performance.now();
    const lr = learningRate(this.schedule, step);
    const { start, end } = this.shard;
    const { feed, executor, layout } = this.pipeline;
    const weight = (layout.replicas * (end - start)) / B / M;
    const { L, E } = this;
    const sums: MicroBatchSums = {
      loss: 0,
      aux: 0,
      countsMLE: new Float64Array(M * L * E),
      keptMLE: new Float64Array(M * L * E),
      seqVio: 0,
    };
    feed.tokens = [];
    feed.noise = [];
    for (let m = 0; m < M; m++) {
      const mb = batcher.next();
      feed.tokens.push({
        inputs: mb.inputsBS.subarray(start * S, end * S),
        targets: mb.targetsBS.subarray(start * S, end * S),
      });
      feed.noise.push(noiseRng.split().getState());
    }
    feed.step = step;
    feed.onLoss = (_m, loss) => {
      sums.loss += loss.dataSync()[0]!;
    };
    feed.aux = (m, plans, first) => {
      balance.observe(plans, m, first);
      plans.forEach((p, i) => {
        const off = (m * L + first + i) * E;
        for (let e = 0; e < E; e++) {
          sums.countsMLE[off + e] = p.countsE[e]!;
          sums.keptMLE[off + e] = p.keptCountsE[e]!;
        }
      });
      const aux = balance.loss(plans, m, first);
      if (aux === null) return undefined;
      sums.aux += aux.dataSync()[0]!;
      return tf.mul(aux, weight) as Scalar;
    };

    this.synced = false;
    const { grads, sharedSyncMs } = executor.run();
    const tComputed = performance.now();
    const named = new Map<string, tf.Tensor>();
    for (const [v, g] of grads) named.set(this.pipeline.nameOf.get(v)!, g);
    try {
      this.reduceOverRanks(sums);
    } catch (e) {
      tf.dispose([...named.values()]);
      throw e;
    }
    const tReduced = performance.now();
    if (!Number.isFinite(sums.loss) || !Number.isFinite(sums.aux)) {
      tf.dispose([...named.values()]);
      const what = !Number.isFinite(sums.loss)
        ? `loss is ${sums.loss / M}`
        : `balance loss is ${sums.aux / M}`;
      throw nonFiniteError(
        what,
        step + 1,
        { layer: 'a pipeline stage', detail: 'found after the step (the stages do not check on their own)' },
        lastCheckpoint,
      );
    }
    const loads = expertLoads(sums, M, L, E);
    const applied = optimizer.apply(named, lr);
    if (applied.nonFinite.length > 0 || !Number.isFinite(applied.norm)) {
      const name = applied.nonFinite[0];
      throw nonFiniteError(
        'gradient is non-finite',
        step + 1,
        name !== undefined
          ? { layer: blockOf(name), detail: `gradient of ${name}` }
          : { layer: 'another pipeline stage', detail: 'the global gradient norm is not finite' },
        lastCheckpoint,
      );
    }
    const tBalance = performance.now();
    balance.afterStep();
    const tEnd = performance.now();
    return {
      loss: sums.loss / M,
      auxLoss: sums.aux / M,
      lr,
      gradNorm: applied.norm,
      tokensPerSec: (B * S * M) / ((performance.now() - tStep) / 1000),
      ...loads,
      phaseMs: {
        compute: round1(tComputed - tStep - sharedSyncMs),
        sync: round1(sharedSyncMs + (tReduced - tComputed) + applied.syncMs),
        clip: round1(applied.clipMs),
        optimizer: round1(applied.optimizerMs + tEnd - tBalance),
      },
    };
  }

  /**
   * Gives every rank the current model (each stage's variables and loss-free biases from its
   * holder); a collective of the pipeline, a no-op when no step ran since the last one.
   */
  syncModel(): void {
    if (this.synced) return;
    this.pipeline.syncModel(this.setup.balance);
    this.synced = true;
  }

  /** Nothing to release: the executor releases a failed step's tensors itself. */
  dispose(): void {}

  /**
   * One all-reduce over every rank for the logged metrics: each rank's losses weighted by its
   * replica's share (only the last stage has an LM loss; each stage has its layers' balance terms),
   * and the counts of the layers it ran.
   */
  private reduceOverRanks(sums: MicroBatchSums): void {
    const share = (this.shard.end - this.shard.start) / this.config.train.microBatchSize;
    const n = sums.countsMLE.length;
    const buf = new Float32Array(2 + 2 * n);
    buf[0] = sums.loss * share;
    buf[1] = sums.aux * share;
    buf.set(sums.countsMLE, 2);
    buf.set(sums.keptMLE, 2 + n);
    if (this.comm.worldSize > 1) this.comm.allReduce(buf, 'sum', { inPlace: true });
    sums.loss = buf[0]!;
    sums.aux = buf[1]!;
    sums.countsMLE.set(buf.subarray(2, 2 + n));
    sums.keptMLE.set(buf.subarray(2 + n));
  }
}
