/**
 * Interleaved 1F1B (Narayanan et al. 2021), as Megatron-LM's
 * `forward_backward_pipelining_with_interleaving` orders it with its default micro-batch group size
 * (`microbatch_group_size_per_vp_stage` = P).
 *
 * Letters: P ranks, N micro-batches, v chunks (model stages) per rank, S = vP stages, r a rank,
 * c a chunk, w warm-up forwards of a rank, k a virtual micro-batch (one micro-batch through one
 * chunk), F forward, B full backward.
 *
 * Stage s = c * P + r runs on rank r as its chunk c: a micro-batch passes every rank v times.
 * Each rank runs N * v forwards and N * v backwards in Megatron's 1F1B shape over the virtual
 * micro-batches: w = (P-r-1) * 2 + (v-1) * P warm-up forwards (min with Nv), then (forward k + w,
 * backward k) steps, then the cool-down backwards. Virtual micro-batch k maps to a micro-batch and
 * a chunk through Megatron's schedule table: micro-batches in groups of P, each group through chunk
 * 0, then chunk 1, ..., then chunk v-1; backwards walk the same table with the chunks reversed.
 */
import { checkInt, invalidArgument } from '../errors';
import {
  checkLayers,
  checkSizes,
  type OneFOneBOrder,
  oneFOneBOrder,
  onePhaseSchedule,
  range,
  work,
} from './onef1b';
import type { Schedule, ScheduleOp, ScheduleRequest } from './types';

/** What {@link interleavedOneFOneB} reads from a request (a whole `ScheduleRequest` fits). */
export type InterleavedOptions = Pick<ScheduleRequest, 'ranks' | 'microBatches' | 'chunks' | 'layers'>;

/** v when the request leaves `chunks` out. */
export const DEFAULT_INTERLEAVED_CHUNKS = 2;

/**
 * Interleaved 1F1B: v chunks per rank (stage c * P + r on rank r), Megatron-LM's micro-batch
 * groups of P and warm-up of (P-r-1) * 2 + (v-1) * P forwards on rank r. N must be a multiple of P.
 *
 * When to use: to cut 1F1B's bubble by v, to (P-1)(F+B)/v (F and B of a rank's whole share of the
 * model), at the cost of v times more pipeline transfers and P + (P-1)/v micro-batches' activations
 * on rank 0 instead of P.
 *
 * @example
 * ```ts
 * const schedule = interleavedOneFOneB({ ranks: 2, microBatches: 4, chunks: 2 });
 * schedule.placement[0]; // [0, 1, 0, 1]: stages 0 and 2 on rank 0, 1 and 3 on rank 1
 * schedule.ops[0]!.length; // 16: N * v forwards and N * v backwards
 * ```
 */
export function interleavedOneFOneB(options: InterleavedOptions): Schedule {
  const fn = 'interleavedOneFOneB';
  const [P, N] = checkSizes(fn, options);
  const v = checkInt(fn, 'chunks', options.chunks ?? DEFAULT_INTERLEAVED_CHUNKS, 2);
  if (N % P !== 0) {
    const why =
      "Megatron-LM's interleaved schedule runs micro-batches in groups of microbatch_group_size_per_vp_stage = P " +
      'per chunk and needs N % P == 0';
    throw invalidArgument(fn, 'microBatches', `a multiple of \`ranks\` (${P}): ${why}`, N);
  }
  checkLayers(fn, options.layers, v * P);
  const ops = range(0, P).map((r) => rankOps(P, v, r, oneFOneBOrder(N * v, warmupOf(P, v, r))));
  return onePhaseSchedule('interleaved', P, N, v, ops);
}

/** Megatron's warm-up on rank r: (P-r-1) * 2 + (v-1) * P forwards. */
function warmupOf(P: number, v: number, r: number): number {
  return (P - r - 1) * 2 + (v - 1) * P;
}

/** The micro-batch and chunk of virtual micro-batch k (Megatron's `get_schedule_table`, groups of P). */
function virtualUnit(P: number, v: number, k: number): { microBatch: number; chunk: number } {
  const group = Math.floor(k / (P * v));
  const inGroup = k % (P * v);
  return { microBatch: group * P + (inGroup % P), chunk: Math.floor(inGroup / P) };
}

/** Rank r's ops: the 1F1B order over virtual micro-batches, backwards with the chunks reversed. */
function rankOps(P: number, v: number, r: number, order: OneFOneBOrder): ScheduleOp[] {
  const forward = (k: number): ScheduleOp => {
    const { microBatch, chunk } = virtualUnit(P, v, k);
    return work('F', microBatch, chunk * P + r, chunk);
  };
  const backward = (k: number): ScheduleOp => {
    const { microBatch, chunk } = virtualUnit(P, v, k);
    const c = v - 1 - chunk;
    return work('B', microBatch, c * P + r, c);
  };
  return [
    ...order.warmup.map(forward),
    ...order.steady.flatMap(([f, b]) => [forward(f), backward(b)]),
    ...order.cooldown.map(backward),
  ];
}
