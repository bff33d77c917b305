/**
 * The point-to-point transfers a schedule implies: where consecutive stages of a micro-batch live on
 * different ranks, the forward's output (activation) goes to the next stage's rank and the backward's
 * input gradient goes to the previous stage's rank.
 *
 * Letters: P ranks, N micro-batches, S stages, m a micro-batch, s a stage, F forward, B full backward,
 * Bi input-gradient backward (sends like B), W weight gradient (sends nothing), F&B an overlapped pair
 * (its forward's send, then its backward's).
 */
import type { Schedule, StageWork, Transfer } from './types';
import { checkScheduleStructure, partsOf } from './validate';

/**
 * Per rank, in the rank's op order, the sends its ops imply: after an F on stage s whose stage s+1 is
 * on another rank, an `activation`; after a B or Bi on stage s > 0 whose stage s-1 is on another
 * rank, a `gradient`.
 *
 * When to use: to drive an executor's sends, to count bytes on the wire, or to draw arrows between
 * ranks; {@link scheduleReceives} lists the same transfers from the receiving end.
 *
 * @example
 * ```ts
 * // P = 2, N = 1: stage 0 on rank 0, stage 1 on rank 1.
 * const w = (kind: 'F' | 'B', stage: number) => ({ kind, microBatch: 0, stage, chunk: 0, phase: 0 as const });
 * const sends = scheduleTransfers({
 *   kind: '1f1b', ranks: 2, microBatches: 1, stages: 2, chunks: 1, placement: [[0, 1]], phaseOf: [0],
 *   ops: [[w('F', 0), w('B', 0)], [w('F', 1), w('B', 1)]],
 * });
 * sends[0]; // [{ kind: 'activation', microBatch: 0, phase: 0, fromStage: 0, toStage: 1, fromRank: 0, toRank: 1 }]
 * sends[1]; // [{ kind: 'gradient', microBatch: 0, phase: 0, fromStage: 1, toStage: 0, fromRank: 1, toRank: 0 }]
 * ```
 */
export function scheduleTransfers(schedule: Schedule): Transfer[][] {
  checkScheduleStructure('scheduleTransfers', schedule);
  return schedule.ops.map((opsR, rank) =>
    opsR.flatMap(partsOf).flatMap((w) => {
      const to = w.kind === 'F' ? w.stage + 1 : w.kind === 'W' ? -1 : w.stage - 1;
      const t = transferBetween(schedule, w, w.stage, to);
      return t !== undefined && t.fromRank === rank ? [t] : [];
    }),
  );
}

/**
 * Per rank, in the rank's op order, the receives its ops need: before an F on stage s > 0 whose
 * stage s-1 is on another rank, an `activation`; before a B or Bi on stage s < S-1 whose stage s+1
 * is on another rank, a `gradient`. The same {@link Transfer} objects as {@link scheduleTransfers}
 * lists, seen from `toRank`.
 *
 * When to use: to drive an executor's receives (post them before the op that needs them), or to
 * check that each send has its receive.
 *
 * @example
 * ```ts
 * const w = (kind: 'F' | 'B', stage: number) => ({ kind, microBatch: 0, stage, chunk: 0, phase: 0 as const });
 * const receives = scheduleReceives({
 *   kind: '1f1b', ranks: 2, microBatches: 1, stages: 2, chunks: 1, placement: [[0, 1]], phaseOf: [0],
 *   ops: [[w('F', 0), w('B', 0)], [w('F', 1), w('B', 1)]],
 * });
 * receives[1]; // [{ kind: 'activation', microBatch: 0, phase: 0, fromStage: 0, toStage: 1, fromRank: 0, toRank: 1 }]
 * ```
 */
export function scheduleReceives(schedule: Schedule): Transfer[][] {
  checkScheduleStructure('scheduleReceives', schedule);
  return schedule.ops.map((opsR, rank) =>
    opsR.flatMap(partsOf).flatMap((w) => {
      const from = w.kind === 'F' ? w.stage - 1 : w.kind === 'W' ? -1 : w.stage + 1;
      const t = transferBetween(schedule, w, from, w.stage);
      return t !== undefined && t.toRank === rank ? [t] : [];
    }),
  );
}

/** The transfer of `w`'s micro-batch from stage `from` to stage `to`, or undefined when either is out of [0, S) or both are on one rank. */
function transferBetween(schedule: Schedule, w: StageWork, from: number, to: number): Transfer | undefined {
  const ranksS = schedule.placement[w.phase]!;
  const fromRank = ranksS[from];
  const toRank = ranksS[to];
  if (fromRank === undefined || toRank === undefined || fromRank === toRank) return undefined;
  return {
    kind: w.kind === 'F' ? 'activation' : 'gradient',
    microBatch: w.microBatch,
    phase: w.phase,
    fromStage: from,
    toStage: to,
    fromRank,
    toRank,
  };
}
