/**
 * DualPipe and DualPipeV, op for op as deepseek-ai/DualPipe's `step()` orders them
 * (`dualpipe/dualpipe.py` and `dualpipe/dualpipev.py`, commit 3da1bbe).
 *
 * Letters: P ranks, N micro-batches, S stages, h = half of the pipeline a rank's position is
 * measured against (P/2 for DualPipe, P for DualPipeV), hr = the rank's distance from the nearer
 * end (min(r, P-1-r) for DualPipe, r for DualPipeV), n = micro-batches per side (N/2, N).
 *
 * Every rank holds two stage copies, the reference's "phase" 0 and 1 (here: its side). The step
 * lists below use the reference's numbering: in DualPipe the second half of the ranks flips it
 * (`phase ^= is_in_second_half`), so their side 0 is direction 1; in DualPipeV side 0 is the down
 * leg (stages 0..P-1) and side 1 the up leg (stages P..2P-1) on every rank.
 *
 * Backwards the reference runs with `enable_zb=True` put their weight gradient in a FIFO queue
 * (`WeightGradStore`) that `_weight_chunk()` pops later: those are `Bi` here, and each `W` names
 * the oldest pending `Bi` of its rank.
 */
import { checkInt, invalidArgument, PlanError } from '../errors';
import type { OverlapOp, Schedule, ScheduleOp, ScheduleRequest, StageWork } from './types';

/** What {@link dualPipe} and {@link dualPipeV} read from a request (a whole `ScheduleRequest` fits). */
export type DualPipeOptions = Pick<ScheduleRequest, 'ranks' | 'microBatches' | 'layers'>;

/**
 * Loop counts of the eight steps of one rank, named as in the reference's `step()`.
 *
 * When to use: to read or test the shape of a rank's schedule without walking its ops.
 */
export interface DualPipeSteps {
  /** Step 1, `nF0`: forwards of side 0 that fill the pipeline, 2(h-hr-1). */
  readonly nF0: number;
  /** Step 2, `nF0F1`: pairs [F0, F1], hr+1. */
  readonly nF0F1: number;
  /** Step 3, `nB1W1F1`: [B1 input-grad, W, F1] (zero bubble), h-hr-1. */
  readonly nB1W1F1: number;
  /** Step 4, `nF0B1F1B0` (main step): pairs [F0&B1, F1&B0], n-2h+hr+1. */
  readonly nF0B1F1B0: number;
  /** Step 5, `nB1F1B0`: [B1, F1&B0], h-hr-1. */
  readonly nB1F1B0: number;
  /** Step 6, `nB1B0`: [B1, B0], the second half of them input-grad only, hr+1. */
  readonly nB1B0: number;
  /** Step 7, `nWB0`: [W, B0 input-grad], h-hr-1. */
  readonly nWB0: number;
  /** Step 8, `nW`: the remaining weight gradients, hr+1. */
  readonly nW: number;
}

/**
 * The eight loop counts of one rank.
 *
 * When to use: inside the generators; in tests, to compare with the SPEC's step formulas.
 *
 * @param half h: P/2 for DualPipe, P for DualPipeV.
 * @param halfRank hr: min(r, P-1-r) for DualPipe, r for DualPipeV.
 * @param perSide n: micro-batches through each stage copy, N/2 for DualPipe, N for DualPipeV.
 *
 * @example
 * ```ts
 * dualPipeSteps(4, 0, 10).nF0; // 6: rank 0 of DualPipe on 8 ranks fills with six forwards
 * ```
 */
export function dualPipeSteps(half: number, halfRank: number, perSide: number): DualPipeSteps {
  const outer = half - halfRank - 1;
  const inner = halfRank + 1;
  return {
    nF0: 2 * outer,
    nF0F1: inner,
    nB1W1F1: outer,
    nF0B1F1B0: perSide - 2 * half + halfRank + 1,
    nB1F1B0: outer,
    nB1B0: inner,
    nWB0: outer,
    nW: inner,
  };
}

/** A rank's two stage copies, 0 and 1 as the reference's step list numbers them. */
type Side = 0 | 1;

/** Where the work of a side runs: its stage, chunk and phase, and the micro-batch of its k-th pass. */
interface SidePlace {
  readonly stage: number;
  readonly chunk: number;
  readonly phase: 0 | 1;
  readonly microBatchOffset: number;
}

/**
 * Records one rank's ops: counts forwards and backwards per side (the reference's
 * `current_f_chunk_id` / `current_b_chunk_id`) and keeps the FIFO of pending weight gradients.
 */
class RankOps {
  readonly ops: ScheduleOp[] = [];
  private readonly forwards = [0, 0];
  private readonly backwards = [0, 0];
  private readonly pendingW: StageWork[] = [];

  constructor(private readonly places: readonly [SidePlace, SidePlace]) {}

  F(side: Side): void {
    this.ops.push(this.forward(side));
  }

  /** A backward; `zeroBubble` (the reference's `enable_zb`) leaves its weight gradient for a later W. */
  B(side: Side, zeroBubble = false): void {
    const work = this.backward(side, zeroBubble ? 'Bi' : 'B');
    if (zeroBubble) this.pendingW.push(work);
    this.ops.push(work);
  }

  W(): void {
    const pending = this.pendingW.shift();
    if (pending === undefined) throw new PlanError('SCHEDULE_INVALID', 'dualPipe(): a W with no pending Bi');
    this.ops.push({ ...pending, kind: 'W' });
  }

  /** The overlapped pair `_forward_backward_chunk(f, b)`: forward of side f with backward of side b. */
  FB(f: Side, b: Side): void {
    const pair: OverlapOp = {
      kind: 'F&B',
      forward: this.forward(f),
      backward: this.backward(b, 'B'),
    };
    this.ops.push(pair);
  }

  /** Checks that every Bi got its W (the reference asserts `WeightGradStore.funcs_queue.empty()`). */
  finish(): ScheduleOp[] {
    if (this.pendingW.length > 0) {
      throw new PlanError('SCHEDULE_INVALID', `dualPipe(): ${this.pendingW.length} Bi left without a W`);
    }
    return this.ops;
  }

  private forward(side: Side): StageWork & { readonly kind: 'F' } {
    const k = this.forwards[side]!;
    this.forwards[side] = k + 1;
    return { kind: 'F', ...this.work(side, k) };
  }

  private backward<K extends 'B' | 'Bi'>(side: Side, kind: K): StageWork & { readonly kind: K } {
    const k = this.backwards[side]!;
    this.backwards[side] = k + 1;
    return { kind, ...this.work(side, k) };
  }

  private work(side: Side, k: number): Omit<StageWork, 'kind'> {
    const place = this.places[side];
    return {
      microBatch: place.microBatchOffset + k,
      stage: place.stage,
      chunk: place.chunk,
      phase: place.phase,
    };
  }
}

/**
 * One rank's ops: the reference's `step()` with its eight loops. The middle rank (hr = h-1) runs
 * the first F0 and B1 of step 4 one after the other instead of overlapped ("to further reduce
 * bubble size"); step 6 turns on zero bubble half-way (before B1 when hr is odd, between B1 and B0
 * when hr is even).
 */
function rankOps(steps: DualPipeSteps, halfRank: number, isMiddle: boolean, places: [SidePlace, SidePlace]) {
  const r = new RankOps(places);
  // Step 1: nF0
  for (let i = 0; i < steps.nF0; i++) r.F(0);
  // Step 2: nF0F1
  for (let i = 0; i < steps.nF0F1; i++) {
    r.F(0);
    r.F(1);
  }
  // Step 3: nB1W1F1 (zero bubble)
  for (let i = 0; i < steps.nB1W1F1; i++) {
    r.B(1, true);
    r.W();
    r.F(1);
  }
  // Step 4 (main step): nF0B1F1B0
  for (let i = 0; i < steps.nF0B1F1B0; i++) {
    if (i === 0 && isMiddle) {
      r.F(0);
      r.B(1);
    } else {
      r.FB(0, 1);
    }
    r.FB(1, 0);
  }
  // Step 5: nB1F1B0
  for (let i = 0; i < steps.nB1F1B0; i++) {
    r.B(1);
    r.FB(1, 0);
  }
  // Step 6: nB1B0 (the second half with zero bubble)
  let zeroBubble = false;
  for (let i = 0; i < steps.nB1B0; i++) {
    const halfway = i === Math.floor(steps.nB1B0 / 2);
    if (halfway && halfRank % 2 === 1) zeroBubble = true;
    r.B(1, zeroBubble);
    if (halfway && halfRank % 2 === 0) zeroBubble = true;
    r.B(0, zeroBubble);
  }
  // Step 7: nWB0 (zero bubble)
  for (let i = 0; i < steps.nWB0; i++) {
    r.W();
    r.B(0, true);
  }
  // Step 8: nW
  for (let i = 0; i < steps.nW; i++) r.W();
  return r.finish();
}

function checkLayers(fn: string, layers: number | undefined, stages: number): void {
  if (layers === undefined) return;
  checkInt(fn, 'layers', layers, 1);
  if (layers % stages !== 0)
    throw invalidArgument(fn, 'layers', `a multiple of the ${stages} stages`, layers);
}

/**
 * The DualPipe schedule: P ranks, micro-batches entering from both ends, overlapped F&B pairs in
 * the steady state and zero-bubble weight gradients in the ramps.
 *
 * When to use: bidirectional pipeline parallelism with two copies of every stage (2x parameters),
 * a bubble of (P/2-1)(F&B + B - 3W) and P+1 in-flight activations per rank. P must be even and N
 * even and >= 2P. Rank r holds stage r of direction 0 and stage P-1-r of direction 1; micro-batches
 * 0..N/2-1 run in direction 0 and N/2..N-1 in direction 1; `chunk` and `phase` are the direction.
 *
 * @example
 * ```ts
 * const schedule = dualPipe({ ranks: 4, microBatches: 8 });
 * schedule.ops[0]!.length; // 16 ops on rank 0
 * ```
 */
export function dualPipe(options: DualPipeOptions): Schedule {
  const fn = 'dualPipe';
  const P = checkInt(fn, 'ranks', options.ranks, 2);
  if (P % 2 !== 0) throw invalidArgument(fn, 'ranks', 'even (DualPipe pairs rank r with rank P-1-r)', P);
  const N = checkInt(fn, 'microBatches', options.microBatches, 1);
  if (N % 2 !== 0 || N < 2 * P) {
    throw invalidArgument(fn, 'microBatches', `even and >= 2 * ranks (${2 * P})`, N);
  }
  checkLayers(fn, options.layers, P);
  const half = P / 2;
  const perSide = N / 2;
  const ops = Array.from({ length: P }, (_, rank) => {
    const halfRank = Math.min(rank, P - 1 - rank);
    // The second half of the ranks numbers the directions the other way round.
    const flip = rank >= half ? 1 : 0;
    const place = (side: Side): SidePlace => {
      const direction = (side ^ flip) as 0 | 1;
      return {
        stage: direction === 0 ? rank : P - 1 - rank,
        chunk: direction,
        phase: direction,
        microBatchOffset: direction * perSide,
      };
    };
    return rankOps(dualPipeSteps(half, halfRank, perSide), halfRank, halfRank === half - 1, [
      place(0),
      place(1),
    ]);
  });
  return {
    kind: 'dualpipe',
    ranks: P,
    microBatches: N,
    stages: P,
    chunks: 2,
    placement: [Array.from({ length: P }, (_, s) => s), Array.from({ length: P }, (_, s) => P - 1 - s)],
    phaseOf: Array.from({ length: N }, (_, m) => (m < perSide ? 0 : 1)),
    ops,
  };
}

/**
 * The DualPipeV schedule: DualPipe cut in half into a V on P ranks with 2P stages. Stage s runs on
 * rank s for s < P (chunk 0, the down leg) and on rank 2P-1-s otherwise (chunk 1, the up leg), so
 * rank 0 holds the first and the last stage.
 *
 * When to use: DualPipe's bubble and memory on half the devices (P/2 devices for the same stage
 * count PP = 2P), without DualPipe's two parameter copies per stage. N must be >= 2P (the
 * reference asks no more: N may be odd). Every micro-batch has phase 0.
 *
 * @example
 * ```ts
 * const schedule = dualPipeV({ ranks: 4, microBatches: 10 }); // 8 stages on 4 ranks
 * schedule.stages; // 8
 * ```
 */
export function dualPipeV(options: DualPipeOptions): Schedule {
  const fn = 'dualPipeV';
  const P = checkInt(fn, 'ranks', options.ranks, 1);
  const N = checkInt(fn, 'microBatches', options.microBatches, 1);
  if (N < 2 * P) throw invalidArgument(fn, 'microBatches', `>= 2 * ranks (${2 * P})`, N);
  const S = 2 * P;
  checkLayers(fn, options.layers, S);
  const ops = Array.from({ length: P }, (_, rank) => {
    const place = (leg: Side): SidePlace => ({
      stage: leg === 0 ? rank : S - 1 - rank,
      chunk: leg,
      phase: 0,
      microBatchOffset: 0,
    });
    // The reference's half is the whole rank count and its middle rank the last one.
    return rankOps(dualPipeSteps(P, rank, N), rank, rank === P - 1, [place(0), place(1)]);
  });
  return {
    kind: 'dualpipev',
    ranks: P,
    microBatches: N,
    stages: S,
    chunks: 2,
    placement: [Array.from({ length: S }, (_, s) => (s < P ? s : S - 1 - s))],
    phaseOf: Array.from({ length: N }, () => 0 as const),
    ops,
  };
}
