/**
 * The pipeline replay with a duration per op: the same rules as `validateSchedule`'s replay (each
 * rank runs its ops in order; an op starts when its rank is free and its inputs have arrived, plus
 * a transfer time when the producer ran on another rank), but an op's duration may depend on its
 * stage (the cluster simulator costs each stage from its own layers). With the same duration for
 * every op of a kind it gives validateSchedule's makespan (tested).
 *
 * Letters: P ranks, N micro-batches, S stages, m micro-batch, s stage.
 */
import { PlanError } from '../errors';
import type { Schedule, ScheduleOp, StageWork } from '../schedule/types';
import { partsOf } from '../schedule/validate';

/** One op of a rank's replay. */
export interface ReplayedOp {
  readonly op: ScheduleOp;
  readonly start: number;
  readonly end: number;
}

/**
 * Replays `schedule` with `duration(op, rank)` seconds per op and `transfer` seconds per cross-rank
 * dependency; returns each rank's timeline. The schedule must be valid (run `validateSchedule` first).
 *
 * When to use: inside the cluster simulator, after per-stage op costs are known.
 *
 * @example
 * ```ts
 * const s = generateSchedule({ kind: '1f1b', ranks: 4, microBatches: 8 });
 * const t = replayPipeline(s, (op) => (op.kind === 'F' ? 1 : 2), 0);
 * Math.max(...t.map((r) => r.at(-1)!.end)); // 33 = (N + P - 1)(F + B)
 * ```
 */
export function replayPipeline(
  schedule: Schedule,
  duration: (op: ScheduleOp, rank: number) => number,
  transfer: number,
): ReplayedOp[][] {
  const S = schedule.stages;
  const endF = new Float64Array(schedule.microBatches * S).fill(-1);
  const endBack = new Float64Array(schedule.microBatches * S).fill(-1);
  const rankOf = (m: number, s: number) => schedule.placement[schedule.phaseOf[m]!]![s]!;
  const ready = (ends: Float64Array, m: number, s: number, rank: number): number => {
    const e = ends[m * S + s]!;
    if (e < 0) return -1;
    return rankOf(m, s) === rank ? e : e + transfer;
  };
  const depsReady = (w: StageWork, rank: number): number => {
    const { microBatch: m, stage: s } = w;
    if (w.kind === 'F') return s > 0 ? ready(endF, m, s - 1, rank) : 0;
    if (w.kind === 'W') return ready(endBack, m, s, rank);
    const f = ready(endF, m, s, rank);
    if (f < 0 || s === S - 1) return f;
    const b = ready(endBack, m, s + 1, rank);
    return b < 0 ? -1 : Math.max(f, b);
  };
  const timelines: ReplayedOp[][] = schedule.ops.map(() => []);
  let progressed = true;
  while (progressed) {
    progressed = false;
    for (let rank = 0; rank < schedule.ops.length; rank++) {
      const opsR = schedule.ops[rank]!;
      const timeline = timelines[rank]!;
      for (let i = timeline.length; i < opsR.length; i++) {
        const op = opsR[i]!;
        let at = 0;
        for (const w of partsOf(op)) {
          const r = depsReady(w, rank);
          at = r < 0 ? -1 : Math.max(at, r);
          if (at < 0) break;
        }
        if (at < 0) break;
        const start = Math.max(at, timeline.at(-1)?.end ?? 0);
        const end = start + duration(op, rank);
        timeline.push({ op, start, end });
        for (const w of partsOf(op)) {
          if (w.kind === 'F') endF[w.microBatch * S + w.stage] = end;
          else if (w.kind !== 'W') endBack[w.microBatch * S + w.stage] = end;
        }
        progressed = true;
      }
    }
  }
  if (timelines.some((t, rank) => t.length < schedule.ops[rank]!.length)) {
    throw new PlanError(
      'SCHEDULE_INVALID',
      'replayPipeline(): the replay deadlocks (validate the schedule first)',
    );
  }
  return timelines;
}
