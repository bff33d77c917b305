/**
 * The one-chunk pipeline schedules: GPipe, 1F1B, ZB-H1 and 1F1B with overlapped F&B pairs. Rank r
 * holds stage r (S = P, one chunk per rank); every rank's order is built from Megatron-LM's
 * non-interleaved 1F1B shape (`forward_backward_pipelining_without_interleaving`): w warm-up
 * forwards, then (forward, backward) steps, then w cool-down backwards.
 *
 * Letters: P ranks, N micro-batches, S stages (= P here), r a rank, w warm-up forwards of a rank,
 * k a unit of the order (a micro-batch here, a virtual micro-batch in interleaved 1F1B),
 * F forward, B full backward, Bi input-gradient backward, W weight gradient (B = Bi + W),
 * F&B an overlapped pair (the forward of one micro-batch with the backward of another).
 */
import { checkInt, invalidArgument } from '../errors';
import type { OverlapOp, Schedule, ScheduleKind, ScheduleOp, ScheduleRequest, StageWork } from './types';

/** What the one-chunk generators read from a request (a whole `ScheduleRequest` fits). */
export type PipelineOptions = Pick<ScheduleRequest, 'ranks' | 'microBatches' | 'layers'>;

// ---------------------------------------------------------------------------------------------------
// Shared by the generators of this file and interleaved.ts (not part of the package's public surface)

/** One rank's 1F1B order over `total` units, as three phases. @internal */
export interface OneFOneBOrder {
  /** Forwards of units 0..w-1 before the first backward. */
  readonly warmup: readonly number[];
  /** Steady state: the forward of unit k + w, then the backward of unit k. */
  readonly steady: readonly (readonly [forward: number, backward: number])[];
  /** Backwards of units total-w..total-1 after the last forward. */
  readonly cooldown: readonly number[];
}

/** Megatron's 1F1B order: min(warmup, total) forwards, then 1F1B steps, then the backwards left. @internal */
export function oneFOneBOrder(total: number, warmup: number): OneFOneBOrder {
  const w = Math.min(warmup, total);
  return {
    warmup: range(0, w),
    steady: range(0, total - w).map((k) => [k + w, k] as const),
    cooldown: range(total - w, total),
  };
}

/** [start, end) as an array. @internal */
export function range(start: number, end: number): number[] {
  return Array.from({ length: Math.max(0, end - start) }, (_, i) => start + i);
}

/** One piece of stage work of a one-phase schedule. @internal */
export function work<K extends StageWork['kind']>(
  kind: K,
  microBatch: number,
  stage: number,
  chunk = 0,
): StageWork & { readonly kind: K } {
  return { kind, microBatch, stage, chunk, phase: 0 };
}

/** Checks `ranks` (integer >= 2) and `microBatches` (integer >= 1); returns [P, N]. @internal */
export function checkSizes(
  fn: string,
  options: Pick<ScheduleRequest, 'ranks' | 'microBatches'>,
): [number, number] {
  return [checkInt(fn, 'ranks', options.ranks, 2), checkInt(fn, 'microBatches', options.microBatches, 1)];
}

/** Checks that `layers`, when given, is an integer >= 1 that the S stages divide. @internal */
export function checkLayers(fn: string, layers: number | undefined, stages: number): void {
  if (layers === undefined) return;
  checkInt(fn, 'layers', layers, 1);
  if (layers % stages !== 0) {
    throw invalidArgument(fn, 'layers', `a multiple of the stages (${stages})`, layers);
  }
}

/** A one-phase schedule from its per-rank ops; stage s runs on rank s % P. @internal */
export function onePhaseSchedule(
  kind: ScheduleKind,
  ranks: number,
  microBatches: number,
  chunks: number,
  ops: ScheduleOp[][],
): Schedule {
  const stages = ranks * chunks;
  return {
    kind,
    ranks,
    microBatches,
    stages,
    chunks,
    placement: [range(0, stages).map((s) => s % ranks)],
    phaseOf: range(0, microBatches).map(() => 0 as const),
    ops,
  };
}

// ---------------------------------------------------------------------------------------------------
// The generators

/**
 * GPipe: every rank runs the forwards of all N micro-batches, then their backwards (in micro-batch
 * order). Stage r on rank r.
 *
 * When to use: as the simplest baseline; it holds all N micro-batches' activations at once (peak N
 * per rank) for the same bubble as 1F1B, (P-1)(F+B).
 *
 * @example
 * ```ts
 * const schedule = gpipe({ ranks: 2, microBatches: 3 });
 * schedule.ops[1]!.map((op) => op.kind).join(' '); // 'F F F B B B'
 * ```
 */
export function gpipe(options: PipelineOptions): Schedule {
  const [P, N] = checkSizes('gpipe', options);
  checkLayers('gpipe', options.layers, P);
  const ops = range(0, P).map((r) => oneFOneBOps(oneFOneBOrder(N, N), r));
  return onePhaseSchedule('gpipe', P, N, 1, ops);
}

/**
 * 1F1B (PipeDream-Flush), as Megatron-LM's non-interleaved schedule: rank r runs min(P-r-1, N)
 * warm-up forwards, then one forward and one backward in turn, then the cool-down backwards.
 *
 * When to use: the default pipeline schedule; bubble (P-1)(F+B) like GPipe, but at most P-r
 * micro-batches' activations on rank r (min with N).
 *
 * @example
 * ```ts
 * const schedule = oneFOneB({ ranks: 4, microBatches: 8 });
 * schedule.ops[3]!.slice(0, 4).map((op) => op.kind).join(' '); // 'F B F B'
 * ```
 */
export function oneFOneB(options: PipelineOptions): Schedule {
  const [P, N] = checkSizes('oneFOneB', options);
  checkLayers('oneFOneB', options.layers, P);
  const ops = range(0, P).map((r) => oneFOneBOps(oneFOneBOrder(N, P - r - 1), r));
  return onePhaseSchedule('1f1b', P, N, 1, ops);
}

/** F, then (F, B) steps, then B, on stage r. */
function oneFOneBOps(order: OneFOneBOrder, r: number): ScheduleOp[] {
  return [
    ...order.warmup.map((m) => work('F', m, r)),
    ...order.steady.flatMap(([f, b]) => [work('F', f, r), work('B', b, r)]),
    ...order.cooldown.map((m) => work('B', m, r)),
  ];
}

/**
 * ZB-H1, the handcrafted schedule of Qi et al. 2023, "Zero Bubble Pipeline Parallelism": 1F1B with
 * each backward split into Bi (input gradient, on the critical path) and W (weight gradient, put
 * off). Rank r keeps at most r weight gradients pending: after each Bi it runs the oldest pending W
 * once more than r are pending, and it runs the last r Ws at the end, where 1F1B's cool-down
 * leaves rank r idle. Same warm-up as 1F1B, so the same peak activations (P-r on rank r); memory
 * (P-r) activations plus r pending Ws, the paper's (p-i+1) M_B + (i-1) M_W for 1-based stage i.
 *
 * When to use: when B can be split into Bi and W; bubble (P-1)(F+B-2W) instead of (P-1)(F+B),
 * at 1F1B's activation memory plus up to r pending weight gradients on rank r.
 *
 * @example
 * ```ts
 * const schedule = zbH1({ ranks: 2, microBatches: 3 });
 * schedule.ops[1]!.map((op) => op.kind).join(' '); // 'F Bi F Bi W F Bi W W'
 * ```
 */
export function zbH1(options: PipelineOptions): Schedule {
  const [P, N] = checkSizes('zbH1', options);
  checkLayers('zbH1', options.layers, P);
  const ops = range(0, P).map((r) => zbH1Ops(oneFOneBOrder(N, P - r - 1), r));
  return onePhaseSchedule('zb-h1', P, N, 1, ops);
}

/** 1F1B with B -> Bi, each W put off until more than r are pending, the rest at the end. */
function zbH1Ops(order: OneFOneBOrder, r: number): ScheduleOp[] {
  const pendingW: number[] = [];
  const backward = (m: number): ScheduleOp[] => {
    pendingW.push(m);
    const ws = pendingW.length > r ? [pendingW.shift()!] : [];
    return [work('Bi', m, r), ...ws.map((oldest) => work('W', oldest, r))];
  };
  const ops: ScheduleOp[] = [
    ...order.warmup.map((m) => work('F', m, r)),
    ...order.steady.flatMap(([f, b]) => [work('F', f, r), ...backward(b)]),
    ...order.cooldown.flatMap(backward),
  ];
  return [...ops, ...pendingW.map((m) => work('W', m, r))];
}

/**
 * 1F1B with overlapped pairs, as Megatron-LM's combined 1F1B for expert-parallel all-to-all overlap
 * (`combined_1f1b.py`, `overlap_moe_expert_parallel_comm`): each steady-state step runs the forward
 * of micro-batch k + w and the backward of micro-batch k as one F&B op, so that one's all-to-all
 * hides behind the other's compute. Megatron runs this on its interleaved schedule only; this is
 * that schedule with one chunk per rank: rank r warms up with w = (P-r-1) * 2 + 1 forwards (min
 * with N), the interleaved warm-up for v = 1 plus the extra forward of `get_pp_rank_microbatches`
 * ("to ensure the forward and backward computations are independent": on the last rank F(k+1)
 * pairs with B(k)). A pair needs its forward's input from rank r-1 and its backward's gradient from
 * rank r+1, so neighbouring warm-ups must differ by 2: with 1F1B's difference of 1 every pair
 * waits for its neighbour's and the pipeline runs at half speed.
 *
 * When to use: to model MoE training where the EP dispatch/combine all-to-all is hidden inside
 * F&B pairs (give the replay an `FB` cost below F + B: for N >= 2P and B <= FB <= F + B the step
 * takes N * FB + (P-1)(F+B) + (F+B-FB)); it holds up to 2(P-r) micro-batches' activations on
 * rank r, twice 1F1B's.
 *
 * @example
 * ```ts
 * const schedule = oneFOneBOverlap({ ranks: 2, microBatches: 4 });
 * schedule.ops[1]!.map((op) => op.kind).join(' '); // 'F F&B F&B F&B B'
 * ```
 */
export function oneFOneBOverlap(options: PipelineOptions): Schedule {
  const [P, N] = checkSizes('oneFOneBOverlap', options);
  checkLayers('oneFOneBOverlap', options.layers, P);
  const ops = range(0, P).map((r) => overlapOps(oneFOneBOrder(N, (P - r - 1) * 2 + 1), r));
  return onePhaseSchedule('1f1b-overlap', P, N, 1, ops);
}

/** F, then F&B pairs, then B, on stage r. */
function overlapOps(order: OneFOneBOrder, r: number): ScheduleOp[] {
  const pair = ([f, b]: readonly [number, number]): OverlapOp => ({
    kind: 'F&B',
    forward: work('F', f, r),
    backward: work('B', b, r),
  });
  return [
    ...order.warmup.map((m) => work('F', m, r)),
    ...order.steady.map(pair),
    ...order.cooldown.map((m) => work('B', m, r)),
  ];
}
