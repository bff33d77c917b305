import { describe, expect, it } from 'vitest';
import { dualPipe, dualPipeSteps, dualPipeV } from './dualpipe';
import { formatScheduleText } from './format';
import { generateSchedule } from './generate';
import type { OpCosts, Schedule, StageWork } from './types';
import { validateSchedule } from './validate';

// Expected sequences, written out by hand from the step lists of deepseek-ai/DualPipe's step()
// (dualpipe.py, dualpipev.py at 3da1bbe). Digits are the stage copy: for DualPipe the direction,
// which on ranks P/2..P-1 is the reference's step-list phase flipped (`phase ^= is_in_second_half`).
const DUALPIPE_P4_N8 = [
  // hr 0: step 1 F0 F0 | 2 F0 F1 | 3 B1i W F1 | 4 F0&B1 F1&B0 | 5 B1 F1&B0 | 6 B1 B0i | 7 W B0i | 8 W
  'rank 0: F0 F0 F0 F1 B1i W F1 F0&B1 F1&B0 B1 F1&B0 B1 B0i W B0i W',
  // hr 1 (middle): 2 (F0 F1)x2 | 4 F0 B1 (not overlapped) F1&B0, F0&B1 F1&B0 | 6 B1 B0, B1i B0i | 8 W W
  'rank 1: F0 F1 F0 F1 F0 B1 F1&B0 F0&B1 F1&B0 B1 B0 B1i B0i W W',
  // Ranks 2 and 3 mirror ranks 1 and 0: the same step lists with the direction digits flipped.
  'rank 2: F1 F0 F1 F0 F1 B0 F0&B1 F1&B0 F0&B1 B0 B1 B0i B1i W W',
  'rank 3: F1 F1 F1 F0 B0i W F0 F1&B0 F0&B1 B0 F0&B1 B0 B1i W B1i W',
].join('\n');

// DualPipeV on 4 ranks (8 stages), N = 8: h = P = 4, hr = r, n = N.
const DUALPIPEV_P4_N8 = [
  // 1: F0 x6 | 2: F0 F1 | 3: (B1i W F1)x3 | 4: F0&B1 F1&B0 | 5: (B1 F1&B0)x3 | 6: B1 B0i | 7: (W B0i)x3 | 8: W
  'rank 0: F0 F0 F0 F0 F0 F0 F0 F1 B1i W F1 B1i W F1 B1i W F1 F0&B1 F1&B0 B1 F1&B0 B1 F1&B0 B1 F1&B0 B1 B0i W B0i W B0i W B0i W',
  // 1: F0 x4 | 2: (F0 F1)x2 | 3: (B1i W F1)x2 | 4: (F0&B1 F1&B0)x2 | 5: (B1 F1&B0)x2 | 6: B1 B0, B1i B0i | 7: (W B0i)x2 | 8: W W
  'rank 1: F0 F0 F0 F0 F0 F1 F0 F1 B1i W F1 B1i W F1 F0&B1 F1&B0 F0&B1 F1&B0 B1 F1&B0 B1 F1&B0 B1 B0 B1i B0i W B0i W B0i W W',
  // 1: F0 x2 | 2: (F0 F1)x3 | 3: B1i W F1 | 4: (F0&B1 F1&B0)x3 | 5: B1 F1&B0 | 6: B1 B0, B1 B0i, B1i B0i | 7: W B0i | 8: W W W
  'rank 2: F0 F0 F0 F1 F0 F1 F0 F1 B1i W F1 F0&B1 F1&B0 F0&B1 F1&B0 F0&B1 F1&B0 B1 F1&B0 B1 B0 B1 B0i B1i B0i W B0i W W W',
  // last rank (middle): 2: (F0 F1)x4 | 4: F0 B1 F1&B0, (F0&B1 F1&B0)x3 | 6: (B1 B0)x2, (B1i B0i)x2 | 8: W x4
  'rank 3: F0 F1 F0 F1 F0 F1 F0 F1 F0 B1 F1&B0 F0&B1 F1&B0 F0&B1 F1&B0 F0&B1 F1&B0 B1 B0 B1 B0 B1i B0i B1i B0i W W W W',
].join('\n');

/** Every StageWork of a schedule, pairs unpacked, with its rank. */
function works(schedule: Schedule): { rank: number; work: StageWork }[] {
  return schedule.ops.flatMap((ops, rank) =>
    ops.flatMap((op) =>
      (op.kind === 'F&B' ? [op.forward, op.backward] : [op]).map((work) => ({ rank, work })),
    ),
  );
}

/** Checks: each (micro-batch, stage) has one F and one backward on the placed rank, each Bi one later W. */
function expectComplete(schedule: Schedule): void {
  const count = new Map<string, number>();
  for (const { rank, work } of works(schedule)) {
    const phase = schedule.phaseOf[work.microBatch]!;
    expect(work.phase).toBe(phase);
    expect(schedule.placement[phase]![work.stage]).toBe(rank);
    const key = `${work.kind === 'Bi' ? 'B' : work.kind}:${work.microBatch}:${work.stage}`;
    count.set(key, (count.get(key) ?? 0) + 1);
  }
  for (let m = 0; m < schedule.microBatches; m++) {
    for (let s = 0; s < schedule.stages; s++) {
      expect(count.get(`F:${m}:${s}`), `F of ${m} on stage ${s}`).toBe(1);
      expect(count.get(`B:${m}:${s}`), `backward of ${m} on stage ${s}`).toBe(1);
    }
  }
  for (const ops of schedule.ops) {
    const seen = new Set<string>();
    for (const op of ops) {
      const parts = op.kind === 'F&B' ? [op.forward, op.backward] : [op];
      for (const w of parts) {
        const key = `${w.microBatch}:${w.stage}`;
        if (w.kind === 'Bi') seen.add(key);
        if (w.kind === 'W') {
          expect(seen.has(key), `W of ${key} after its Bi`).toBe(true);
          seen.delete(key);
        }
      }
    }
    expect(seen.size).toBe(0);
  }
}

describe('dualPipe', () => {
  it('does what its TSDoc examples say', () => {
    expect(dualPipe({ ranks: 4, microBatches: 8 }).ops[0]).toHaveLength(16);
    expect(dualPipeSteps(4, 0, 10).nF0).toBe(6);
    expect(dualPipeV({ ranks: 4, microBatches: 10 }).stages).toBe(8);
  });

  it('orders each rank as the reference step() does (P=4, N=8)', () => {
    expect(formatScheduleText(dualPipe({ ranks: 4, microBatches: 8 }))).toBe(DUALPIPE_P4_N8);
  });

  it('places direction 0 on stage r and direction 1 on stage P-1-r, with the micro-batches of each', () => {
    const s = dualPipe({ ranks: 4, microBatches: 8 });
    expect(s).toMatchObject({ kind: 'dualpipe', ranks: 4, microBatches: 8, stages: 4, chunks: 2 });
    expect(s.placement).toEqual([
      [0, 1, 2, 3],
      [3, 2, 1, 0],
    ]);
    expect(s.phaseOf).toEqual([0, 0, 0, 0, 1, 1, 1, 1]);
    // Rank 3 starts with direction 1's first stage (micro-batches 4, 5, 6), then direction 0's last.
    expect(s.ops[3]!.slice(0, 4)).toEqual([
      { kind: 'F', microBatch: 4, stage: 0, chunk: 1, phase: 1 },
      { kind: 'F', microBatch: 5, stage: 0, chunk: 1, phase: 1 },
      { kind: 'F', microBatch: 6, stage: 0, chunk: 1, phase: 1 },
      { kind: 'F', microBatch: 0, stage: 3, chunk: 0, phase: 0 },
    ]);
    // Rank 0's W after its first B1i finishes that micro-batch's direction-1 stage 3.
    expect(s.ops[0]![4]).toEqual({ kind: 'Bi', microBatch: 4, stage: 3, chunk: 1, phase: 1 });
    expect(s.ops[0]![5]).toEqual({ kind: 'W', microBatch: 4, stage: 3, chunk: 1, phase: 1 });
    expect(s.ops[0]![7]).toEqual({
      kind: 'F&B',
      forward: { kind: 'F', microBatch: 3, stage: 0, chunk: 0, phase: 0 },
      backward: { kind: 'B', microBatch: 5, stage: 3, chunk: 1, phase: 1 },
    });
  });

  it.each([
    [2, 4],
    [4, 8],
    [4, 10],
    [8, 16],
    [8, 20],
    [8, 32],
    [16, 34],
  ])(
    'runs one F and one backward of every micro-batch on every stage (P=%i, N=%i)',
    (ranks, microBatches) => {
      expectComplete(dualPipe({ ranks, microBatches }));
    },
  );

  it('has the SPEC step counts for every rank', () => {
    const P = 8;
    const N = 20;
    const h = P / 2;
    for (let r = 0; r < P; r++) {
      const hr = Math.min(r, P - 1 - r);
      expect(dualPipeSteps(h, hr, N / 2)).toEqual({
        nF0: 2 * (h - hr - 1),
        nF0F1: hr + 1,
        nB1W1F1: h - hr - 1,
        nF0B1F1B0: N / 2 - P + hr + 1,
        nB1F1B0: h - hr - 1,
        nB1B0: hr + 1,
        nWB0: h - hr - 1,
        nW: hr + 1,
      });
    }
  });

  it('names the broken constraint', () => {
    expect(() => dualPipe({ ranks: 3, microBatches: 6 })).toThrow(
      /`ranks` passed to dualPipe\(\) must be even/,
    );
    expect(() => dualPipe({ ranks: 0, microBatches: 6 })).toThrow(
      /`ranks` passed to dualPipe\(\) must be an integer >= 2/,
    );
    expect(() => dualPipe({ ranks: 4, microBatches: 6 })).toThrow(
      /`microBatches` passed to dualPipe\(\) must be even and >= 2 \* ranks \(8\), got 6/,
    );
    expect(() => dualPipe({ ranks: 4, microBatches: 9 })).toThrow(
      /must be even and >= 2 \* ranks \(8\), got 9/,
    );
    expect(() => dualPipe({ ranks: 4, microBatches: 8, layers: 10 })).toThrow(
      /`layers` passed to dualPipe\(\) must be a multiple of the 4 stages, got 10/,
    );
    expect(() => dualPipe({ ranks: 4, microBatches: 8 })).not.toThrow();
  });
});

describe('dualPipeV', () => {
  it('orders each rank as the reference step() does (4 ranks, 8 stages, N=8)', () => {
    expect(formatScheduleText(dualPipeV({ ranks: 4, microBatches: 8 }))).toBe(DUALPIPEV_P4_N8);
  });

  it('folds 2P stages into a V: stage s on rank s, then back up', () => {
    const s = dualPipeV({ ranks: 4, microBatches: 8 });
    expect(s).toMatchObject({ kind: 'dualpipev', ranks: 4, microBatches: 8, stages: 8, chunks: 2 });
    expect(s.placement).toEqual([[0, 1, 2, 3, 3, 2, 1, 0]]);
    expect(s.phaseOf).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    // The last rank turns each micro-batch round: stage 3 (down leg), then stage 4 (up leg).
    expect(s.ops[3]!.slice(0, 2)).toEqual([
      { kind: 'F', microBatch: 0, stage: 3, chunk: 0, phase: 0 },
      { kind: 'F', microBatch: 0, stage: 4, chunk: 1, phase: 0 },
    ]);
  });

  it.each([
    [1, 2],
    [2, 4],
    [4, 8],
    [4, 9],
    [4, 20],
    [8, 16],
  ])(
    'runs one F and one backward of every micro-batch on every stage (P=%i, N=%i)',
    (ranks, microBatches) => {
      expectComplete(dualPipeV({ ranks, microBatches }));
    },
  );

  it('names the broken constraint', () => {
    expect(() => dualPipeV({ ranks: 4, microBatches: 7 })).toThrow(
      /`microBatches` passed to dualPipeV\(\) must be >= 2 \* ranks \(8\), got 7/,
    );
    expect(() => dualPipeV({ ranks: 4, microBatches: 8, layers: 12 })).toThrow(
      /a multiple of the 8 stages, got 12/,
    );
    expect(() => dualPipeV({ ranks: 1.5, microBatches: 8 })).toThrow(/`ranks` passed to dualPipeV\(\)/);
  });
});

// The SPEC's figures: F = 1, B = 2, W = 1, F&B = 3 (no overlap gain), free transfers. The bubble is
// the validator's: makespan - busy per rank. Every rank does N forwards and N backwards (2 stage
// copies x N/2 micro-batches; DualPipeV: 2 legs x N), busy = N (F + B), so DualPipe's makespan is
// 3N + 6 and the SPEC's bubble (P/2-1)(F&B + B - 3W) = 3 (3 + 2 - 3) = 6 on every rank.
describe('DualPipe and DualPipeV replayed (the SPEC figures)', () => {
  const costs: Required<Pick<OpCosts, 'F' | 'B' | 'W' | 'FB'>> = { F: 1, B: 2, W: 1, FB: 3 };

  it.each([16, 20, 32])('DualPipe P=8, N=%i: bubble 6 on every rank, peak activations P+1 = 9', (N) => {
    const report = validateSchedule(dualPipe({ ranks: 8, microBatches: N }), costs, { requireFifo: true });
    expect(report.makespan).toBe(3 * N + 6);
    expect(report.ranks.map((r) => r.busy)).toEqual(Array(8).fill(3 * N));
    expect(report.ranks.map((r) => r.bubble)).toEqual(Array(8).fill(6));
    expect(report.bubble).toEqual({ max: 6, mean: 6 });
    expect(report.ranks.map((r) => r.peakActivations)).toEqual(Array(8).fill(9));
    // Weight gradients left pending at once: hr + 1 (the Bi of steps 6 and 7 wait for step 8).
    expect(report.ranks.map((r) => r.peakPendingW)).toEqual([1, 2, 3, 4, 4, 3, 2, 1]);
  });

  it('beats 1F1B on the same ranks: bubble 6 against (P-1)(F+B) = 21 (P=8, N=20)', () => {
    const oneFOneB = validateSchedule(generateSchedule({ kind: '1f1b', ranks: 8, microBatches: 20 }), costs);
    expect(oneFOneB.bubble.max).toBe(21);
    expect(
      validateSchedule(generateSchedule({ kind: 'dualpipe', ranks: 8, microBatches: 20 }), costs).bubble.max,
    ).toBe(6);
  });

  it.each([8, 10, 20, 32])('DualPipeV on 4 ranks (8 stages), N=%i: bubble 6, peak activations 9', (N) => {
    const report = validateSchedule(dualPipeV({ ranks: 4, microBatches: N }), costs, { requireFifo: true });
    expect(report.makespan).toBe(6 * N + 6);
    expect(report.ranks.map((r) => r.bubble)).toEqual([6, 6, 6, 6]);
    expect(report.ranks.map((r) => r.peakActivations)).toEqual([9, 9, 9, 9]);
  });

  // The README's formula is exact for the largest rank bubble when F = W and B = 2W (the
  // zero-bubble papers' F = Bi = W), whatever F&B costs; with W < F the replay does better than it.
  it.each([
    [2, 4],
    [4, 8],
    [6, 12],
    [8, 20],
    [16, 32],
  ])('DualPipe bubble is (P/2-1)(F&B + B - 3W) when F = W, B = 2W (P=%i, N=%i)', (P, N) => {
    for (const c of [
      costs,
      { F: 1, B: 2, W: 1, FB: 2 },
      { F: 1, B: 2, W: 1, FB: 2.5 },
      { F: 2, B: 4, W: 2, FB: 4 },
    ]) {
      const report = validateSchedule(dualPipe({ ranks: P, microBatches: N }), c);
      expect(report.bubble.max, JSON.stringify(c)).toBe((P / 2 - 1) * (c.FB + c.B - 3 * c.W));
      expect(report.ranks.map((r) => r.peakActivations)).toEqual(Array(P).fill(P + 1));
    }
  });
});
