/**
 * One optimizer step, top to bottom:
 *
 * 1. the `debug.nanAtStep` switch, the learning rate of the step;
 * 2. per micro-batch: this rank's rows of the next global micro-batch, the forward pass with its
 *    routing noise, the balance terms of the BalanceController, the backward pass, the guard against
 *    non-finite losses, and the gradient added to the step's sum;
 * 3. the logged losses and expert counts reduced over data-parallel ranks (one all-reduce);
 * 4. the step's expert-load metrics;
 * 5. gradient sync, clipping and the AdamW update (OptimizerStep), refusing non-finite gradients;
 * 6. the balance controller's end of step (loss-free bias update, pools emptied);
 * 7. under expert parallelism, the step's balance over ranks and, every `parallel.rebalanceEvery`
 *    steps, the move of experts and their moments to a new EPLB placement.
 *
 * Under data parallelism (R ranks) every rank draws the same global micro-batches and trains on its
 * contiguous share of their sequences, with loss weight R * B_r / B: the mean over ranks of the
 * weighted per-rank means is the global mean.
 *
 * Shape letters: B sequences per global micro-batch, B_r this rank's share, S sequence length,
 * M micro-batches per step (`train.gradAccum`), L MoE layers, E routed experts.
 */
import { maxVio, perSequenceMaxVio } from '@switchyard/balance';
import type { MoETransformerLM } from '@switchyard/model';
import { type Communicator, shardRange } from '@switchyard/parallel';
import type { RoutingPlan } from '@switchyard/routing';
import { isSwitchyardError, Rng, tf } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import type { StepPhases, StepRecord } from '../report/records';
import { GradAccumulator } from './adamw';
import { blockOf, locateNonFinite, nonFiniteError, poisonWeight } from './non-finite';
import { type LrSchedule, learningRate } from './schedule';
import type { TrainingSetup } from './setup';

/** What one {@link TrainStep.run} measured: the step's record, less the run's counters (step, tokens, time). */
export type StepOutcome = Omit<StepRecord, 'step' | 'tokens' | 'time' | 'phaseMs'> & {
  readonly phaseMs: StepPhases;
};

/** What the step trains with: the run's model, optimizer, balance controller, data and routing noise. */
export type StepParts = Pick<
  TrainingSetup,
  'model' | 'shape' | 'optimizer' | 'balance' | 'batcher' | 'noiseRng' | 'experts'
>;

/** The logged sums of one step's micro-batches, before and after the reduction over ranks. */
export interface MicroBatchSums {
  /** Sum over micro-batches of the LM loss (after the reduction: of the global means). */
  loss: number;
  /** Same for the balance and z-loss terms. */
  aux: number;
  /** Each micro-batch's routed counts per layer and expert, [M][L][E] flattened. */
  readonly countsMLE: Float64Array;
  /** Each micro-batch's kept (not dropped) counts, [M][L][E] flattened. */
  readonly keptMLE: Float64Array;
  /** Sum over micro-batches of the per-sequence MaxVio averaged over layers (this rank's sequences). */
  seqVio: number;
}

/**
 * The training step: micro-batches, losses, gradient accumulation, the reduction over ranks and the
 * optimizer update, for one rank of a data-parallel job (one rank: no collectives).
 *
 * When to use: once per optimizer step, from the run that owns the model, the optimizer, the data
 * and the checkpoints (`train()`).
 *
 * @example
 * ```ts
 * const trainStep = new TrainStep(config, setup, comm);
 * const outcome = trainStep.run(step, lastCheckpoint); // step 0-based
 * console.log(outcome.loss, outcome.gradNorm);
 * ```
 */
export class TrainStep {
  private readonly model: MoETransformerLM;
  private readonly trainable: tf.Variable[];
  /** Model variable name of each tfjs variable name (gradients come keyed by the latter). */
  private readonly modelName = new Map<string, string>();
  private readonly acc = new GradAccumulator();
  private readonly schedule: LrSchedule;
  /** This rank's sequences [start, end) of every global micro-batch. */
  private readonly shard: { readonly start: number; readonly end: number };
  /** R * B_r / B: this rank's weight in the global mean. */
  private readonly shardWeight: number;
  private readonly L: number;
  private readonly E: number;
  /** Tokens of one optimizer step over all ranks: M * B * S. */
  private readonly tokensPerStep: number;
  private readonly selectionBias: ((l: number) => Float32Array | undefined) | undefined;

  constructor(
    private readonly config: TrainConfig,
    private readonly setup: StepParts,
    private readonly comm: Communicator,
    /** Sees every micro-batch's routing plans (one per MoE layer), e.g. for online expert clustering. */
    private readonly onPlans?: (plans: readonly RoutingPlan[]) => void,
  ) {
    const { seqLen: S, microBatchSize: B, gradAccum: M, steps } = config.train;
    const R = comm.worldSize;
    this.model = setup.model;
    const named = setup.model.namedVariables();
    this.trainable = [...named.values()];
    for (const [name, v] of named) this.modelName.set(v.name, name);
    this.schedule = {
      lr: config.train.lr,
      minLrRatio: config.train.minLrRatio,
      warmupSteps: config.train.warmupSteps,
      totalSteps: steps,
    };
    this.shard = shardRange(B, comm.rank, R);
    this.shardWeight = (R * (this.shard.end - this.shard.start)) / B;
    this.L = setup.shape.numMoELayers;
    this.E = setup.shape.numExperts;
    this.tokensPerStep = B * S * M;
    const { balance } = setup;
    this.selectionBias =
      config.balance.method === 'loss-free' && this.L > 0 ? (l) => balance.selectionBias(l) : undefined;
  }

  /**
   * Trains optimizer step `step` (0-based). Throws NON_FINITE when a loss, an activation or a
   * gradient is NaN or Infinity, naming `lastCheckpoint` as intact; the weights are then unchanged
   * by this step.
   */
  run(step: number, lastCheckpoint: string | undefined): StepOutcome {
    const { gradAccum: M } = this.config.train;
    const { debug } = this.config;
    if (debug.nanAtStep === step + 1) poisonWeight(this.model, debug.nanLayer);
    const tStep = performance.now();
    const lr = learningRate(this.schedule, step);

    const sums: MicroBatchSums = {
      loss: 0,
      aux: 0,
      countsMLE: new Float64Array(M * this.L * this.E),
      keptMLE: new Float64Array(M * this.L * this.E),
      seqVio: 0,
    };
    // Each micro-batch's data and routing noise, drawn in the same order as without a prepass.
    const inputs = Array.from({ length: M }, () => ({
      mb: this.setup.batcher.next(),
      rng: this.setup.noiseRng.split(),
    }));
    if (this.setup.balance.pooledPerStep) this.routingPrepass(step, inputs);
    for (let m = 0; m < M; m++) this.microBatch(step, m, inputs[m]!, sums, lastCheckpoint);
    const tComputed = performance.now();

    let syncMs = 0;
    if (this.comm.worldSize > 1) {
      this.reduceOverRanks(sums);
      syncMs = performance.now() - tComputed;
    }
    const loads = expertLoads(sums, M, this.L, this.E);

    const applied = this.setup.optimizer.apply(this.acc.take(), lr);
    if (applied.nonFinite.length > 0) {
      const name = applied.nonFinite[0]!;
      throw nonFiniteError(
        'gradient is non-finite',
        step + 1,
        { layer: blockOf(name), detail: `gradient of ${name}` },
        lastCheckpoint,
      );
    }
    const tBalance = performance.now();
    this.setup.balance.afterStep();
    const tEnd = performance.now();
    // Expert parallelism: the step's balance over ranks, and every K steps the move to a new placement.
    const ep = this.setup.experts?.afterStep(step, sums.countsMLE, M, (name) =>
      this.setup.optimizer.moments(name),
    );

    return {
      loss: sums.loss / M,
      auxLoss: sums.aux / M,
      lr,
      gradNorm: applied.norm,
      tokensPerSec: this.tokensPerStep / ((performance.now() - tStep) / 1000),
      ...loads,
      ...(this.L > 0 ? { maxVioSeq: sums.seqVio / M } : {}),
      ...(ep ? { expertBalance: ep.balancedness } : {}),
      ...(ep?.rebalance ? { rebalance: ep.rebalance } : {}),
      phaseMs: {
        compute: round1(tComputed - tStep),
        sync: round1(syncMs + applied.syncMs),
        clip: round1(applied.clipMs),
        optimizer: round1(applied.optimizerMs + tEnd - tBalance),
        ...(ep?.rebalance?.migrated ? { migrate: round1(ep.rebalance.migrationMs) } : {}),
      },
    };
  }

  /** Releases the gradients of a step that did not finish. */
  dispose(): void {
    this.acc.reset();
  }

  /**
   * Micro-batch `m` of step `step`: forward and backward on this rank's rows, the non-finite guard,
   * the gradient added to the step's sum and the logged losses and counts added to `sums`.
   */
  private microBatch(
    step: number,
    m: number,
    input: MicroBatchInput,
    sums: MicroBatchSums,
    lastCheckpoint: string | undefined,
  ): void {
    const { gradAccum: M } = this.config.train;
    const { mb, rng } = input;
    // Filled inside the gradient tape: the LM and balance losses (kept) and each layer's counts.
    const traced: TracedLosses = { counts: [], seqVio: 0 };
    const xBS = this.rowsOf(mb.inputsBS);
    const yBS = this.rowsOf(mb.targetsBS);
    let computed: ReturnType<typeof tf.variableGrads>;
    try {
      computed = tf.variableGrads(() => this.objective(xBS, yBS, rng, step, m, traced), this.trainable);
    } catch (e) {
      xBS.dispose();
      yBS.dispose();
      this.acc.reset();
      // The model's own checks refuse non-finite activations (e.g. at a router's input).
      if (isSwitchyardError(e, 'NON_FINITE')) {
        throw nonFiniteError(
          `non-finite activations (micro-batch ${m + 1} of ${M})`,
          step + 1,
          locateNonFinite(this.model, mb),
          lastCheckpoint,
        );
      }
      throw e;
    }
    const { value, grads } = computed;
    xBS.dispose();
    yBS.dispose();
    value.dispose();
    const lmLoss = traced.lm!.dataSync()[0]!;
    const auxLoss = traced.aux ? traced.aux.dataSync()[0]! : 0;
    traced.lm?.dispose();
    traced.aux?.dispose();
    if (!Number.isFinite(lmLoss) || !Number.isFinite(auxLoss)) {
      tf.dispose(Object.values(grads));
      this.acc.reset();
      const what = !Number.isFinite(lmLoss) ? `loss is ${lmLoss}` : `balance loss is ${auxLoss}`;
      throw nonFiniteError(
        `${what} (micro-batch ${m + 1} of ${M})`,
        step + 1,
        locateNonFinite(this.model, mb),
        lastCheckpoint,
      );
    }
    const renamed: Record<string, tf.Tensor> = {};
    for (const [tfName, g] of Object.entries(grads)) renamed[this.modelName.get(tfName) ?? tfName] = g;
    this.acc.add(renamed);
    sums.loss += lmLoss;
    sums.aux += auxLoss;
    const { L, E } = this;
    if (L > 0) sums.seqVio += traced.seqVio / L;
    traced.counts.forEach((p, l) => {
      const off = (m * L + l) * E;
      for (let e = 0; e < E; e++) {
        sums.countsMLE[off + e] = p.countsE[e]!;
        sums.keptMLE[off + e] = p.keptCountsE[e]!;
      }
    });
  }

  /**
   * `balance.globalPool: 'step'`: a forward pass without the gradient tape over every micro-batch of
   * the step, with a copy of each one's routing noise, so the balance controller pools the counts the
   * training passes will route; their global loss then takes f from the whole step. Costs one extra
   * forward pass per micro-batch.
   */
  private routingPrepass(step: number, inputs: readonly MicroBatchInput[]): void {
    const { steps: totalSteps } = this.config.train;
    const countsMLE = inputs.map(({ mb, rng }) => {
      let countsLE: Float64Array[] = [];
      tf.tidy(() => {
        const xBS = this.rowsOf(mb.inputsBS);
        const yBS = this.rowsOf(mb.targetsBS);
        const { plans } = this.model.loss(xBS, yBS, {
          training: true,
          rng: Rng.fromState(rng.getState()),
          step,
          totalSteps,
          ...(this.selectionBias ? { selectionBias: this.selectionBias } : {}),
        });
        countsLE = plans.map((p) => Float64Array.from(p.countsE));
      });
      return countsLE;
    });
    this.setup.balance.observeStep(countsMLE);
  }

  /**
   * The objective of micro-batch `m` inside the gradient tape: LM loss plus balance terms, weighted
   * by this rank's share and divided by M, so the summed gradients are those of the step's mean.
   */
  private objective(
    xBS: tf.Tensor2D,
    yBS: tf.Tensor2D,
    rng: Rng,
    step: number,
    m: number,
    traced: TracedLosses,
  ): tf.Scalar {
    const { gradAccum: M, steps: totalSteps } = this.config.train;
    const { balance } = this.setup;
    const { loss, plans } = this.model.loss(xBS, yBS, {
      training: true,
      rng,
      step,
      totalSteps,
      ...(this.selectionBias ? { selectionBias: this.selectionBias } : {}),
    });
    balance.observe(plans, m);
    this.onPlans?.(plans);
    const aux = balance.loss(plans, m);
    traced.counts = plans.map((p) => ({ countsE: p.countsE, keptCountsE: p.keptCountsE }));
    const { seqLen: S } = this.config.train;
    traced.seqVio = 0;
    for (const p of plans) traced.seqVio += perSequenceMaxVio(p.expertIdx, S, this.E, p.k);
    // a clone: with no balance term and one rank, `loss` itself is the objective the tape disposes
    traced.lm = tf.keep(loss.clone());
    if (aux) traced.aux = tf.keep(aux);
    const sum = aux ? tf.add(loss, aux) : loss;
    const total = this.comm.worldSize > 1 ? tf.mul(sum, this.shardWeight) : sum;
    return (M > 1 ? tf.div(total, M) : total) as tf.Scalar;
  }

  /** This rank's rows [B_r, S] of a global micro-batch's [B, S] ids (every row on one rank). */
  private rowsOf(idsBS: Int32Array): tf.Tensor2D {
    const { seqLen: S, microBatchSize: B } = this.config.train;
    const { start, end } = this.shard;
    return this.comm.worldSize > 1
      ? tf.tensor2d(idsBS.subarray(start * S, end * S), [end - start, S], 'int32')
      : tf.tensor2d(idsBS, [B, S], 'int32');
  }

  /**
   * One all-reduce per step for the logged metrics: shard-weighted losses (their sum is the global
   * mean) and every micro-batch's counts summed over ranks.
   */
  private reduceOverRanks(sums: MicroBatchSums): void {
    const { microBatchSize: B } = this.config.train;
    const Br = this.shard.end - this.shard.start;
    const n = sums.countsMLE.length;
    const buf = new Float32Array(2 + 2 * n);
    buf[0] = (sums.loss * Br) / B;
    buf[1] = (sums.aux * Br) / B;
    buf.set(sums.countsMLE, 2);
    buf.set(sums.keptMLE, 2 + n);
    this.comm.allReduce(buf, 'sum', { inPlace: true });
    sums.loss = buf[0]!;
    sums.aux = buf[1]!;
    sums.countsMLE.set(buf.subarray(2, 2 + n));
    sums.keptMLE.set(buf.subarray(2 + n));
  }
}

/** One micro-batch's data and routing noise. */
interface MicroBatchInput {
  readonly mb: ReturnType<StepParts['batcher']['next']>;
  readonly rng: Rng;
}

/** What the gradient function hands out of the tape besides the objective. */
interface TracedLosses {
  lm?: tf.Scalar;
  aux?: tf.Scalar;
  /** Sum over layers of the micro-batch's per-sequence MaxVio. */
  seqVio: number;
  counts: { countsE: Int32Array; keptCountsE: Int32Array }[];
}

/**
 * The step's expert-load metrics from its micro-batches' counts: MaxVio of the whole step's batch
 * and of each micro-batch (means over layers), the drop rate, and each expert's share of the step.
 */
export function expertLoads(
  sums: MicroBatchSums,
  M: number,
  L: number,
  E: number,
): Pick<StepRecord, 'maxVioBatch' | 'maxVioMicro' | 'dropRate' | 'expertLoad'> {
  const { countsMLE, keptMLE } = sums;
  const countsLE = Array.from({ length: L }, () => new Float64Array(E));
  const keptL = new Float64Array(L);
  let microVioSum = 0;
  for (let m = 0; m < M; m++) {
    let vio = 0;
    for (let l = 0; l < L; l++) {
      const off = (m * L + l) * E;
      const c = countsLE[l]!;
      for (let e = 0; e < E; e++) {
        c[e]! += countsMLE[off + e]!;
        keptL[l]! += keptMLE[off + e]!;
      }
      vio += maxVio(countsMLE.subarray(off, off + E));
    }
    microVioSum += L > 0 ? vio / L : Number.NaN;
  }
  let vioBatch = 0;
  let dropped = 0;
  let assigned = 0;
  const expertLoad = countsLE.map((c, l) => {
    const total = c.reduce((a, b) => a + b, 0);
    vioBatch += maxVio(c);
    assigned += total;
    dropped += total - keptL[l]!;
    return Array.from(c, (v) => (total > 0 ? Number((v / total).toFixed(5)) : 0));
  });
  return {
    maxVioBatch: L > 0 ? vioBatch / L : Number.NaN,
    maxVioMicro: microVioSum / M,
    dropRate: assigned > 0 ? dropped / assigned : 0,
    expertLoad,
  };
}

/** Milliseconds to 0.1 ms, as metrics.jsonl records them. */
export function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}
