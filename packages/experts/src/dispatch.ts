/**
 * Dispatch and combine: the permutation that makes each expert's token rows contiguous, and the
 * weighted scatter-add that brings expert outputs back to token order.
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token, S kept assignments
 * (sum over experts of their kept rows), C padded rows per expert.
 */

import type { RoutingPlan } from '@switchyard/routing';
import {
  checkDtype,
  checkShape,
  invalidArgument,
  SwitchyardError,
  type Tensor2D,
  tf,
} from '@switchyard/tensor';
import { gatherRowsByMap, type RowMap, rowMap, scatterRows } from './internal/rows';

/**
 * Where every kept (token, slot) assignment of a routing plan goes, computed once on the host from
 * the plan's integer arrays (no device read). Rows are sorted by expert, then by slot order
 * (token-major), so expert e owns rows `offsetsE[e] .. offsetsE[e + 1]`.
 */
export interface DispatchPlan {
  readonly numTokens: number;
  readonly numExperts: number;
  /** Slots per token K of the plan. */
  readonly k: number;
  /** S: kept assignments, the rows of the dispatched tensor. */
  readonly numRows: number;
  /** Token of each dispatched row [S]. */
  readonly tokenIdxS: Int32Array;
  /** Flat slot `t * K + k` of each dispatched row [S]. */
  readonly slotIdxS: Int32Array;
  /** Row offsets [E + 1]: expert e's rows are `offsetsE[e] .. offsetsE[e + 1]`. */
  readonly offsetsE: Int32Array;
  /** Kept rows per expert [E]. */
  readonly countsE: Int32Array;
  /** The plan's capacity, or null when routing was dropless. */
  readonly capacity: number | null;
  /** Rows per expert in the capacity-padded layout: the capacity, or the largest count when dropless. */
  readonly paddedCapacity: number;
}

interface DispatchMaps {
  readonly token: RowMap;
  readonly slot: RowMap;
  padded?: RowMap;
}

const maps = new WeakMap<DispatchPlan, DispatchMaps>();

/**
 * What {@link buildDispatch} reads of a routing plan: its integer assignments. A routing plan is
 * one; so is any grouping of rows by expert built by hand (e.g. rows received from other ranks, one
 * slot each, all kept).
 */
export type DispatchSource = Pick<
  RoutingPlan,
  'numTokens' | 'numExperts' | 'k' | 'expertIdx' | 'kept' | 'capacity'
>;

const FN = 'buildDispatch';

/**
 * Sorts a routing plan's kept assignments by expert (a counting sort on the host copy of the
 * indices) and records per-expert offsets; dropped assignments get no row.
 *
 * When to use: once per routing plan, before {@link dispatch}, grouped expert compute and {@link combine}.
 *
 * @example
 * ```ts
 * const plan = router.route(xTD, { training: true });
 * const d = buildDispatch(plan); // d.offsetsE[e] .. d.offsetsE[e + 1] are expert e's rows
 * ```
 */
export function buildDispatch(plan: DispatchSource): DispatchPlan {
  if (plan === null || typeof plan !== 'object') throw invalidArgument(FN, 'plan', 'a RoutingPlan', plan);
  const { numTokens: T, numExperts: E, k: K, expertIdx, kept } = plan;
  if (!Number.isInteger(E) || E < 1) throw invalidArgument(FN, 'plan.numExperts', 'an integer >= 1', E);
  if (!Number.isInteger(T) || T < 0) throw invalidArgument(FN, 'plan.numTokens', 'an integer >= 0', T);
  if (!Number.isInteger(K) || K < 1) throw invalidArgument(FN, 'plan.k', 'an integer >= 1', K);
  if (!(expertIdx instanceof Int32Array) || expertIdx.length !== T * K) {
    throw invalidArgument(
      FN,
      'plan.expertIdx',
      `an Int32Array of length T * K (${T * K})`,
      expertIdx?.length,
    );
  }
  if (!(kept instanceof Uint8Array) || kept.length !== T * K) {
    throw invalidArgument(FN, 'plan.kept', `a Uint8Array of length T * K (${T * K})`, kept?.length);
  }
  const countsE = new Int32Array(E);
  for (let a = 0; a < T * K; a++) {
    if (!kept[a]) continue;
    const e = expertIdx[a]!;
    if (!(e >= 0 && e < E))
      throw invalidArgument(FN, `plan.expertIdx[${a}]`, `an integer in [0, ${E - 1}]`, e);
    countsE[e]!++;
  }
  const offsetsE = new Int32Array(E + 1);
  for (let e = 0; e < E; e++) offsetsE[e + 1] = offsetsE[e]! + countsE[e]!;
  const S = offsetsE[E]!;
  const tokenIdxS = new Int32Array(S);
  const slotIdxS = new Int32Array(S);
  const cursor = offsetsE.slice(0, E);
  for (let a = 0; a < T * K; a++) {
    if (!kept[a]) continue;
    const s = cursor[expertIdx[a]!]!++;
    tokenIdxS[s] = Math.floor(a / K);
    slotIdxS[s] = a;
  }
  let maxCount = 0;
  for (const c of countsE) maxCount = Math.max(maxCount, c);
  const capacity = plan.capacity ?? null;
  const d: DispatchPlan = {
    numTokens: T,
    numExperts: E,
    k: K,
    numRows: S,
    tokenIdxS,
    slotIdxS,
    offsetsE,
    countsE,
    capacity,
    paddedCapacity: Math.max(capacity ?? 0, maxCount),
  };
  maps.set(d, { token: rowMap(tokenIdxS, T), slot: rowMap(slotIdxS, T * K) });
  return d;
}

function mapsOf(d: DispatchPlan, fn: string): DispatchMaps {
  const m = maps.get(d);
  if (!m) throw invalidArgument(fn, 'dispatchPlan', 'a DispatchPlan returned by buildDispatch()', d);
  return m;
}

/** Row map of the capacity-padded layout: row s of expert e goes to `e * C + (s - offsetsE[e])`. */
export function paddedRowMap(d: DispatchPlan): RowMap {
  const m = mapsOf(d, 'paddedRowMap');
  if (!m.padded) {
    const C = d.paddedCapacity;
    const dest = new Int32Array(d.numRows);
    for (let e = 0; e < d.numExperts; e++) {
      for (let s = d.offsetsE[e]!; s < d.offsetsE[e + 1]!; s++) dest[s] = e * C + (s - d.offsetsE[e]!);
    }
    m.padded = rowMap(dest, d.numExperts * C);
  }
  return m.padded;
}

/**
 * Permutes token rows so each expert's rows are contiguous: row s of the result is
 * `xTD[tokenIdxS[s]]` (a token routed to K experts appears K times; dropped assignments not at all).
 * Differentiable in `xTD`: the gradient scatter-adds rows back to their tokens.
 *
 * When to use: to feed your own grouped expert compute; {@link RoutedExperts} calls it for you.
 *
 * @example
 * ```ts
 * const xSD = dispatch(xTD, buildDispatch(plan)); // [S, D], expert 0's rows first
 * ```
 */
export function dispatch(xTD: Tensor2D, d: DispatchPlan): Tensor2D {
  const m = mapsOf(d, 'dispatch');
  checkShape('dispatch', 'xTD', xTD, [d.numTokens, null], 'TD');
  checkDtype('dispatch', 'xTD', xTD, ['float32']);
  return tf.tidy(() => gatherRowsByMap(xTD, m.token) as Tensor2D);
}

/**
 * Combine weights of the dispatched rows, [S, 1]: `topkWeightTK` at each row's (token, slot).
 * Differentiable in `topkWeightTK`.
 *
 * When to use: to scale dispatched rows yourself (e.g. before your own scatter); {@link combine} uses it.
 *
 * @example
 * ```ts
 * const wS1 = dispatchedWeights(plan.topkWeightTK, d);
 * ```
 */
export function dispatchedWeights(topkWeightTK: Tensor2D, d: DispatchPlan): Tensor2D {
  const m = mapsOf(d, 'dispatchedWeights');
  checkShape('dispatchedWeights', 'topkWeightTK', topkWeightTK, [d.numTokens, d.k], 'TK');
  checkDtype('dispatchedWeights', 'topkWeightTK', topkWeightTK, ['float32']);
  return tf.tidy(() => gatherRowsByMap(topkWeightTK.reshape([d.numTokens * d.k, 1]), m.slot) as Tensor2D);
}

/**
 * Weighted scatter-add of expert outputs back to token order:
 * `yTD[t] = sum over kept slots k of topkWeightTK[t, k] * ySD[row of (t, k)]`. The buffer starts at
 * zero and only kept assignments are added, so a dropped assignment contributes exactly zero.
 * Differentiable in `ySD` and `topkWeightTK`.
 *
 * When to use: after grouped expert compute on rows from {@link dispatch}.
 *
 * @example
 * ```ts
 * const yTD = combine(ySD, plan.topkWeightTK, d); // [T, D]
 * ```
 */
export function combine(ySD: Tensor2D, topkWeightTK: Tensor2D, d: DispatchPlan): Tensor2D {
  const m = mapsOf(d, 'combine');
  if (!(ySD instanceof tf.Tensor) || ySD.rank !== 2 || ySD.shape[0] !== d.numRows) {
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`ySD\` passed to combine() must have shape [S=${d.numRows}, D], got ${ySD instanceof tf.Tensor ? `[${ySD.shape.join(', ')}]` : String(ySD)}`,
    );
  }
  checkDtype('combine', 'ySD', ySD, ['float32']);
  return tf.tidy(() => {
    const wS1 = dispatchedWeights(topkWeightTK, d);
    return scatterRows(tf.mul(ySD, wS1), m.token) as Tensor2D;
  });
}
