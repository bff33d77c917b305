/**
 * Expert parallelism as an expert bank: each of R ranks owns E/R of an MoE layer's experts. The
 * layer routes its local tokens and builds the dispatch as always; the bank exchanges per-expert
 * counts, sends each token copy to the rank owning its expert (allToAllV of rows), runs the local
 * experts grouped per expert, sends the results back (the reverse allToAllV) and combines them with
 * the gate weights. Backward mirrors it: the gradient of each row exchange is the exchange in the
 * other direction. Router and shared experts stay the layer's own, replicated (data parallel).
 *
 * Shape letters: T local tokens, D model width, E experts, L = E / R experts per rank, S dispatched
 * rows of the local tokens, M rows received for the local experts, N rows sent.
 */
import {
  type BankOutput,
  buildDispatch,
  type ComputeMode,
  checkBankInput,
  combine,
  type DispatchPlan,
  dispatch,
  type ExpertBank,
  type ExpertWeightName,
  expertWeightsOf,
  groupedExperts,
  MoELayer,
  type ResolvedComputeMode,
  RoutedExperts,
  resolveComputeMode,
  StackedExpertBank,
} from '@switchyard/experts';
import type { RoutingPlan } from '@switchyard/routing';
import {
  checkDtype,
  checkShape,
  concatFloat32,
  customGrad,
  invalidArgument,
  SwitchyardError,
  type Tensor2D,
  tf,
} from '@switchyard/tensor';
import type { Communicator } from '../comm/types';
import { markShard } from './data';

/** Exchanges row blocks: `xND`'s first `sendRows[0]` rows go to rank 0, the next `sendRows[1]` to rank 1, ... */
function exchangeRows(
  comm: Communicator,
  xND: tf.Tensor,
  sendRows: Int32Array,
  D: number,
): [tf.Tensor2D, Int32Array] {
  const data = xND.dataSync() as Float32Array;
  const parts: Float32Array[] = [];
  let off = 0;
  for (const rows of sendRows) {
    parts.push(data.subarray(off * D, (off + rows) * D));
    off += rows;
  }
  const recv = comm.allToAllV(parts);
  const recvRows = new Int32Array(recv.length);
  let M = 0;
  recv.forEach((b, s) => {
    if (b.length % D !== 0) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `allToAllRows(): rank ${s} sent ${b.length} values to rank ${comm.rank}, not a whole number of rows of width ${D}`,
      );
    }
    recvRows[s] = b.length / D;
    M += recvRows[s]!;
  });
  return [tf.tensor2d(concatFloat32(recv), [M, D], 'float32'), recvRows];
}

/**
 * Differentiable all-to-all of tensor rows with variable sizes: rows `[o_j, o_j + sendRows[j])` of
 * `xND` go to rank j; the result stacks the rows received from rank 0, then rank 1, and so on, and
 * `recvRows[i]` says how many came from rank i. The gradient is the exchange in the other direction.
 * A collective, in the forward and (when differentiated) in the backward pass.
 *
 * When to use: to move token rows between ranks inside a differentiated computation (expert
 * parallelism's dispatch and combine).
 *
 * @example
 * ```ts
 * // 2 ranks: send the first 3 rows to rank 0 and the other 2 to rank 1
 * const { yMD, recvRows } = allToAllRows(ctx.comm, xND, [3, 2]);
 * ```
 */
export function allToAllRows(
  comm: Communicator,
  xND: Tensor2D,
  sendRows: ArrayLike<number>,
): { yMD: Tensor2D; recvRows: Int32Array } {
  const fn = 'allToAllRows';
  if (!(xND instanceof tf.Tensor)) throw invalidArgument(fn, 'xND', 'a 2-D float32 tensor', xND);
  checkShape(fn, 'xND', xND, [null, null], 'ND');
  checkDtype(fn, 'xND', xND, ['float32']);
  const [N, D] = xND.shape;
  const rows = Int32Array.from(sendRows ?? [], (v) => v);
  let total = 0;
  for (let j = 0; j < rows.length; j++) {
    if (!Number.isInteger(sendRows[j]) || sendRows[j]! < 0)
      throw invalidArgument(fn, `sendRows[${j}]`, 'an integer >= 0', sendRows[j]);
    total += rows[j]!;
  }
  if (rows.length !== comm.worldSize)
    throw invalidArgument(fn, 'sendRows', `${comm.worldSize} counts (one per rank)`, Array.from(rows));
  if (total !== N)
    throw invalidArgument(fn, 'sendRows', `counts summing to the ${N} rows of xND`, Array.from(rows));
  let recvRows: Int32Array = new Int32Array(comm.worldSize);
  const op = customGrad((x: tf.Tensor) => {
    const [value, got] = exchangeRows(comm, x, rows, D);
    recvRows = got;
    return {
      value,
      gradFunc: (dy: tf.Tensor2D) => {
        const [dx, back] = exchangeRows(comm, dy, got, D);
        if (back.some((r, j) => r !== rows[j])) {
          throw new SwitchyardError(
            'STATE_INVALID',
            `allToAllRows() backward on rank ${comm.rank} got rows ${back} back, sent ${rows}`,
          );
        }
        return dx;
      },
    };
  });
  return { yMD: op(xND), recvRows };
}

/** Anything whose MoE layers a strategy can reach: a model (`MoETransformerLM`) or one layer. */
export type MoELayerHost = MoELayer | { moeLayers(): readonly MoELayer[] };

/** The MoE layers of `target`: the layer itself, or the model's `moeLayers()`. */
export function moeLayersOf(fn: string, target: MoELayerHost): readonly MoELayer[] {
  if (target instanceof MoELayer) return [target];
  if (target !== null && typeof target === 'object' && typeof target.moeLayers === 'function')
    return target.moeLayers();
  throw invalidArgument(fn, 'target', 'a model with moeLayers() or an MoELayer', target);
}

/**
 * The routed output of this rank's tokens when the units `d` groups rows by (experts, or expert
 * slots) are split over the ranks of `comm` in contiguous blocks of `unitsPerRank` (rank j owns units
 * `[j U, (j + 1) U)`): per-unit counts are exchanged, each row goes to the rank owning its unit
 * (allToAllV of rows), the local units run grouped on what arrived, results return the same way
 * and are combined with the gate weights. Returns the output and the rows this rank computed.
 * A collective in the forward and the backward pass.
 */
export function forwardOverRanks(
  fn: string,
  comm: Communicator,
  xTD: Tensor2D,
  topkWeightTK: Tensor2D,
  d: DispatchPlan,
  unitsPerRank: number,
  bank: Pick<StackedExpertBank, 'variables' | 'activation'>,
  mode: ResolvedComputeMode,
): { yTD: Tensor2D; rowsComputed: number } {
  const R = comm.worldSize;
  const U = unitsPerRank;
  // Rows are sorted by unit and each rank owns a contiguous range of units: rank j's rows are contiguous.
  const sendRows = new Int32Array(R);
  const sendCounts: Int32Array[] = [];
  for (let j = 0; j < R; j++) {
    sendRows[j] = d.offsetsE[(j + 1) * U]! - d.offsetsE[j * U]!;
    sendCounts.push(d.countsE.slice(j * U, (j + 1) * U));
  }
  const recvCountsRU = comm.allToAllV(sendCounts); // [R][U]: rows of each local unit from each rank
  let rowsComputed = 0;
  const yTD = tf.tidy(() => {
    const xSD = dispatch(xTD, d);
    const { yMD: xMD, recvRows } = allToAllRows(comm, xSD, sendRows);
    recvCountsRU.forEach((c, s) => {
      const rows = c.reduce((a, b) => a + b, 0);
      if (rows !== recvRows[s]) {
        throw new SwitchyardError(
          'STATE_INVALID',
          `${fn}: rank ${s} announced ${rows} rows for rank ${comm.rank} but sent ${recvRows[s]}`,
        );
      }
    });
    rowsComputed = xMD.shape[0];
    const yMD = localUnits(xMD, recvCountsRU, U, bank, mode);
    const { yMD: ySD } = allToAllRows(comm, yMD, recvRows);
    return combine(ySD, topkWeightTK, d);
  });
  return { yTD, rowsComputed };
}

/** Runs the local units on the received rows (source-major, unit-minor), returning rows in the same order. */
function localUnits(
  xMD: Tensor2D,
  recvCountsRU: readonly Int32Array[],
  U: number,
  bank: Pick<StackedExpertBank, 'variables' | 'activation'>,
  mode: ResolvedComputeMode,
): Tensor2D {
  const M = xMD.shape[0];
  // With no rows the experts add nothing, but the received tensor must stay on the tape so this
  // rank joins the backward exchange like every other rank.
  if (M === 0) return tf.mul(xMD, 0) as Tensor2D;
  const localIdxM = new Int32Array(M);
  let p = 0;
  for (const counts of recvCountsRU)
    for (let e = 0; e < U; e++) for (let c = 0; c < counts[e]!; c++) localIdxM[p++] = e;
  // one slot per received row, all kept: a grouping of the rows by local unit
  const grouping = buildDispatch({
    numTokens: M,
    numExperts: U,
    k: 1,
    expertIdx: localIdxM,
    kept: new Uint8Array(M).fill(1),
    capacity: null,
  });
  const xGD = dispatch(xMD, grouping); // rows grouped by local unit
  const yGD = groupedExperts(xGD, grouping, expertWeightsOf(bank.variables), bank.activation, mode);
  return combine(yGD, tf.ones([M, 1]) as Tensor2D, grouping); // back to the received order
}

/** Throws INVALID_ARGUMENT naming `arg` of `fn` unless `comm` is a Communicator. */
export function checkCommunicator(fn: string, arg: string, comm: unknown): asserts comm is Communicator {
  if (comm === null || typeof comm !== 'object' || typeof (comm as Communicator).allToAllV !== 'function')
    throw invalidArgument(fn, arg, 'a Communicator', comm);
}

/** Throws INVALID_ARGUMENT unless `experts` is a bank holding all its E experts as stacked weights. */
export function checkFullBank(fn: string, experts: ExpertBank): void {
  if (experts === null || typeof experts !== 'object' || typeof experts.forwardWithDispatch !== 'function')
    throw invalidArgument(fn, 'experts', 'an ExpertBank holding every expert', experts);
  const E = experts.numExperts;
  const held = expertWeightsOf(experts.variables).w1EDF.shape[0];
  if (held !== E) throw invalidArgument(fn, 'experts', `a bank holding all ${E} experts`, `${held} experts`);
}

/**
 * Copies of the experts `expertIdx` (in that order, repeats allowed) of a bank holding all E as
 * stacked weights, as variables `w1`, `w3` (SwiGLU), `w2` marked as shards.
 */
export function shardVariables(
  experts: ExpertBank,
  expertIdx: readonly number[],
): Record<string, tf.Variable> {
  const full = expertWeightsOf(experts.variables);
  const take = (w: tf.Tensor): tf.Variable => {
    const v = tf.tidy(() => tf.variable(tf.gather(w, [...expertIdx]), true));
    markShard(v);
    return v;
  };
  const vars: Record<string, tf.Variable> = { w1: take(full.w1EDF) };
  if (full.w3EDF) vars.w3 = take(full.w3EDF);
  vars.w2 = take(full.w2EFD);
  return vars;
}

/**
 * An expert bank whose weights are spread over the ranks of a communicator and can be gathered into
 * one local bank of all E experts: the base of {@link ExpertParallelBank} and of the replicated
 * (EPLB slot) bank, and what {@link withFullExperts} looks for.
 *
 * When to use: as the base class of a bank that splits experts over ranks, so checkpoints see full experts.
 *
 * @example
 * ```ts
 * if (layer.experts instanceof DistributedExpertBank) layer.experts.gather(); // a collective
 * ```
 */
export abstract class DistributedExpertBank extends StackedExpertBank {
  /** All E experts in one local bank (a copy). A collective over the bank's ranks. */
  abstract gather(): RoutedExperts;
}

/**
 * An {@link ExpertBank} whose experts are split over the ranks of a communicator: rank r owns
 * experts `[r L, (r + 1) L)` with L = E / R (variables `w1` [L, D, F], `w3`, `w2` [L, F, D], marked
 * as shards so {@link allReduceGradients} leaves them local). Its forward exchanges rows with the
 * other ranks: every rank must run the layer's forward (and backward) together.
 *
 * When to use: install it in a layer with {@link applyExpertParallel} (or `layer.setExperts`) to
 * train with E/R experts per rank; on one rank it computes exactly what the local experts compute.
 *
 * @example
 * ```ts
 * const layer = new MoELayer(config, new Rng(seed)); // same seed on every rank
 * layer.setExperts(new ExpertParallelBank(layer.experts, ctx.comm)).dispose();
 * const { value, grads } = tf.variableGrads(() => lossOf(layer.forward(xTD, { training: true }).yTD));
 * optimizer.applyGradients(allReduceGradients(ctx.comm, grads, Object.values(layer.variables)));
 * ```
 */
export class ExpertParallelBank extends DistributedExpertBank {
  readonly comm: Communicator;
  /** L = E / R experts on each rank. */
  readonly expertsPerRank: number;
  /** Global index of this rank's first expert. */
  readonly firstExpert: number;

  /**
   * Copies this rank's shard out of `experts`, a bank holding all E experts as stacked weights
   * (the layer's local {@link RoutedExperts}); `experts` is left as it was.
   */
  constructor(experts: ExpertBank, comm: Communicator) {
    const fn = 'ExpertParallelBank';
    checkCommunicator(fn, 'comm', comm);
    checkFullBank(fn, experts);
    const E = experts.numExperts;
    const R = comm.worldSize;
    if (E % R !== 0) {
      throw invalidArgument(
        fn,
        'comm',
        `a communicator whose world size divides numExperts (${E})`,
        `world size ${R}`,
      );
    }
    const L = E / R;
    const first = comm.rank * L;
    // this rank's shard of the stacked weights: w1 [L, D, F], w3 (SwiGLU), w2 [L, F, D]
    const vars = shardVariables(
      experts,
      Array.from({ length: L }, (_, i) => first + i),
    );
    super(experts, vars);
    this.comm = comm;
    this.expertsPerRank = L;
    this.firstExpert = first;
  }

  /**
   * The routed output of this rank's tokens, with every expert computed on the rank that owns it.
   * A collective: every rank calls it (and differentiates it) together.
   */
  forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    d: DispatchPlan,
    computeMode: ComputeMode,
  ): BankOutput {
    const fn = 'ExpertParallelBank.forward';
    this.assertLive('ExpertParallelBank', 'forward');
    checkBankInput(fn, this, xTD, plan, d);
    // Received rows are regrouped without padding whatever the plan's capacity.
    const mode = resolveComputeMode(computeMode, null);
    const { yTD } = forwardOverRanks(
      fn,
      this.comm,
      xTD,
      plan.topkWeightTK,
      d,
      this.expertsPerRank,
      this,
      mode,
    );
    return { yTD, computeMode: mode };
  }

  /**
   * All E experts in one local bank, gathered from every rank's shard (a copy: this bank is left as
   * it was). A collective: every rank calls it.
   *
   * When to use: to save a checkpoint in the single-device layout ({@link withFullExperts} does it
   * for a whole model), or to leave expert parallelism.
   *
   * @example
   * ```ts
   * const full = bank.gather(); // RoutedExperts with w1 [E, D, F]
   * ```
   */
  gather(): RoutedExperts {
    this.assertLive('ExpertParallelBank', 'gather');
    const E = this.numExperts;
    const full: Partial<Record<ExpertWeightName, tf.Tensor3D>> = {};
    for (const [name, v] of Object.entries(this.variables) as [ExpertWeightName, tf.Variable][]) {
      const flat = concatFloat32(this.comm.allGather(v.dataSync() as Float32Array));
      const [, a, b] = v.shape as [number, number, number];
      full[name] = tf.tensor3d(flat, [E, a, b], 'float32');
    }
    try {
      return new RoutedExperts(
        { numExperts: E, dModel: this.dModel, dFF: this.dFF, activation: this.activation },
        { w1EDF: full.w1!, w2EFD: full.w2!, ...(full.w3 ? { w3EDF: full.w3 } : {}) },
      );
    } finally {
      tf.dispose(Object.values(full));
    }
  }
}

/**
 * Makes every MoE layer of a model (or one layer) expert-parallel: each layer's local experts are
 * replaced by an {@link ExpertParallelBank} holding this rank's shard (the local bank is released),
 * through the layer's `setExperts` seam. Returns the banks, in layer order.
 *
 * When to use: to train a whole MoE model (e.g. `MoETransformerLM`) with E/R experts per rank;
 * build the model with the same seed on every rank first. Every rank must then run every forward
 * and backward together (evaluation included).
 *
 * @example
 * ```ts
 * const model = new MoETransformerLM(config, new Rng(seed));
 * applyExpertParallel(model, ctx.comm);
 * const vars = model.trainableVariables(); // shards included; allReduceGradients knows which
 * ```
 */
export function applyExpertParallel(target: MoELayerHost, comm: Communicator): ExpertParallelBank[] {
  return moeLayersOf('applyExpertParallel', target).map((layer) => {
    const bank = new ExpertParallelBank(layer.experts, comm);
    layer.setExperts(bank).dispose();
    return bank;
  });
}

/**
 * Runs `fn` while every expert-parallel layer of `target` holds all its experts (gathered from
 * every rank into a local bank), then puts the shards back. A collective: every rank calls it (and
 * may make `fn` a no-op off rank 0).
 *
 * When to use: to save a checkpoint of an expert-parallel model in the single-device layout, so it
 * loads anywhere (and `applyExpertParallel` shards it again on resume).
 *
 * @example
 * ```ts
 * applyExpertParallel(model, ctx.comm);
 * await withFullExperts(model, async () => {
 *   if (ctx.rank === 0) await saveCheckpoint(dir, { model, tokenizer });
 * });
 * ```
 */
export async function withFullExperts<R>(target: MoELayerHost, fn: () => R | Promise<R>): Promise<R> {
  const layers = moeLayersOf('withFullExperts', target);
  const swapped: [MoELayer, ExpertBank][] = [];
  try {
    for (const layer of layers) {
      const bank = layer.experts;
      if (!(bank instanceof DistributedExpertBank)) continue;
      layer.setExperts(bank.gather());
      swapped.push([layer, bank]);
    }
    return await fn();
  } finally {
    for (const [layer, bank] of swapped) layer.setExperts(bank).dispose();
  }
}
