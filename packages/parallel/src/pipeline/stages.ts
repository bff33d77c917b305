/**
 * Pipeline stages cut from a decoder-only model's block ranges (@switchyard/model's `embed`,
 * `forwardBlocks`, `headLoss`), and the rank layout of pipeline parallelism combined with data
 * parallelism.
 *
 * Stage s of S holds blocks [floor(sL/S), floor((s+1)L/S)) of the model's L blocks; stage 0 also
 * holds the token embedding, stage S-1 the final norm and the LM head (with tied embeddings, the
 * embedding matrix is then held by both, and the executor sums its two gradients).
 *
 * Shape letters: B sequences per micro-batch, S positions per sequence, T = B * S token rows,
 * D model width.
 */

import type { StageWork } from '@switchyard/plan';
import type { RoutingPlan } from '@switchyard/routing';
import { disposeRoutingPlan } from '@switchyard/routing';
import {
  checkInt,
  invalidArgument,
  type Rng,
  type Scalar,
  type Tensor,
  type Tensor2D,
  tf,
} from '@switchyard/tensor';
import type { PipelineStages, StageOutput } from './executor';

/** Forward options of a block range (what `MoETransformerLM.forwardBlocks` takes). */
export interface StageBlockOptions {
  readonly training: boolean;
  readonly batch: number;
  readonly seqLen: number;
  readonly rng?: Rng;
  readonly step?: number;
  readonly totalSteps?: number;
  readonly selectionBias?: (moeLayerIndex: number) => Float32Array | undefined;
  readonly tokenIds?: Int32Array;
}

/** What {@link modelStages} needs of a model: its block ranges and its named variables. */
export interface PipelineModel {
  readonly config: { readonly numLayers: number; readonly dModel: number };
  /** Block index of each MoE layer, ascending. */
  readonly moeLayerIndices: readonly number[];
  /** `embed_tokens`, `layers.N.*`, `norm`, and `lm_head` unless the head is tied to the embedding. */
  namedVariables(): Map<string, tf.Variable>;
  embed(tokensBS: Tensor2D): Tensor2D;
  forwardBlocks(
    xTD: Tensor2D,
    from: number,
    to: number,
    opts: StageBlockOptions,
  ): { readonly xTD: Tensor2D; readonly plans: RoutingPlan[] };
  headLoss(xTD: Tensor2D, targetsBS: Tensor2D): Scalar;
}

/** Options of {@link modelStages}. */
export interface ModelStagesOptions {
  /** S: the stages of the schedule (`schedule.stages`); at most the model's blocks. */
  readonly stages: number;
  /** B and S of every micro-batch. */
  readonly microBatch: { readonly batch: number; readonly seqLen: number };
  /** Micro-batch m's input and target token ids, [B * S] each, row-major. */
  tokens(microBatch: number): { readonly inputs: Int32Array; readonly targets: Int32Array };
  /**
   * The forward options of micro-batch m (`training`, `step`, `selectionBias`, ...). Its `rng`, if
   * any, must be a fresh generator in the same state on every call for the same micro-batch: each
   * stage skips the `split()`s of the MoE layers before it, so stages draw what one whole forward draws.
   */
  forwardOptions?(work: StageWork): Omit<StageBlockOptions, 'batch' | 'seqLen' | 'tokenIds'>;
  /** Factor on the last stage's loss in the objective (default 1; 1/N averages over N micro-batches). */
  readonly lossScale?: number;
  /**
   * A stage's extra objective from its MoE layers' routing plans (balance losses), or undefined.
   * `firstMoELayer` is the index, among the model's MoE layers, of `plans[0]`. Runs on the tape.
   */
  aux?(work: StageWork, plans: readonly RoutingPlan[], firstMoELayer: number): Scalar | undefined;
  /** Sees the last stage's unscaled loss (on the tape: read it, do not dispose it). */
  onLoss?(work: StageWork, loss: Scalar): void;
}

/**
 * Stage s's blocks [from, to) when `numLayers` blocks are cut into `stages` stages (sizes differ by
 * at most one).
 *
 * When to use: to see or document how a pipeline cuts a model; {@link modelStages} cuts this way.
 *
 * @example
 * ```ts
 * blockRanges(6, 4); // [[0, 1], [1, 3], [3, 4], [4, 6]]
 * ```
 */
export function blockRanges(numLayers: number, stages: number): [from: number, to: number][] {
  checkInt('blockRanges', 'stages', stages, { min: 1 });
  checkInt('blockRanges', 'numLayers', numLayers, { min: stages });
  return Array.from({ length: stages }, (_, s) => [
    Math.floor((s * numLayers) / stages),
    Math.floor(((s + 1) * numLayers) / stages),
  ]);
}

/**
 * The {@link PipelineStages} of a model cut into `options.stages` stages by {@link blockRanges}: the
 * first stage embeds micro-batch m's tokens, every stage runs its blocks, the last one returns the
 * mean next-token loss times `lossScale`; each stage adds `options.aux` of its MoE layers.
 *
 * When to use: to run a `MoETransformerLM` under {@link PipelineExecutor}; every rank builds it for
 * the same model (same weights) and options.
 *
 * @example
 * ```ts
 * const stages = modelStages(model, {
 *   stages: schedule.stages,
 *   microBatch: { batch: 2, seqLen: 16 },
 *   tokens: (m) => ({ inputs: xs[m], targets: ys[m] }),
 *   forwardOptions: () => ({ training: true }),
 *   lossScale: 1 / schedule.microBatches,
 * });
 * const { grads } = new PipelineExecutor(schedule, ctx.comm, stages).run();
 * ```
 */
export function modelStages(
  model: PipelineModel,
  options: ModelStagesOptions,
): PipelineStages & {
  /** Blocks [from, to) of each stage. */
  readonly ranges: readonly [number, number][];
} {
  const fn = 'modelStages';
  const S = checkInt(fn, 'options.stages', options.stages, { min: 1 });
  const L = model.config.numLayers;
  if (L < S) {
    throw invalidArgument(
      fn,
      'options.stages',
      `at most the model's ${L} blocks (every stage runs at least one)`,
      S,
    );
  }
  const B = checkInt(fn, 'options.microBatch.batch', options.microBatch?.batch, { min: 1 });
  const T = B * checkInt(fn, 'options.microBatch.seqLen', options.microBatch.seqLen, { min: 1 });
  const seqLen = options.microBatch.seqLen;
  const ranges = blockRanges(L, S);
  const named = model.namedVariables();
  const tied = !named.has('lm_head');
  const vars = ranges.map(([from, to], s) => {
    const out: tf.Variable[] = [];
    for (const [name, v] of named) {
      const block = /^layers\.(\d+)\./.exec(name);
      const inRange = block !== null && Number(block[1]) >= from && Number(block[1]) < to;
      const head =
        s === S - 1 && (name === 'norm' || name === 'lm_head' || (tied && name === 'embed_tokens'));
      if (inRange || head || (s === 0 && name === 'embed_tokens')) out.push(v);
    }
    return out;
  });
  const moeBefore = ranges.map(([from]) => model.moeLayerIndices.filter((l) => l < from).length);
  const scale = options.lossScale ?? 1;

  const ids = (m: number, which: 'inputs' | 'targets'): Int32Array => {
    const got = options.tokens(m)?.[which];
    if (!(got instanceof Int32Array) || got.length !== T) {
      throw invalidArgument(fn, `options.tokens(${m}).${which}`, `an Int32Array of ${T} token ids`, got);
    }
    return got;
  };

  return {
    ranges,
    variables: (s) => vars[s] ?? [],
    inputShape: () => [T, model.config.dModel],
    forward(work: StageWork, input: Tensor | undefined): StageOutput {
      const s = work.stage;
      const [from, to] = ranges[s]!;
      const inputs = ids(work.microBatch, 'inputs');
      const base = options.forwardOptions?.(work) ?? { training: true };
      const rng = base.rng;
      if (rng !== undefined) for (let i = 0; i < moeBefore[s]!; i++) rng.split();
      const xTD = s === 0 ? model.embed(tf.tensor2d(inputs, [B, seqLen], 'int32')) : (input as Tensor2D);
      const r = model.forwardBlocks(xTD, from, to, { ...base, batch: B, seqLen, tokenIds: inputs });
      let aux: Scalar | undefined;
      try {
        aux = options.aux?.(work, r.plans, moeBefore[s]!);
      } finally {
        for (const p of r.plans) disposeRoutingPlan(p);
      }
      const withAux = aux === undefined ? {} : { aux };
      if (s < S - 1) return { activation: r.xTD, ...withAux };
      const targets = tf.tensor2d(ids(work.microBatch, 'targets'), [B, seqLen], 'int32');
      const loss = model.headLoss(r.xTD, targets);
      options.onLoss?.(work, loss);
      return { loss: (scale === 1 ? loss : tf.mul(loss, scale)) as Scalar, ...withAux };
    },
  };
}

/** Where a rank sits when pipeline parallelism (P stages) is combined with data parallelism (R / P replicas). */
export interface PipelineLayout {
  /** P: ranks per pipeline. */
  readonly pipeline: number;
  /** R / P: data-parallel replicas of the pipeline. */
  readonly replicas: number;
  /** This rank's position in its pipeline, in [0, P). */
  readonly pipelineRank: number;
  /** This rank's replica, in [0, R / P). */
  readonly replica: number;
  /** The world ranks of this rank's pipeline, in pipeline order. */
  readonly pipelineRanks: readonly number[];
  /** The world ranks holding the same stages as this rank, one per replica. */
  readonly dataRanks: readonly number[];
}

/**
 * The layout of R ranks as R / P data-parallel replicas of a P-rank pipeline: rank = replica * P +
 * pipelineRank, so each pipeline's ranks are consecutive (on one node when P divides the ranks per
 * node) and the replicas of one stage are P ranks apart.
 *
 * When to use: to build the communicators of a PP x DP run: `comm.group(layout.pipelineRanks)`
 * for the executor, `comm.group(layout.dataRanks)` for the gradient all-reduce.
 *
 * @example
 * ```ts
 * pipelineLayout(4, 2, 3); // { pipeline: 2, replicas: 2, pipelineRank: 1, replica: 1, pipelineRanks: [2, 3], dataRanks: [1, 3] }
 * ```
 */
export function pipelineLayout(worldSize: number, pipeline: number, rank: number): PipelineLayout {
  const fn = 'pipelineLayout';
  checkInt(fn, 'worldSize', worldSize, { min: 1 });
  checkInt(fn, 'pipeline', pipeline, { min: 1 });
  checkInt(fn, 'rank', rank, { min: 0, max: worldSize - 1 });
  if (worldSize % pipeline !== 0) {
    throw invalidArgument(fn, 'pipeline', `a divisor of the ${worldSize} ranks`, pipeline);
  }
  const replicas = worldSize / pipeline;
  const replica = Math.floor(rank / pipeline);
  const pipelineRank = rank % pipeline;
  return {
    pipeline,
    replicas,
    pipelineRank,
    replica,
    pipelineRanks: Array.from({ length: pipeline }, (_, p) => replica * pipeline + p),
    dataRanks: Array.from({ length: replicas }, (_, d) => d * pipeline + pipelineRank),
  };
}
