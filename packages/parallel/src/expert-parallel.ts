/**
 * Expert parallelism: each of R ranks owns E/R of an MoE layer's experts. Forward on every rank:
 * route the local tokens, exchange per-expert counts, send each token copy to the rank owning its
 * expert (allToAllV of rows), run the local experts grouped per expert, send the results back (the
 * reverse allToAllV) and combine them with the gate weights. Backward mirrors it: the gradient of
 * each row exchange is the exchange in the other direction. Router and shared experts stay
 * replicated (data parallel).
 *
 * Shape letters: T local tokens, D model width, E experts, L = E / R experts per rank, S dispatched
 * rows of the local tokens, M rows received for the local experts, N rows sent.
 */
import {
  buildDispatch,
  combine,
  dispatch,
  type ExpertWeights,
  groupedExperts,
  type MoEForwardResult,
  MoELayer,
  type ResolvedComputeMode,
  resolveComputeMode,
} from '@switchyard/experts';
import type { RouteOptions, RoutingPlan } from '@switchyard/routing';
import {
  checkDtype,
  checkShape,
  disposeAll,
  invalidArgument,
  SwitchyardError,
  type Tensor2D,
  type Tensor3D,
  tf,
} from '@switchyard/tensor';
import { markShard } from './data-parallel';
import type { Communicator } from './types';

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
  const flat = new Float32Array(M * D);
  off = 0;
  for (const b of recv) {
    flat.set(b, off);
    off += b.length;
  }
  return [tf.tensor2d(flat, [M, D], 'float32'), recvRows];
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
  const op = tf.customGrad(((x: tf.Tensor) => {
    const [value, got] = exchangeRows(comm, x, rows, D);
    recvRows = got;
    return {
      value,
      gradFunc: (dy: tf.Tensor) => {
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
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  const yMD = (op as unknown as (x: tf.Tensor) => Tensor2D)(xND);
  return { yMD, recvRows };
}

/** Options of {@link ExpertParallelMoE}. */
export interface ExpertParallelConfig {
  /** Dispose the layer's full expert weights once this rank's shard is copied (the layer then runs only through the expert-parallel forward). */
  readonly releaseFullExperts: boolean;
}

/** Defaults of {@link ExpertParallelConfig}: release the full expert weights. */
export const defaultExpertParallelConfig: ExpertParallelConfig = { releaseFullExperts: true };

/** Names of the stacked expert weights: `w1` [E, D, F], `w3` [E, D, F] (SwiGLU only), `w2` [E, F, D]. */
export type ExpertWeightName = 'w1' | 'w3' | 'w2';

/**
 * An MoE layer whose routed experts are split over the ranks of a communicator: rank r owns experts
 * `[r L, (r + 1) L)` with L = E / R (variables `experts.w1` [L, D, F], `experts.w3`, `experts.w2`
 * [L, F, D], marked as shards), while the router and shared experts are the wrapped layer's own
 * (replicated). {@link ExpertParallelMoE.forward} has the layer's signature and result; every rank
 * must call it (and differentiate it) together.
 *
 * When to use: to train an MoE layer with E/R experts per rank; pair it with
 * {@link allReduceGradients}, which averages the replicated gradients and leaves the shards local.
 * On one rank it computes exactly what the layer computes.
 *
 * @example
 * ```ts
 * const layer = new MoELayer(config, new Rng(seed)); // same seed on every rank
 * const ep = new ExpertParallelMoE(layer, ctx.comm);
 * const { value, grads } = tf.variableGrads(() => lossOf(ep.forward(xTD, { training: true }).yTD));
 * optimizer.applyGradients(allReduceGradients(ctx.comm, grads, Object.values(ep.variables)));
 * ```
 */
export class ExpertParallelMoE {
  readonly layer: MoELayer;
  readonly comm: Communicator;
  readonly numExperts: number;
  /** L = E / R experts on each rank. */
  readonly expertsPerRank: number;
  /** Global index of this rank's first expert. */
  readonly firstExpert: number;
  /** Trainable variables by the layer's names: `router.*` and `shared.*` replicated, `experts.*` this rank's shard. */
  readonly variables: Readonly<Record<string, tf.Variable>>;
  private readonly shard: Partial<Record<ExpertWeightName, tf.Variable>>;
  private disposed = false;

  constructor(layer: MoELayer, comm: Communicator, config: Partial<ExpertParallelConfig> = {}) {
    const fn = 'ExpertParallelMoE';
    if (!(layer instanceof MoELayer)) throw invalidArgument(fn, 'layer', 'an MoELayer', layer);
    if (comm === null || typeof comm !== 'object' || typeof comm.allToAllV !== 'function')
      throw invalidArgument(fn, 'comm', 'a Communicator', comm);
    const c = { ...defaultExpertParallelConfig, ...config };
    const E = layer.experts.numExperts;
    const R = comm.worldSize;
    if (E % R !== 0) {
      throw invalidArgument(
        fn,
        'comm',
        `a communicator whose world size divides numExperts (${E})`,
        `world size ${R}`,
      );
    }
    this.layer = layer;
    this.comm = comm;
    this.numExperts = E;
    this.expertsPerRank = E / R;
    this.firstExpert = comm.rank * this.expertsPerRank;
    const L = this.expertsPerRank;
    const shard: Partial<Record<ExpertWeightName, tf.Variable>> = {};
    for (const [name, full] of Object.entries(layer.experts.variables) as [ExpertWeightName, tf.Variable][]) {
      const [, a, b] = full.shape as [number, number, number];
      const v = tf.tidy(() => tf.variable(tf.slice(full, [this.firstExpert, 0, 0], [L, a, b]), true));
      markShard(v);
      shard[name] = v;
    }
    this.shard = shard;
    const vars: Record<string, tf.Variable> = {};
    for (const [name, v] of Object.entries(layer.variables)) {
      if (!name.startsWith('experts.')) vars[name] = v;
    }
    for (const [name, v] of Object.entries(shard)) vars[`experts.${name}`] = v;
    this.variables = vars;
    if (c.releaseFullExperts) layer.experts.dispose();
  }

  /**
   * The layer's forward on this rank's tokens, with the routed experts computed where they live.
   * Returns the output [T, D], this rank's routing plan (dispose it like the layer's) and the compute path.
   */
  forward(xTD: Tensor2D, options: RouteOptions): MoEForwardResult {
    if (this.disposed)
      throw new SwitchyardError('STATE_INVALID', 'ExpertParallelMoE was disposed; it cannot run forward()');
    const fn = 'ExpertParallelMoE.forward';
    if (!(xTD instanceof tf.Tensor))
      throw invalidArgument(fn, 'xTD', `a 2-D float32 tensor [T, ${this.layer.dModel}]`, xTD);
    checkShape(fn, 'xTD', xTD, [null, this.layer.dModel], 'TD');
    checkDtype(fn, 'xTD', xTD, ['float32']);
    const R = this.comm.worldSize;
    const L = this.expertsPerRank;
    const plan = this.layer.router.route(xTD, options);
    try {
      const d = buildDispatch(plan);
      // Rows are sorted by expert and each rank owns a contiguous range of experts: rank j's rows are contiguous.
      const sendRows = new Int32Array(R);
      const sendCounts: Int32Array[] = [];
      for (let j = 0; j < R; j++) {
        sendRows[j] = d.offsetsE[(j + 1) * L]! - d.offsetsE[j * L]!;
        sendCounts.push(d.countsE.slice(j * L, (j + 1) * L));
      }
      const recvCountsRL = this.comm.allToAllV(sendCounts); // [R][L]: rows of each local expert from each rank
      const computeMode = resolveComputeMode(this.layer.computeMode, null);
      const yTD = tf.tidy(() => {
        const xSD = dispatch(xTD, d);
        const { yMD: xMD, recvRows } = allToAllRows(this.comm, xSD, sendRows);
        recvCountsRL.forEach((c, s) => {
          const rows = c.reduce((a, b) => a + b, 0);
          if (rows !== recvRows[s]) {
            throw new SwitchyardError(
              'STATE_INVALID',
              `${fn}: rank ${s} announced ${rows} rows for rank ${this.comm.rank} but sent ${recvRows[s]}`,
            );
          }
        });
        const yMD = this.localExperts(xMD, recvCountsRL, computeMode);
        const { yMD: ySD } = allToAllRows(this.comm, yMD, recvRows);
        const routed = combine(ySD, plan.topkWeightTK, d);
        return this.layer.shared ? (tf.add(routed, this.layer.shared.forward(xTD)) as Tensor2D) : routed;
      });
      return { yTD, plan, computeMode };
    } catch (e) {
      disposeAll(Object.values(plan));
      throw e;
    }
  }

  /**
   * The full stacked expert weights ([E, D, F] / [E, F, D]), gathered from every rank's shard.
   * A collective: every rank calls it.
   *
   * @example
   * ```ts
   * const { w1, w2 } = ep.gatherExpertWeights(); // e.g. to save a checkpoint on rank 0
   * ```
   */
  gatherExpertWeights(): Partial<Record<ExpertWeightName, Tensor3D>> {
    const out: Partial<Record<ExpertWeightName, Tensor3D>> = {};
    for (const [name, v] of Object.entries(this.shard) as [ExpertWeightName, tf.Variable][]) {
      const parts = this.comm.allGather(v.dataSync() as Float32Array);
      const flat = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
      let off = 0;
      for (const p of parts) {
        flat.set(p, off);
        off += p.length;
      }
      const [, a, b] = v.shape as [number, number, number];
      out[name] = tf.tensor3d(flat, [this.numExperts, a, b], 'float32');
    }
    return out;
  }

  /** Releases this rank's expert shard (the wrapped layer keeps its router and shared experts). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of Object.values(this.shard)) v?.dispose();
  }

  private weights(): ExpertWeights {
    const s = this.shard;
    return {
      w1EDF: s.w1 as unknown as Tensor3D,
      w2EFD: s.w2 as unknown as Tensor3D,
      ...(s.w3 ? { w3EDF: s.w3 as unknown as Tensor3D } : {}),
    };
  }

  /** Runs the local experts on the received rows (source-major, expert-minor), returning rows in the same order. */
  private localExperts(
    xMD: Tensor2D,
    recvCountsRL: readonly Int32Array[],
    mode: ResolvedComputeMode,
  ): Tensor2D {
    const M = xMD.shape[0];
    // With no rows the experts add nothing, but the received tensor must stay on the tape so this
    // rank joins the backward exchange like every other rank.
    if (M === 0) return tf.mul(xMD, 0) as Tensor2D;
    const L = this.expertsPerRank;
    const localIdxM = new Int32Array(M);
    let p = 0;
    for (const counts of recvCountsRL)
      for (let e = 0; e < L; e++) for (let c = 0; c < counts[e]!; c++) localIdxM[p++] = e;
    const grouping = buildDispatch({
      numTokens: M,
      numExperts: L,
      k: 1,
      expertIdx: localIdxM,
      kept: new Uint8Array(M).fill(1),
      capacity: null,
    } as unknown as RoutingPlan);
    const xGD = dispatch(xMD, grouping); // rows grouped by local expert
    const yGD = groupedExperts(xGD, grouping, this.weights(), this.layer.experts.activation, mode);
    return combine(yGD, tf.ones([M, 1]) as Tensor2D, grouping); // back to the received order
  }
}

/** Wrappers installed into their layer by {@link applyExpertParallel} (the layer's `variables` are theirs). */
const installed = new WeakSet<ExpertParallelMoE>();

/** Every MoELayer reachable from `root` through its own fields (arrays and plain objects), in field order. */
function findMoELayers(root: object): MoELayer[] {
  const found: MoELayer[] = [];
  const seen = new Set<unknown>();
  const visit = (v: unknown, depth: number): void => {
    if (v === null || typeof v !== 'object' || seen.has(v) || depth > 8) return;
    seen.add(v);
    if (v instanceof MoELayer) {
      found.push(v);
      return;
    }
    if (v instanceof tf.Tensor || ArrayBuffer.isView(v) || v instanceof Map || v instanceof Set) return;
    const proto = Object.getPrototypeOf(v);
    if (depth > 0 && !Array.isArray(v) && proto !== Object.prototype && proto !== null) return;
    for (const x of Array.isArray(v) ? v : Object.values(v)) visit(x, depth + 1);
  };
  visit(root, 0);
  return found;
}

/**
 * Makes every MoELayer of a model (or a single layer) expert-parallel in place: each layer's
 * `forward` runs the expert-parallel forward, its `variables` become the replicated router/shared
 * weights plus this rank's expert shard, and its `dispose` also releases the shard. Layers are found
 * through the model's own fields (arrays and plain objects of blocks). Returns the wrappers, in
 * layer order.
 *
 * When to use: to train a whole MoE model (e.g. `MoETransformerLM`) with E/R experts per rank
 * without changing its code; build the model with the same seed on every rank first.
 * Every rank must then run every forward and backward together (evaluation included).
 *
 * @example
 * ```ts
 * const model = new MoETransformerLM(config, new Rng(seed));
 * applyExpertParallel(model, ctx.comm);
 * const vars = model.trainableVariables(); // shards included; allReduceGradients knows which
 * ```
 */
export function applyExpertParallel(
  root: object,
  comm: Communicator,
  config: Partial<ExpertParallelConfig> = {},
): ExpertParallelMoE[] {
  if (root === null || typeof root !== 'object')
    throw invalidArgument('applyExpertParallel', 'root', 'a model or an MoELayer', root);
  const layers = findMoELayers(root);
  return layers.map((layer) => {
    const ep = new ExpertParallelMoE(layer, comm, { ...config, releaseFullExperts: true });
    const ownDispose = layer.dispose.bind(layer);
    const patch = (key: string, value: unknown) =>
      Object.defineProperty(layer, key, { value, configurable: true, writable: true, enumerable: false });
    patch('forward', (xTD: Tensor2D, options: RouteOptions) => ep.forward(xTD, options));
    patch('variables', ep.variables);
    patch('dispose', () => {
      ep.dispose();
      ownDispose();
    });
    installed.add(ep);
    return ep;
  });
}

/**
 * Runs `fn` while the layers made expert-parallel by {@link applyExpertParallel} expose full expert
 * weights ([E, D, F] gathered from every rank) instead of this rank's shard, then puts the shards
 * back. A collective: every rank calls it (and may make `fn` a no-op off rank 0).
 *
 * When to use: to save a checkpoint of an expert-parallel model in the single-device layout, so it
 * loads anywhere (and `applyExpertParallel` shards it again on resume).
 *
 * @example
 * ```ts
 * const eps = applyExpertParallel(model, ctx.comm);
 * await withFullExperts(eps, async () => {
 *   if (ctx.rank === 0) await saveCheckpoint(dir, { model, tokenizer });
 * });
 * ```
 */
export async function withFullExperts<R>(
  eps: readonly ExpertParallelMoE[],
  fn: () => R | Promise<R>,
): Promise<R> {
  eps.forEach((ep, i) => {
    if (!(ep instanceof ExpertParallelMoE) || !installed.has(ep)) {
      throw invalidArgument(
        'withFullExperts',
        `eps[${i}]`,
        'a wrapper returned by applyExpertParallel()',
        ep,
      );
    }
  });
  const restore: (() => void)[] = [];
  try {
    for (const ep of eps) {
      const full = ep.gatherExpertWeights();
      const vars: Record<string, tf.Variable> = {};
      const made: tf.Variable[] = [];
      for (const [name, v] of Object.entries(ep.variables)) {
        const key = name.startsWith('experts.')
          ? (name.slice('experts.'.length) as ExpertWeightName)
          : undefined;
        if (key && full[key]) {
          const fv = tf.variable(full[key]!, false);
          full[key]!.dispose();
          made.push(fv);
          vars[name] = fv;
        } else vars[name] = v;
      }
      Object.defineProperty(ep.layer, 'variables', {
        value: vars,
        configurable: true,
        writable: true,
        enumerable: false,
      });
      restore.push(() => {
        Object.defineProperty(ep.layer, 'variables', {
          value: ep.variables,
          configurable: true,
          writable: true,
          enumerable: false,
        });
        for (const v of made) v.dispose();
      });
    }
    return await fn();
  } finally {
    for (const r of restore) r();
  }
}
