// Every generator over the SPEC's grid: P in {2, 4, 6, 8, 16}, N from 2P to 4P. Each schedule replays
// without a deadlock, first-in first-out, and with the bubble and peak memory its family promises
// (F = 1, B = 2, W = 1, F&B = 3).
import { describe, expect, it } from 'vitest';
import { generateSchedule } from './generate';
import { SCHEDULE_KINDS, type ScheduleKind } from './types';
import { validateSchedule } from './validate';

const RANKS = [2, 4, 6, 8, 16];

/** The (P, N) pairs of the grid that a kind accepts. */
function grid(kind: ScheduleKind): [number, number][] {
  const out: [number, number][] = [];
  for (const P of RANKS) {
    for (let N = 2 * P; N <= 4 * P; N++) {
      if (kind === 'dualpipe' && N % 2 !== 0) continue;
      if (kind === 'interleaved' && N % P !== 0) continue;
      out.push([P, N]);
    }
  }
  return out;
}

/** Bubble (max over ranks) and peak activations per rank that each family promises. */
const promised: Record<ScheduleKind, (P: number, N: number) => { bubble: number; peak: number[] }> = {
  gpipe: (P, N) => ({ bubble: 3 * (P - 1), peak: Array(P).fill(N) }),
  '1f1b': (P) => ({ bubble: 3 * (P - 1), peak: Array.from({ length: P }, (_, r) => P - r) }),
  // chunks cost a whole stage's F and B here: the bubble in those units is (P-1)(F+B)
  interleaved: (P) => ({
    bubble: 3 * (P - 1),
    peak: Array.from({ length: P }, (_, r) => 2 * (P - r - 1) + P + 1),
  }),
  'zb-h1': (P) => ({ bubble: (P - 1) * (1 + 2 - 2), peak: Array.from({ length: P }, (_, r) => P - r) }),
  '1f1b-overlap': (P) => ({ bubble: 3 * (P - 1), peak: Array.from({ length: P }, (_, r) => 2 * (P - r)) }),
  dualpipe: (P) => ({ bubble: (P / 2 - 1) * (3 + 2 - 3), peak: Array(P).fill(P + 1) }),
  // P ranks hold 2P stages: the bubble of DualPipe on 2P ranks
  dualpipev: (P) => ({ bubble: (P - 1) * (3 + 2 - 3), peak: Array(P).fill(2 * P + 1) }),
};

describe.each(SCHEDULE_KINDS)('%s over P in {2, 4, 6, 8, 16}, N in [2P, 4P]', (kind) => {
  it('replays without deadlock, in FIFO order, with the promised bubble and peak activations', () => {
    for (const [P, N] of grid(kind)) {
      const schedule = generateSchedule({ kind, ranks: P, microBatches: N });
      const report = validateSchedule(schedule, undefined, { requireFifo: true });
      const want = promised[kind](P, N);
      expect(report.bubble.max, `${kind} P=${P} N=${N} bubble`).toBe(want.bubble);
      expect(
        report.ranks.map((r) => r.peakActivations),
        `${kind} P=${P} N=${N} peak activations`,
      ).toEqual(want.peak);
    }
  });
});
