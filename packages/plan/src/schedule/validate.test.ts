import { describe, expect, it } from 'vitest';
import { isPlanError, type PlanError } from '../errors';
import { scheduleReceives, scheduleTransfers } from './transfers';
import type { OverlapOp, Schedule, ScheduleOp, StageWork } from './types';
import { checkScheduleStructure, defaultOpCosts, opLabel, partsOf, validateSchedule } from './validate';

// Builders for hand-written schedules. Letters: P ranks, N micro-batches, S stages.

function w(
  kind: StageWork['kind'],
  m: number,
  s: number,
  phase: 0 | 1 = 0,
  chunk: number = phase,
): StageWork {
  return { kind, microBatch: m, stage: s, chunk, phase };
}

function fb(forward: StageWork, backward: StageWork): OverlapOp {
  return { kind: 'F&B', forward, backward } as OverlapOp;
}

/** A one-phase schedule with stage s on rank s. */
function linear(ops: ScheduleOp[][], N: number): Schedule {
  const P = ops.length;
  return {
    kind: '1f1b',
    ranks: P,
    microBatches: N,
    stages: P,
    chunks: 1,
    placement: [Array.from({ length: P }, (_, s) => s)],
    phaseOf: Array.from({ length: N }, () => 0 as const),
    ops,
  };
}

/** Plain 1F1B: rank r runs P-1-r warm-up forwards, then F/B pairs, then the remaining backwards. */
function oneFOneB(P: number, N: number): Schedule {
  const ops = Array.from({ length: P }, (_, r) => {
    const rankOps: ScheduleOp[] = [];
    let f = 0;
    let b = 0;
    for (; f < Math.min(P - 1 - r, N); f++) rankOps.push(w('F', f, r));
    for (; f < N; f++, b++) rankOps.push(w('F', f, r), w('B', b, r));
    for (; b < N; b++) rankOps.push(w('B', b, r));
    return rankOps;
  });
  return linear(ops, N);
}

/** P = 2, N = 3 with split backwards and overlapped pairs on rank 1. */
function pairs(): Schedule {
  return linear(
    [
      [w('F', 0, 0), w('F', 1, 0), w('B', 0, 0), w('F', 2, 0), w('Bi', 1, 0), w('W', 1, 0), w('B', 2, 0)],
      [
        w('F', 0, 1),
        fb(w('F', 1, 1), w('B', 0, 1)),
        fb(w('F', 2, 1), w('Bi', 1, 1)),
        w('B', 2, 1),
        w('W', 1, 1),
      ],
    ],
    3,
  );
}

/** P = 2, N = 2, two phases (DualPipe's placement): m0 enters at rank 0, m1 at rank 1. */
function twoPhases(): Schedule {
  return {
    kind: 'dualpipe',
    ranks: 2,
    microBatches: 2,
    stages: 2,
    chunks: 2,
    placement: [
      [0, 1],
      [1, 0],
    ],
    phaseOf: [0, 1],
    ops: [
      [w('F', 0, 0), w('F', 1, 1, 1), w('B', 1, 1, 1), w('B', 0, 0)],
      [w('F', 1, 0, 1), w('F', 0, 1), w('B', 0, 1), w('B', 1, 0, 1)],
    ],
  };
}

/**
 * DualPipe, transcribed from deepseek-ai/DualPipe `dualpipe.py` `step()` (eight steps per rank) as a
 * test oracle for the bubble definition: local phase 0/1 is direction 0/1 on the first half of the
 * ranks and swapped on the second; per direction, forwards and backwards take micro-batches in
 * counter order; Ws pop the rank's Bis first-in-first-out (`WeightGradStore`).
 */
function dualPipeReference(P: number, N: number): Schedule {
  const h = P / 2;
  const rankOps = (r: number): ScheduleOp[] => {
    const hr = Math.min(r, P - 1 - r);
    const next = { F: [0, 0], B: [0, 0] };
    const pendingW: StageWork[] = [];
    const work = (kind: 'F' | 'B' | 'Bi', local: number): StageWork => {
      const d = (local ^ (r >= h ? 1 : 0)) as 0 | 1;
      const i = next[kind === 'F' ? 'F' : 'B'][d]!++;
      return w(kind, d === 0 ? i : N / 2 + i, d === 0 ? r : P - 1 - r, d);
    };
    const F = (local: number) => work('F', local);
    const B = (local: number, zb = false) => {
      const b = work(zb ? 'Bi' : 'B', local);
      if (zb) pendingW.push(b);
      return b;
    };
    const W = () => ({ ...pendingW.shift()!, kind: 'W' as const });
    const o: ScheduleOp[] = [];
    const times = (n: number, step: (i: number) => ScheduleOp[]) => {
      for (let i = 0; i < n; i++) o.push(...step(i));
    };
    const middle = r === h - 1 || r === h;
    times(2 * (h - hr - 1), () => [F(0)]);
    times(hr + 1, () => [F(0), F(1)]);
    times(h - hr - 1, () => [B(1, true), W(), F(1)]);
    times(N / 2 - P + hr + 1, (i) => [
      ...(i === 0 && middle ? [F(0), B(1)] : [fb(F(0), B(1))]),
      fb(F(1), B(0)),
    ]);
    times(h - hr - 1, () => [B(1), fb(F(1), B(0))]);
    let zb = false;
    times(hr + 1, (i) => {
      if (i === Math.floor((hr + 1) / 2) && hr % 2 === 1) zb = true;
      const b1 = B(1, zb);
      if (i === Math.floor((hr + 1) / 2) && hr % 2 === 0) zb = true;
      return [b1, B(0, zb)];
    });
    times(h - hr - 1, () => [W(), B(0, true)]);
    times(hr + 1, () => [W()]);
    return o;
  };
  return {
    kind: 'dualpipe',
    ranks: P,
    microBatches: N,
    stages: P,
    chunks: 2,
    placement: [Array.from({ length: P }, (_, s) => s), Array.from({ length: P }, (_, s) => P - 1 - s)],
    phaseOf: Array.from({ length: N }, (_, m) => (m < N / 2 ? 0 : 1)),
    ops: Array.from({ length: P }, (_, r) => rankOps(r)),
  };
}

/** `schedule` with rank `rank`'s ops replaced. */
function withRank(schedule: Schedule, rank: number, rankOps: ScheduleOp[]): Schedule {
  return { ...schedule, ops: schedule.ops.map((o, r) => (r === rank ? rankOps : o)) };
}

function spans(schedule: Schedule, rank: number, costs = defaultOpCosts): [number, number][] {
  return validateSchedule(schedule, costs).ranks[rank]!.timeline.map((t) => [t.start, t.end]);
}

describe('validateSchedule: replay', () => {
  it('replays 1F1B P=2 N=4 with the hand-computed times (makespan (N+P-1)(F+B) = 15)', () => {
    const report = validateSchedule(oneFOneB(2, 4));
    expect(report.makespan).toBe(15);
    // rank 0: F0 F1 B0 F2 B1 F3 B2 B3; rank 1: F0 B0 F1 B1 F2 B2 F3 B3.
    expect(spans(oneFOneB(2, 4), 0)).toEqual([
      [0, 1],
      [1, 2],
      [4, 6],
      [6, 7],
      [7, 9],
      [9, 10],
      [10, 12],
      [13, 15],
    ]);
    expect(spans(oneFOneB(2, 4), 1)).toEqual([
      [1, 2],
      [2, 4],
      [4, 5],
      [5, 7],
      [7, 8],
      [8, 10],
      [10, 11],
      [11, 13],
    ]);
    expect(report.ranks.map((r) => [r.busy, r.idle, r.bubble])).toEqual([
      [12, 3, 3],
      [12, 3, 3],
    ]);
    expect(report.ranks.map((r) => [r.peakActivations, r.peakPendingW, r.fifo])).toEqual([
      [2, 0, true],
      [1, 0, true],
    ]);
    expect(report.bubble).toEqual({ max: 3, mean: 3 });
    expect(report.costs).toEqual({ F: 1, B: 2, W: 1, FB: 3, transfer: 0 });
  });

  it('gives 1F1B the SPEC bubble (P-1)(F+B) = 21 on every rank for P=8, N=20', () => {
    const report = validateSchedule(oneFOneB(8, 20));
    expect(report.makespan).toBe(81);
    expect(report.ranks.map((r) => r.bubble)).toEqual(Array(8).fill(21));
    expect(report.ranks.map((r) => r.peakActivations)).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
  });

  it('gives DualPipe (reference step order) the README bubble (P/2-1)(F&B+B-3W) = 6 and P+1 activations, FIFO', () => {
    for (const N of [20, 32]) {
      const report = validateSchedule(dualPipeReference(8, N));
      expect(report.makespan).toBe(6 + 3 * N);
      expect(report.ranks.map((r) => r.bubble)).toEqual(Array(8).fill(6));
      expect(report.ranks.map((r) => r.peakActivations)).toEqual(Array(8).fill(9));
      expect(report.ranks.map((r) => r.peakPendingW)).toEqual([1, 2, 3, 4, 4, 3, 2, 1]);
      expect(report.fifo).toBe(true);
    }
  });

  it('adds costs.transfer when the producer ran on another rank', () => {
    const s = oneFOneB(2, 4);
    const costs = { ...defaultOpCosts, transfer: 1 };
    expect(validateSchedule(s, costs).makespan).toBe(19);
    expect(spans(s, 0, costs)).toEqual([
      [0, 1],
      [1, 2],
      [6, 8],
      [8, 9],
      [9, 11],
      [11, 12],
      [14, 16],
      [17, 19],
    ]);
    expect(validateSchedule(s, costs).ranks.map((r) => r.idle)).toEqual([7, 7]);
  });

  it('costs a pair FB (FB - W with a Bi), a Bi B - W, and counts activations and pending Ws', () => {
    const report = validateSchedule(pairs());
    expect(report.makespan).toBe(14);
    expect(spans(pairs(), 0)).toEqual([
      [0, 1],
      [1, 2],
      [5, 7],
      [7, 8],
      [10, 11],
      [11, 12],
      [12, 14],
    ]);
    expect(spans(pairs(), 1)).toEqual([
      [1, 2],
      [2, 5],
      [8, 10],
      [10, 12],
      [12, 13],
    ]);
    expect(report.ranks.map((r) => [r.busy, r.idle, r.peakActivations, r.peakPendingW, r.fifo])).toEqual([
      [9, 5, 2, 1, true],
      [9, 5, 2, 1, true],
    ]);
  });

  it('uses costs.FB for a pair and defaults it to F + B', () => {
    expect(validateSchedule(pairs(), { F: 1, B: 2, W: 1, FB: 2.5 }).makespan).toBe(13);
    expect(validateSchedule(pairs(), { F: 1, B: 2, W: 1 }).makespan).toBe(14);
  });

  it('replays two phases with their own placement', () => {
    const report = validateSchedule(twoPhases());
    expect(report.makespan).toBe(6);
    expect(spans(twoPhases(), 0)).toEqual([
      [0, 1],
      [1, 2],
      [2, 4],
      [4, 6],
    ]);
    expect(report.ranks.map((r) => [r.idle, r.peakActivations])).toEqual([
      [0, 2],
      [0, 2],
    ]);
  });

  it('runs the TSDoc example', () => {
    const report = validateSchedule({
      kind: 'gpipe',
      ranks: 1,
      microBatches: 1,
      stages: 1,
      chunks: 1,
      placement: [[0]],
      phaseOf: [0],
      ops: [[w('F', 0, 0), w('B', 0, 0)]],
    });
    expect(report.makespan).toBe(3);
  });
});

describe('validateSchedule: FIFO', () => {
  // GPipe with last-in-first-out backwards (as drawn in the GPipe paper): valid, but not FIFO.
  const lifo = linear(
    [
      [w('F', 0, 0), w('F', 1, 0), w('B', 1, 0), w('B', 0, 0)],
      [w('F', 0, 1), w('F', 1, 1), w('B', 1, 1), w('B', 0, 1)],
    ],
    2,
  );

  it('reports a LIFO backward order without throwing by default', () => {
    const report = validateSchedule(lifo);
    expect(report.fifo).toBe(false);
    expect(report.ranks.map((r) => r.fifo)).toEqual([false, false]);
    expect(report.ranks[0]!.fifoBreak).toMatch(
      /stage 0 of phase 0: forward #0 is micro-batch 0, backward #0 is 1/,
    );
  });

  it('throws on it with requireFifo', () => {
    expect(() => validateSchedule(lifo, defaultOpCosts, { requireFifo: true })).toThrow(
      /rank 0 breaks FIFO order: stage 0 of phase 0: forward #0 is micro-batch 0, backward #0 is 1/,
    );
  });

  it('reports Ws out of their Bis order', () => {
    const s = withRank(pairs(), 0, [
      w('F', 0, 0),
      w('F', 1, 0),
      w('Bi', 0, 0),
      w('F', 2, 0),
      w('Bi', 1, 0),
      w('W', 1, 0),
      w('W', 0, 0),
      w('B', 2, 0),
    ]);
    const report = validateSchedule(s);
    expect(report.ranks.map((r) => r.fifo)).toEqual([false, true]);
    expect(report.ranks[0]!.fifoBreak).toMatch(/W #0 is W\(m=1,s=0\), but Bi #0 is Bi\(m=0,s=0\)/);
  });
});

describe('validateSchedule: errors', () => {
  const s = oneFOneB(2, 4);
  const r0 = s.ops[0]!;

  function expectInvalid(schedule: Schedule, message: RegExp): void {
    let caught: unknown;
    try {
      validateSchedule(schedule);
    } catch (e) {
      caught = e;
    }
    expect(isPlanError(caught)).toBe(true);
    expect((caught as PlanError).code).toBe('SCHEDULE_INVALID');
    expect((caught as PlanError).message).toMatch(message);
  }

  it('rejects a micro-batch, stage or chunk out of range', () => {
    expectInvalid(
      withRank(s, 0, [w('F', 0, 0), w('F', 4, 0)]),
      /validateSchedule\(\): rank 0 op #1 F\(m=4,s=0\): micro-batch 4 is out of range \[0, 4\)/,
    );
    expectInvalid(
      withRank(s, 1, [w('F', 0, 2)]),
      /rank 1 op #0 F\(m=0,s=2\): stage 2 is out of range \[0, 2\)/,
    );
    expectInvalid(
      withRank(s, 1, [w('F', 0, 1, 0, 1)]),
      /rank 1 op #0 F\(m=0,s=1\): chunk 1 is out of range \[0, 1\)/,
    );
  });

  it('rejects an F&B pair whose backward is not a B or Bi', () => {
    expectInvalid(
      withRank(s, 1, [fb(w('F', 0, 1), w('W', 0, 1))]),
      /rank 1 op #0 is an F&B pair whose parts are not an F and a B or Bi/,
    );
  });

  it('rejects a stage on a rank other than its placement', () => {
    expectInvalid(
      withRank(s, 0, [...r0, w('F', 0, 1)]),
      /rank 0 op #8 F\(m=0,s=1\): stage 1 of phase 0 runs on rank 1 \(placement\[0\]\[1\]\), not 0/,
    );
  });

  it('rejects a phase that is not the micro-batch phase, and one stage under two chunks', () => {
    expectInvalid(
      withRank(twoPhases(), 0, [w('F', 0, 1, 1)]),
      /rank 0 op #0 F\(m=0,s=1,ph=1\): phase 1, but micro-batch 0 has phase 0/,
    );
    const twoChunks = { ...s, chunks: 2 };
    expectInvalid(
      withRank(twoChunks, 0, [w('F', 0, 0), w('F', 1, 0, 0, 1)]),
      /rank 0 op #1 F\(m=1,s=0\): chunk 1, but stage 0 of phase 0 ran as chunk 0 before/,
    );
  });

  it('rejects a missing F or backward', () => {
    expectInvalid(
      withRank(s, 1, s.ops[1]!.slice(0, -2)),
      /micro-batch 3 stage 1 \(phase 0, rank 1\) has no F/,
    );
    expectInvalid(
      withRank(s, 1, s.ops[1]!.slice(0, -1)),
      /micro-batch 3 stage 1 \(phase 0, rank 1\) has no backward \(B or Bi\)/,
    );
  });

  it('rejects duplicates: two Fs, a B and a Bi, two Ws', () => {
    expectInvalid(
      withRank(s, 0, [w('F', 0, 0), ...r0]),
      /rank 0 op #1 F\(m=0,s=0\): duplicate F of micro-batch 0 stage 0 \(first at rank 0 op #0 F\(m=0,s=0\)\)/,
    );
    expectInvalid(
      withRank(s, 0, [...r0, w('Bi', 3, 0)]),
      /rank 0 op #8 Bi\(m=3,s=0\): duplicate backward \(B or Bi\) of micro-batch 3 stage 0 \(first at rank 0 op #7 B\(m=3,s=0\)\)/,
    );
    const ops0 = pairs().ops[0]!;
    expectInvalid(withRank(pairs(), 0, [...ops0, w('W', 1, 0)]), /rank 0 op #7 W\(m=1,s=0\): duplicate W/);
  });

  it('rejects a Bi without W and a B with a W', () => {
    const ops0 = pairs().ops[0]!;
    expectInvalid(
      withRank(pairs(), 0, ops0.slice(0, 5).concat(ops0.slice(6))),
      /micro-batch 1 stage 0 \(phase 0, rank 0\) has a Bi \(rank 0 op #4 Bi\(m=1,s=0\)\) but no W/,
    );
    expectInvalid(
      withRank(s, 0, [...r0, w('W', 3, 0)]),
      /micro-batch 3 stage 0 .* has a full B \(rank 0 op #7 B\(m=3,s=0\)\) and also a W \(rank 0 op #8/,
    );
  });

  it('rejects a W before its Bi', () => {
    const ops0 = pairs().ops[0]!;
    const swapped = [...ops0.slice(0, 4), ops0[5]!, ops0[4]!, ops0[6]!];
    expectInvalid(
      withRank(pairs(), 0, swapped),
      /rank 0 op #4 W\(m=1,s=0\): W comes before its Bi on rank 0/,
    );
  });

  it('reports every stuck rank of a deadlock with what it waits for', () => {
    const crossed = linear(
      [
        [w('F', 0, 0), w('B', 0, 0), w('F', 1, 0), w('B', 1, 0)],
        [w('F', 1, 1), w('B', 1, 1), w('F', 0, 1), w('B', 0, 1)],
      ],
      2,
    );
    expectInvalid(
      crossed,
      /the replay deadlocks: rank 0 op #1 B\(m=0,s=0\) waits for backward\(m=0,s=1\) on rank 1; rank 1 op #0 F\(m=1,s=1\) waits for F\(m=1,s=0\) on rank 0$/,
    );
  });

  it('rejects a malformed schedule or negative costs with INVALID_ARGUMENT', () => {
    expect(() => validateSchedule({ ...s, ops: [r0] })).toThrow(
      /`schedule.ops` passed to validateSchedule\(\) must be an array of length 2, got "an array of length 1"/,
    );
    expect(() => validateSchedule({ ...s, placement: [[0, 2]] })).toThrow(
      /`schedule.placement\[0\]\[1\]` passed to validateSchedule\(\) must be an integer in \[0, 1\], got 2/,
    );
    expect(() => validateSchedule(s, { F: -1, B: 2, W: 1 })).toThrow(
      /`costs.F` passed to validateSchedule\(\) must be a finite number >= 0, got -1/,
    );
    expect(() => validateSchedule(s, { F: 1, B: 2, W: 3 })).toThrow(
      /`costs.W` .* must be <= costs.B \(2\), got 3/,
    );
  });
});

describe('scheduleTransfers / scheduleReceives', () => {
  const t = (
    kind: 'activation' | 'gradient',
    microBatch: number,
    fromStage: number,
    toStage: number,
    fromRank: number,
    toRank: number,
    phase: 0 | 1 = 0,
  ) => ({ kind, microBatch, phase, fromStage, toStage, fromRank, toRank });

  it('lists the sends and receives of a 2-rank schedule with pairs, in each rank op order', () => {
    expect(scheduleTransfers(pairs())).toEqual([
      [t('activation', 0, 0, 1, 0, 1), t('activation', 1, 0, 1, 0, 1), t('activation', 2, 0, 1, 0, 1)],
      [t('gradient', 0, 1, 0, 1, 0), t('gradient', 1, 1, 0, 1, 0), t('gradient', 2, 1, 0, 1, 0)],
    ]);
    expect(scheduleReceives(pairs())).toEqual([
      [t('gradient', 0, 1, 0, 1, 0), t('gradient', 1, 1, 0, 1, 0), t('gradient', 2, 1, 0, 1, 0)],
      [t('activation', 0, 0, 1, 0, 1), t('activation', 1, 0, 1, 0, 1), t('activation', 2, 0, 1, 0, 1)],
    ]);
  });

  it('follows each phase placement', () => {
    expect(scheduleTransfers(twoPhases())).toEqual([
      [t('activation', 0, 0, 1, 0, 1), t('gradient', 1, 1, 0, 0, 1, 1)],
      [t('activation', 1, 0, 1, 1, 0, 1), t('gradient', 0, 1, 0, 1, 0)],
    ]);
    expect(scheduleReceives(twoPhases())).toEqual([
      [t('activation', 1, 0, 1, 1, 0, 1), t('gradient', 0, 1, 0, 1, 0)],
      [t('activation', 0, 0, 1, 0, 1), t('gradient', 1, 1, 0, 0, 1, 1)],
    ]);
  });

  it('sends nothing between stages on one rank', () => {
    const oneRank: Schedule = {
      ...linear([[w('F', 0, 0), w('F', 0, 1), w('B', 0, 1), w('B', 0, 0)]], 1),
      stages: 2,
      placement: [[0, 0]],
    };
    expect(validateSchedule(oneRank).makespan).toBe(6);
    expect(scheduleTransfers(oneRank)).toEqual([[]]);
    expect(scheduleReceives(oneRank)).toEqual([[]]);
  });

  it('pairs every send with one receive (1F1B P=4 N=6)', () => {
    const s = oneFOneB(4, 6);
    const key = (x: object) => JSON.stringify(x);
    const sends = scheduleTransfers(s).flat().map(key).sort();
    expect(sends).toHaveLength(2 * 3 * 6);
    expect(scheduleReceives(s).flat().map(key).sort()).toEqual(sends);
  });

  it('runs the TSDoc examples', () => {
    const x = (kind: 'F' | 'B', stage: number) => ({
      kind,
      microBatch: 0,
      stage,
      chunk: 0,
      phase: 0 as const,
    });
    const schedule: Schedule = {
      kind: '1f1b',
      ranks: 2,
      microBatches: 1,
      stages: 2,
      chunks: 1,
      placement: [[0, 1]],
      phaseOf: [0],
      ops: [
        [x('F', 0), x('B', 0)],
        [x('F', 1), x('B', 1)],
      ],
    };
    const sends = scheduleTransfers(schedule);
    expect(sends[0]).toEqual([t('activation', 0, 0, 1, 0, 1)]);
    expect(sends[1]).toEqual([t('gradient', 0, 1, 0, 1, 0)]);
    expect(scheduleReceives(schedule)[1]).toEqual([t('activation', 0, 0, 1, 0, 1)]);
  });
});

describe('partsOf / opLabel / checkScheduleStructure', () => {
  it('runs the TSDoc examples', () => {
    const f = w('F', 1, 0);
    const b = w('B', 0, 0);
    expect(partsOf(fb(f, b))).toEqual([f, b]);
    expect(partsOf(f)).toEqual([f]);
    expect(opLabel(w('Bi', 3, 1, 1))).toBe('Bi(m=3,s=1,ph=1)');
    expect(opLabel(fb(w('F', 2, 1), w('Bi', 0, 3)))).toBe('F(m=2,s=1)&Bi(m=0,s=3)');
    expect(() => checkScheduleStructure('myTool', { ...oneFOneB(2, 4), ops: [] })).toThrow(
      /`schedule.ops` passed to myTool\(\) must be an array of length 2/,
    );
    expect(() => checkScheduleStructure('myTool', oneFOneB(2, 4))).not.toThrow();
  });
});
