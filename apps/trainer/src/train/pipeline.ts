/**
 * Pipeline parallelism in the trainer (`parallel.pipeline` P > 1): the rank layout, the schedule, the
 * executor over the model's stages, the optimizer of this rank's stage variables, and the model sync
 * before evaluations and checkpoints.
 *
 * Layout: R ranks are R / P data-parallel replicas of a P-rank pipeline; rank = replica * P +
 * pipeline rank (`pipelineLayout` of @switchyard/parallel). Every rank holds the whole model (built
 * from the same seed, or loaded from the same checkpoint) and trains the variables of its stages:
 * their gradients are summed over the ranks holding them (DualPipe's two copies, an embedding tied
 * between the first and last stage), averaged over the replicas, clipped by the norm of the whole
 * model's gradient, and updated by AdamW on every rank that holds them. Before an evaluation or a
 * checkpoint each stage's holder broadcasts its variables and loss-free biases to its pipeline, so
 * every rank then holds the current model: evaluation runs as under data parallelism, and rank 0
 * saves a full checkpoint.
 *
 * Shape letters: P ranks per pipeline, S stages, M micro-batches per step (`train.gradAccum`),
 * L MoE layers, E routed experts.
 */
import type { MoETransformerLM } from '@switchyard/model';
import {
  type Communicator,
  modelStages,
  PipelineExecutor,
  type PipelineLayout,
  pipelineLayout,
} from '@switchyard/parallel';
import { generateSchedule, isPlanError, type Schedule, type ScheduleKind } from '@switchyard/plan';
import type { RoutingPlan } from '@switchyard/routing';
import { Rng, type RngState, readInto, type Scalar, SwitchyardError, tf } from '@switchyard/tensor';
import type { PipelineScheduleName, TrainConfig } from '../config/schema';
import type { AdamWConfig } from './adamw';
import type { BalanceController } from './balance';
import { type OptimizerPlacement, OptimizerStep } from './optimizer-step';

/** The schedule kind of @switchyard/plan each `parallel.schedule` runs. */
export const SCHEDULE_OF: Readonly<Record<PipelineScheduleName, ScheduleKind>> = {
  gpipe: 'gpipe',
  '1f1b': '1f1b',
  interleaved: 'interleaved',
  zb: 'zb-h1',
  dualpipe: 'dualpipe',
  dualpipev: 'dualpipev',
};

/** What one step feeds the stages: this replica's rows of each micro-batch, its noise, and the hooks. */
export interface StageFeed {
  /** Micro-batch m's input and target ids for this replica, [B_r * S] each. */
  tokens: { inputs: Int32Array; targets: Int32Array }[];
  /** Micro-batch m's routing-noise generator state (one `noiseRng.split()` per micro-batch, as one rank draws). */
  noise: RngState[];
  /** Optimizer step (0-based). */
  step: number;
  /** The balance terms of a stage's MoE layers for micro-batch m (already weighted), or undefined. */
  aux: (microBatch: number, plans: readonly RoutingPlan[], firstMoELayer: number) => Scalar | undefined;
  /** Sees the last stage's loss of micro-batch m. */
  onLoss: (microBatch: number, loss: Scalar) => void;
  /** The selection bias of MoE layer l (loss-free balancing), or undefined. */
  selectionBias: ((l: number) => Float32Array | undefined) | undefined;
}

/**
 * The pipeline of a run: layout, communicators, schedule and executor; built once by the setup.
 *
 * When to use: through `setUpTraining` (it builds one when `parallel.pipeline` > 1); the pipeline
 * step feeds it each step.
 */
export class TrainingPipeline {
  readonly layout: PipelineLayout;
  /** The P ranks of this rank's pipeline (pipeline numbering). */
  readonly pipeComm: Communicator;
  /** The replicas of this rank's stages (gradient averaging, balance counts per micro-batch). */
  readonly dataComm: Communicator;
  /** The ranks whose expert counts the loss-free update pools: the replicas of every copy of this rank's stages. */
  readonly poolComm: Communicator;
  readonly schedule: Schedule;
  readonly executor: PipelineExecutor;
  /** Blocks [from, to) of each stage. */
  readonly ranges: readonly [number, number][];
  readonly feed: StageFeed;
  /** Model name of each variable. */
  readonly nameOf: ReadonlyMap<tf.Variable, string>;
  /** B_r: sequences of each micro-batch on this replica. */
  readonly rows: number;

  constructor(
    config: TrainConfig,
    comm: Communicator,
    private readonly model: MoETransformerLM,
    rows: number,
  ) {
    const P = config.parallel.pipeline;
    this.layout = pipelineLayout(comm.worldSize, P, comm.rank);
    this.rows = rows;
    checkPipeline(config, model.config.numLayers);
    this.schedule = scheduleOf(config);
    const S = this.schedule.stages;
    this.pipeComm = comm.group(this.layout.pipelineRanks);
    this.dataComm = comm.group(this.layout.dataRanks);
    this.nameOf = new Map([...model.namedVariables()].map(([n, v]) => [v, n]));
    const feed: StageFeed = {
      tokens: [],
      noise: [],
      step: 0,
      aux: () => undefined,
      onLoss: () => {},
      selectionBias: undefined,
    };
    this.feed = feed;
    const stages = modelStages(model, {
      stages: S,
      microBatch: { batch: rows, seqLen: config.train.seqLen },
      tokens: (m) => feed.tokens[m]!,
      forwardOptions: (w) => ({
        training: true,
        rng: Rng.fromState(feed.noise[w.microBatch]!),
        step: feed.step,
        totalSteps: config.train.steps,
        ...(feed.selectionBias ? { selectionBias: feed.selectionBias } : {}),
      }),
      // Each replica's loss is a mean over its rows: weighted by replicas * B_r / B, averaged over M.
      lossScale: (this.layout.replicas * rows) / config.train.microBatchSize / config.train.gradAccum,
      aux: (w, plans, first) => feed.aux(w.microBatch, plans, first),
      onLoss: (w, loss) => feed.onLoss(w.microBatch, loss),
    });
    this.ranges = stages.ranges;
    this.executor = new PipelineExecutor(this.schedule, this.pipeComm, stages);
    // The loss-free update pools counts over every rank running this rank's stages, in every replica.
    const holders = new Set<number>();
    for (const s of this.executor.stages)
      for (const ranksS of this.schedule.placement) holders.add(ranksS[s]!);
    const pool: number[] = [];
    for (let d = 0; d < this.layout.replicas; d++) for (const r of holders) pool.push(d * P + r);
    this.poolComm = comm.group(pool);
  }

  /** The model names of this rank's stage variables, in stage order. */
  stageNames(): string[] {
    return this.executor.variables.map((v) => this.nameOf.get(v)!);
  }

  /**
   * AdamW for this rank's stage variables: gradients averaged over the replicas, the clipping norm
   * taken over the whole model (a variable held by several ranks counted once).
   */
  optimizer(cfg: AdamWConfig, placement: OptimizerPlacement, clipNorm: number): PipelineOptimizer {
    const named = new Map(this.executor.variables.map((v) => [this.nameOf.get(v)!, v]));
    const share = new Map(
      this.executor.variables.map((v) => [this.nameOf.get(v)!, 1 / this.executor.holders(v).length]),
    );
    return new PipelineOptimizer(this, named, cfg, placement, clipNorm, {
      share: (n) => share.get(n) ?? 1,
      reduce: (sumSq) => this.pipeComm.allReduce(Float32Array.of(sumSq), 'sum')[0]!,
    });
  }

  /**
   * Makes this rank's model whole: every variable from the first rank of the pipeline that holds
   * it, and (loss-free balancing) every layer's bias from its stage's first holder. A collective of
   * the pipeline: every rank calls it before evaluations and checkpoints.
   */
  syncModel(balance: BalanceController): void {
    const P = this.layout.pipeline;
    const all = [...this.model.namedVariables().values()];
    for (let root = 0; root < P; root++) {
      const vars = all.filter((v) => this.executor.holders(v)[0] === root);
      const flat = new Float32Array(vars.reduce((n, v) => n + v.size, 0));
      let off = 0;
      if (this.pipeComm.rank === root) {
        for (const v of vars) {
          readInto(v, flat, off);
          off += v.size;
        }
      }
      const got = this.pipeComm.broadcast(flat, root);
      if (this.pipeComm.rank === root) continue;
      off = 0;
      for (const v of vars) {
        tf.tidy(() => v.assign(tf.tensor(got.subarray(off, off + v.size), v.shape, 'float32')));
        off += v.size;
      }
    }
    const state = balance.state();
    const lossFree = state.lossFree;
    if (lossFree === undefined) return;
    const { numLayers: L, numExperts: E } = lossFree;
    const flat = new Float32Array(L * E);
    this.model.moeLayerIndices.forEach((block, l) => {
      const stage = this.ranges.findIndex(([from, to]) => block >= from && block < to);
      const first = this.firstHolderOfStage(stage);
      if (first === this.pipeComm.rank) flat.set(lossFree.biases[l]!, l * E);
    });
    this.pipeComm.allReduce(flat, 'sum', { inPlace: true });
    const biases = Array.from({ length: L }, (_, l) => Array.from(flat.subarray(l * E, (l + 1) * E)));
    balance.loadState({ ...state, lossFree: { ...lossFree, biases } });
  }

  /** The lowest pipeline rank holding stage s. */
  firstHolderOfStage(stage: number): number {
    return Math.min(...this.schedule.placement.map((ranksS) => ranksS[stage]!));
  }
}

/**
 * AdamW over one pipeline rank's stage variables. Its checkpoint state gathers every stage's moments
 * from the pipeline (a collective), so rank 0 saves the moments of the whole model.
 */
export class PipelineOptimizer extends OptimizerStep {
  constructor(
    private readonly pipeline: TrainingPipeline,
    named: ReadonlyMap<string, tf.Variable>,
    cfg: AdamWConfig,
    placement: OptimizerPlacement,
    clipNorm: number,
    span: ConstructorParameters<typeof OptimizerStep>[5],
  ) {
    super(pipeline.dataComm, named, cfg, placement, clipNorm, span);
  }

  /** `m/<name>` and `v/<name>` of every variable of the model, gathered over the pipeline. */
  override stateTensors(): Record<string, tf.Tensor> {
    const own = super.stateTensors();
    const { executor, pipeComm, nameOf } = this.pipeline;
    try {
      const model = [...nameOf.keys()];
      const firstOf = (v: tf.Variable) => executor.holders(v)[0];
      const mine = model.filter((v) => firstOf(v) === pipeComm.rank);
      const flat = new Float32Array(2 * mine.reduce((n, v) => n + v.size, 0));
      let off = 0;
      for (const v of mine) {
        for (const kind of ['m', 'v']) {
          readInto(own[`${kind}/${nameOf.get(v)}`]!, flat, off);
          off += v.size;
        }
      }
      const parts = pipeComm.allGather(flat);
      const out: Record<string, tf.Tensor> = {};
      const offsets = parts.map(() => 0);
      for (const v of model) {
        const r = firstOf(v)!;
        for (const kind of ['m', 'v']) {
          out[`${kind}/${nameOf.get(v)}`] = tf.tensor(
            parts[r]!.subarray(offsets[r]!, offsets[r]! + v.size),
            v.shape,
            'float32',
          );
          offsets[r]! += v.size;
        }
      }
      return out;
    } finally {
      super.releaseState(own);
    }
  }

  override releaseState(state: Record<string, tf.Tensor>): void {
    tf.dispose(Object.values(state));
  }
}

/**
 * Refuses a pipeline configuration that cannot run on `ranks` ranks (CONFIG_INVALID naming the key):
 * the schedule's own conditions on P and the micro-batches, fewer blocks than stages, and balancing
 * methods a pipeline cannot reproduce.
 *
 * @example
 * ```ts
 * checkPipeline(config, 2); // throws for parallel.schedule=dualpipe with train.gradAccum=2
 * ```
 */
export function checkPipeline(config: TrainConfig, numLayers: number): void {
  if (config.parallel.pipeline <= 1) return;
  const schedule = scheduleOf(config);
  const { pipeline: P, schedule: name } = config.parallel;
  const S = schedule.stages;
  if (numLayers < S) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `model.numLayers: expected >= the ${S} stages of the ${name} schedule on ${P} ranks (every stage runs at least one block), got ${numLayers}`,
    );
  }
  const method = config.balance.method;
  if (method === 'shuffled') {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      'balance.method: the shuffled-batch loss draws its samples for every layer from one generator in layer order, which a pipeline splits over stages; choose another method, got shuffled',
    );
  }
  if (name === 'dualpipe' && (method === 'global' || method === 'global+local')) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `balance.method: the global-batch loss pools each micro-batch's counts as it arrives, and DualPipe runs every stage as two copies that see half the micro-batches each; choose micro, sequence, loss-free or none with parallel.schedule=dualpipe, got ${method}`,
    );
  }
}

/** The run's schedule, its errors told in configuration keys. */
function scheduleOf(config: TrainConfig): Schedule {
  const { pipeline: P, schedule: name, virtualStages } = config.parallel;
  try {
    return generateSchedule({
      kind: SCHEDULE_OF[name],
      ranks: P,
      microBatches: config.train.gradAccum,
      ...(name === 'interleaved' ? { chunks: virtualStages } : {}),
    });
  } catch (e) {
    if (!isPlanError(e)) throw e;
    const key = /`microBatches`/.test(e.message)
      ? 'train.gradAccum (the micro-batches of a pipeline step)'
      : /`ranks`/.test(e.message)
        ? 'parallel.pipeline'
        : /`chunks`/.test(e.message)
          ? 'parallel.virtualStages'
          : 'parallel';
    throw new SwitchyardError('CONFIG_INVALID', `${key}: ${e.message} (parallel.schedule=${name})`, {
      cause: e,
    });
  }
}
