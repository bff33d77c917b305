// Tests of the GPipe, 1F1B, interleaved 1F1B, ZB-H1 and 1F1B-overlap generators and of the
// generateSchedule() dispatcher.
//
// Letters: P ranks, N micro-batches, S stages, v chunks per rank, r a rank, F forward, B full
// backward, Bi input-gradient backward, W weight gradient, F&B an overlapped pair. Costs are the
// SPEC's (F = 1, B = 2, W = 1, F&B = 3) unless a test says otherwise.
import { describe, expect, it } from 'vitest';
import { isPlanError } from '../errors';
import { dualPipe, dualPipeV } from './dualpipe';
import { generateSchedule } from './generate';
import { interleavedOneFOneB } from './interleaved';
import { gpipe, oneFOneB, oneFOneBOverlap, zbH1 } from './onef1b';
import type { OpCosts, Schedule, ScheduleKind, ScheduleOp, StageWork } from './types';
import { validateSchedule } from './validate';

const SPEC_COSTS: OpCosts = { F: 1, B: 2, W: 1, FB: 3 };
const RANKS = [2, 4, 6, 8, 16];

/** `F3` (micro-batch 3), `B0c1` (chunk 1, when the schedule has several), `F7&B0`. */
function label(schedule: Schedule, op: ScheduleOp): string {
  const one = (w: StageWork) => `${w.kind}${w.microBatch}${schedule.chunks > 1 ? `c${w.chunk}` : ''}`;
  return op.kind === 'F&B' ? `${one(op.forward)}&${one(op.backward)}` : one(op);
}

function rankText(schedule: Schedule, rank: number): string {
  return schedule.ops[rank]!.map((op) => label(schedule, op)).join(' ');
}

/** Each rank's ops as `kind` letters, e.g. 'F F B B'. */
function kinds(schedule: Schedule, rank: number): string {
  return schedule.ops[rank]!.map((op) => op.kind).join(' ');
}

/** Every (micro-batch, stage): one F and one backward (B or Bi, with one W after a Bi), on its placed rank. */
function expectComplete(schedule: Schedule): void {
  const count = new Map<string, number>();
  schedule.ops.forEach((ops, rank) => {
    for (const op of ops) {
      for (const w of op.kind === 'F&B' ? [op.forward, op.backward] : [op]) {
        expect(w.phase).toBe(0);
        expect(schedule.placement[0]![w.stage], `placement of stage ${w.stage}`).toBe(rank);
        expect(w.chunk).toBe(Math.floor(w.stage / schedule.ranks));
        const key = `${w.kind === 'Bi' ? 'B' : w.kind}:${w.microBatch}:${w.stage}`;
        count.set(key, (count.get(key) ?? 0) + 1);
      }
    }
  });
  const split = schedule.kind === 'zb-h1';
  for (let m = 0; m < schedule.microBatches; m++) {
    for (let s = 0; s < schedule.stages; s++) {
      expect(count.get(`F:${m}:${s}`), `F of micro-batch ${m} on stage ${s}`).toBe(1);
      expect(count.get(`B:${m}:${s}`), `backward of micro-batch ${m} on stage ${s}`).toBe(1);
      expect(count.get(`W:${m}:${s}`), `W of micro-batch ${m} on stage ${s}`).toBe(split ? 1 : undefined);
    }
  }
}

/** The (P, N) grid of the property tests: P in RANKS, N from 2P to 4P (multiples of P only, if asked). */
function grid(multiplesOfP = false): [number, number][] {
  return RANKS.flatMap((P) =>
    Array.from({ length: 2 * P + 1 }, (_, i) => 2 * P + i)
      .filter((N) => !multiplesOfP || N % P === 0)
      .map((N): [number, number] => [P, N]),
  );
}

function expectPlanError(run: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    run();
  } catch (e) {
    caught = e;
  }
  expect(isPlanError(caught), `a PlanError, got ${String(caught)}`).toBe(true);
  expect((caught as Error & { code: string }).code).toBe('INVALID_ARGUMENT');
  expect((caught as Error).message).toMatch(message);
}

describe('exact orders', () => {
  it('1F1B, P=4 N=8: rank 0 warms up with 3 forwards, rank 3 alternates from the start', () => {
    const s = oneFOneB({ ranks: 4, microBatches: 8 });
    expect(rankText(s, 0)).toBe('F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7');
    expect(rankText(s, 1)).toBe('F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7');
    expect(rankText(s, 3)).toBe('F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7');
  });

  it('1F1B with fewer micro-batches than ranks: warm-up min(P-r-1, N)', () => {
    const s = oneFOneB({ ranks: 4, microBatches: 2 });
    expect(rankText(s, 0)).toBe('F0 F1 B0 B1');
    expect(rankText(s, 2)).toBe('F0 F1 B0 B1');
    expect(rankText(s, 3)).toBe('F0 B0 F1 B1');
  });

  it('GPipe, P=2 N=3: all forwards, then all backwards, on every rank', () => {
    const s = gpipe({ ranks: 2, microBatches: 3 });
    expect(rankText(s, 0)).toBe('F0 F1 F2 B0 B1 B2');
    expect(rankText(s, 1)).toBe('F0 F1 F2 B0 B1 B2');
  });

  it("interleaved, P=2 N=4 v=2: Megatron's groups of P per chunk, backwards with the chunks reversed", () => {
    const s = interleavedOneFOneB({ ranks: 2, microBatches: 4, chunks: 2 });
    // Rank 0: warm-up (P-r-1)*2 + (v-1)*P = 4; rank 1: 2.
    expect(rankText(s, 0)).toBe(
      'F0c0 F1c0 F0c1 F1c1 F2c0 B0c1 F3c0 B1c1 F2c1 B0c0 F3c1 B1c0 B2c1 B3c1 B2c0 B3c0',
    );
    expect(rankText(s, 1)).toBe(
      'F0c0 F1c0 F0c1 B0c1 F1c1 B1c1 F2c0 B0c0 F3c0 B1c0 F2c1 B2c1 F3c1 B3c1 B2c0 B3c0',
    );
    expect(s.placement).toEqual([[0, 1, 0, 1]]);
  });

  it('interleaved, P=4 N=8 v=2: warm-up of 10, 8, 6, 4 forwards', () => {
    const s = interleavedOneFOneB({ ranks: 4, microBatches: 8 });
    // The first backward follows the warm-up and the first steady-state forward.
    const warmups = s.ops.map((ops) => ops.findIndex((op) => op.kind === 'B') - 1);
    expect(warmups).toEqual([10, 8, 6, 4]);
    expect(rankText(s, 3).split(' ').slice(0, 8).join(' ')).toBe('F0c0 F1c0 F2c0 F3c0 F0c1 B0c1 F1c1 B1c1');
  });

  it('ZB-H1, P=4 N=8: rank r keeps up to r Ws pending and runs the rest at the end', () => {
    const s = zbH1({ ranks: 4, microBatches: 8 });
    expect(rankText(s, 0)).toBe(
      'F0 F1 F2 F3 Bi0 W0 F4 Bi1 W1 F5 Bi2 W2 F6 Bi3 W3 F7 Bi4 W4 Bi5 W5 Bi6 W6 Bi7 W7',
    );
    expect(rankText(s, 1)).toBe(
      'F0 F1 F2 Bi0 F3 Bi1 W0 F4 Bi2 W1 F5 Bi3 W2 F6 Bi4 W3 F7 Bi5 W4 Bi6 W5 Bi7 W6 W7',
    );
    expect(rankText(s, 3)).toBe(
      'F0 Bi0 F1 Bi1 F2 Bi2 F3 Bi3 W0 F4 Bi4 W1 F5 Bi5 W2 F6 Bi6 W3 F7 Bi7 W4 W5 W6 W7',
    );
  });

  it('1F1B-overlap, P=4 N=8: warm-up 2(P-r)-1, then F(k+w)&B(k) pairs, then the cool-down', () => {
    const s = oneFOneBOverlap({ ranks: 4, microBatches: 8 });
    expect(rankText(s, 0)).toBe('F0 F1 F2 F3 F4 F5 F6 F7&B0 B1 B2 B3 B4 B5 B6 B7');
    expect(rankText(s, 2)).toBe('F0 F1 F2 F3&B0 F4&B1 F5&B2 F6&B3 F7&B4 B5 B6 B7');
    expect(rankText(s, 3)).toBe('F0 F1&B0 F2&B1 F3&B2 F4&B3 F5&B4 F6&B5 F7&B6 B7');
  });
});

describe('structure', () => {
  const cases: [string, (P: number, N: number) => Schedule][] = [
    ['gpipe', (P, N) => gpipe({ ranks: P, microBatches: N })],
    ['1f1b', (P, N) => oneFOneB({ ranks: P, microBatches: N })],
    ['zb-h1', (P, N) => zbH1({ ranks: P, microBatches: N })],
    ['1f1b-overlap', (P, N) => oneFOneBOverlap({ ranks: P, microBatches: N })],
    ['interleaved v=3', (P, N) => interleavedOneFOneB({ ranks: P, microBatches: N, chunks: 3 })],
  ];
  for (const [name, make] of cases) {
    it(`${name}: one F and one backward per micro-batch and stage, on the placed rank`, () => {
      for (const [P, N] of [
        [2, 4],
        [4, 8],
        [4, 12],
        [6, 18],
      ] as const) {
        const s = make(P, N);
        expect(s.ops).toHaveLength(P);
        expect(s.phaseOf).toEqual(Array(N).fill(0));
        expect(s.placement[0]).toEqual(Array.from({ length: s.stages }, (_, st) => st % P));
        expectComplete(s);
      }
    });
  }

  it('sizes: S = P and one chunk, except interleaved (S = vP, v chunks)', () => {
    expect(oneFOneB({ ranks: 4, microBatches: 8 })).toMatchObject({ kind: '1f1b', stages: 4, chunks: 1 });
    expect(gpipe({ ranks: 4, microBatches: 8 })).toMatchObject({ kind: 'gpipe', stages: 4, chunks: 1 });
    expect(zbH1({ ranks: 4, microBatches: 8 })).toMatchObject({ kind: 'zb-h1', stages: 4, chunks: 1 });
    expect(oneFOneBOverlap({ ranks: 4, microBatches: 8 })).toMatchObject({ kind: '1f1b-overlap', stages: 4 });
    expect(interleavedOneFOneB({ ranks: 4, microBatches: 8, chunks: 3 })).toMatchObject({
      kind: 'interleaved',
      stages: 12,
      chunks: 3,
    });
  });
});

describe('replay over P in {2, 4, 6, 8, 16}, N in [2P, 4P]', () => {
  it('GPipe: no deadlock, bubble (P-1)(F+B), peak activations N on every rank', () => {
    for (const [P, N] of grid()) {
      const report = validateSchedule(gpipe({ ranks: P, microBatches: N }), SPEC_COSTS);
      for (const rank of report.ranks) {
        expect(rank.bubble, `P=${P} N=${N} rank ${rank.rank}`).toBe((P - 1) * 3);
        expect(rank.peakActivations).toBe(N);
      }
      expect(report.fifo).toBe(true);
    }
  });

  it('1F1B: bubble (P-1)(F+B), peak activations P-r on rank r', () => {
    for (const [P, N] of grid()) {
      const report = validateSchedule(oneFOneB({ ranks: P, microBatches: N }), SPEC_COSTS);
      expect(report.makespan).toBe((N + P - 1) * 3);
      for (const rank of report.ranks) {
        expect(rank.bubble, `P=${P} N=${N} rank ${rank.rank}`).toBe((P - 1) * 3);
        expect(rank.peakActivations).toBe(Math.min(P - rank.rank, N));
        expect(rank.peakPendingW).toBe(0);
      }
      expect(report.fifo).toBe(true);
    }
  });

  it('1F1B with N < P: peak activations min(P-r, N), no deadlock', () => {
    for (const P of RANKS) {
      for (const N of [1, P - 1]) {
        const report = validateSchedule(oneFOneB({ ranks: P, microBatches: N }), SPEC_COSTS);
        for (const rank of report.ranks) expect(rank.peakActivations).toBe(Math.min(P - rank.rank, N));
      }
    }
  });

  it('interleaved, v in {2, 3, 4}: bubble (P-1)(F+B)/v, peak 2(P-r-1) + (v-1)P + 1 chunk activations', () => {
    for (const v of [2, 3, 4]) {
      // F and B of one chunk are 1/v of the rank's share of the model.
      const costs: OpCosts = { F: 1 / v, B: 2 / v, W: 1 / v };
      for (const [P, N] of grid(true)) {
        const report = validateSchedule(interleavedOneFOneB({ ranks: P, microBatches: N, chunks: v }), costs);
        for (const rank of report.ranks) {
          expect(rank.bubble, `v=${v} P=${P} N=${N} rank ${rank.rank}`).toBeCloseTo(((P - 1) * 3) / v, 9);
          expect(rank.peakActivations).toBe(Math.min(2 * (P - rank.rank - 1) + (v - 1) * P + 1, N * v));
        }
        expect(report.fifo).toBe(true);
      }
    }
  });

  it('interleaved: peak activations on rank 0 are P + (P-1)/v micro-batches of the whole rank', () => {
    for (const v of [2, 4]) {
      for (const P of RANKS) {
        const report = validateSchedule(interleavedOneFOneB({ ranks: P, microBatches: 4 * P, chunks: v }));
        expect(report.ranks[0]!.peakActivations / v).toBeCloseTo(P + (P - 1) / v, 9);
      }
    }
  });

  it('ZB-H1: bubble (P-1)(F+B-2W), peak activations P-r, at most r+1 pending Ws on rank r', () => {
    for (const costs of [SPEC_COSTS, { F: 2, B: 3, W: 1 }, { F: 1, B: 2, W: 0.5 }]) {
      for (const [P, N] of grid()) {
        const report = validateSchedule(zbH1({ ranks: P, microBatches: N }), costs);
        for (const rank of report.ranks) {
          const at = `${JSON.stringify(costs)} P=${P} N=${N} rank ${rank.rank}`;
          expect(rank.bubble, at).toBeCloseTo((P - 1) * (costs.F + costs.B - 2 * costs.W), 9);
          expect(rank.peakActivations, at).toBe(P - rank.rank);
          expect(rank.peakPendingW, at).toBe(rank.rank + 1);
        }
        expect(report.fifo).toBe(true);
      }
    }
  });

  it('ZB-H1 vs 1F1B at the SPEC costs: bubble P-1 instead of 3(P-1)', () => {
    const costs = SPEC_COSTS;
    const zb = validateSchedule(zbH1({ ranks: 8, microBatches: 20 }), costs);
    const base = validateSchedule(oneFOneB({ ranks: 8, microBatches: 20 }), costs);
    expect(zb.bubble.max).toBe(7);
    expect(base.bubble.max).toBe(21);
  });

  it('1F1B-overlap: with F&B = F + B the bubble is that of 1F1B, (P-1)(F+B); peak activations 2(P-r)', () => {
    for (const [P, N] of grid()) {
      const report = validateSchedule(oneFOneBOverlap({ ranks: P, microBatches: N }), SPEC_COSTS);
      for (const rank of report.ranks) {
        expect(rank.bubble, `P=${P} N=${N} rank ${rank.rank}`).toBe((P - 1) * 3);
        expect(rank.peakActivations).toBe(2 * (P - rank.rank));
      }
      expect(report.fifo).toBe(true);
    }
  });

  it('1F1B-overlap: a cheaper pair shortens the step to N*FB + (P-1)(F+B) + (F+B-FB)', () => {
    for (const FB of [2, 2.5]) {
      for (const [P, N] of grid()) {
        const report = validateSchedule(oneFOneBOverlap({ ranks: P, microBatches: N }), {
          F: 1,
          B: 2,
          W: 1,
          FB,
        });
        expect(report.makespan, `FB=${FB} P=${P} N=${N}`).toBeCloseTo(N * FB + (P - 1) * 3 + (3 - FB), 9);
      }
    }
  });
});

describe('generateSchedule', () => {
  it('dispatches every kind to its generator', () => {
    const request = { ranks: 4, microBatches: 8 };
    expect(generateSchedule({ kind: 'gpipe', ...request })).toEqual(gpipe(request));
    expect(generateSchedule({ kind: '1f1b', ...request })).toEqual(oneFOneB(request));
    expect(generateSchedule({ kind: 'zb-h1', ...request })).toEqual(zbH1(request));
    expect(generateSchedule({ kind: '1f1b-overlap', ...request })).toEqual(oneFOneBOverlap(request));
    expect(generateSchedule({ kind: 'interleaved', ...request })).toEqual(interleavedOneFOneB(request));
    expect(generateSchedule({ kind: 'interleaved', ...request, chunks: 4 })).toEqual(
      interleavedOneFOneB({ ...request, chunks: 4 }),
    );
    expect(generateSchedule({ kind: 'dualpipe', ...request })).toEqual(dualPipe(request));
    expect(generateSchedule({ kind: 'dualpipev', ...request })).toEqual(dualPipeV(request));
  });

  it('returns a schedule of the requested kind for every kind', () => {
    for (const kind of [
      'gpipe',
      '1f1b',
      'interleaved',
      'zb-h1',
      'dualpipe',
      'dualpipev',
      '1f1b-overlap',
    ] as const) {
      const s = generateSchedule({ kind, ranks: 4, microBatches: 8, layers: 48 });
      expect(s.kind).toBe(kind);
      expect(() => validateSchedule(s)).not.toThrow();
    }
  });

  it('accepts layers that the stages divide', () => {
    expect(generateSchedule({ kind: '1f1b', ranks: 4, microBatches: 8, layers: 32 }).stages).toBe(4);
    expect(
      generateSchedule({ kind: 'interleaved', ranks: 4, microBatches: 8, chunks: 2, layers: 16 }).stages,
    ).toBe(8);
  });
});

describe('errors', () => {
  it('ranks: an integer >= 2', () => {
    expectPlanError(
      () => generateSchedule({ kind: '1f1b', ranks: 1, microBatches: 8 }),
      /^`ranks` passed to generateSchedule\(\) must be an integer >= 2, got 1$/,
    );
    expectPlanError(
      () => generateSchedule({ kind: 'gpipe', ranks: 2.5, microBatches: 8 }),
      /`ranks` passed to generateSchedule\(\) must be an integer >= 2, got 2\.5/,
    );
    expectPlanError(() => oneFOneB({ ranks: 0, microBatches: 8 }), /`ranks` passed to oneFOneB\(\)/);
  });

  it('microBatches: an integer >= 1', () => {
    expectPlanError(
      () => generateSchedule({ kind: 'zb-h1', ranks: 4, microBatches: 0 }),
      /^`microBatches` passed to generateSchedule\(\) must be an integer >= 1, got 0$/,
    );
  });

  it('kind: one of SCHEDULE_KINDS', () => {
    expectPlanError(
      () => generateSchedule({ kind: 'pipedream' as ScheduleKind, ranks: 4, microBatches: 8 }),
      /^`kind` passed to generateSchedule\(\) must be one of gpipe, 1f1b, .*, got "pipedream"$/,
    );
  });

  it('unknown request keys are errors', () => {
    const request = { kind: '1f1b', ranks: 4, microBatches: 8, layer: 32 } as unknown as Parameters<
      typeof generateSchedule
    >[0];
    expectPlanError(
      () => generateSchedule(request),
      /`request` passed to generateSchedule\(\) .*got "layer"/,
    );
  });

  it('layers: a multiple of the stages', () => {
    expectPlanError(
      () => generateSchedule({ kind: 'interleaved', ranks: 8, microBatches: 16, chunks: 2, layers: 30 }),
      /^`layers` passed to generateSchedule\(\) must be a multiple of the stages \(16\), got 30$/,
    );
    expectPlanError(
      () => generateSchedule({ kind: 'dualpipev', ranks: 4, microBatches: 8, layers: 12 }),
      /`layers` passed to generateSchedule\(\) must be a multiple of the stages \(8\), got 12/,
    );
    expectPlanError(() => gpipe({ ranks: 4, microBatches: 8, layers: 6 }), /stages \(4\), got 6/);
  });

  it("interleaved: N % P == 0, named after Megatron's micro-batch groups", () => {
    expectPlanError(
      () => generateSchedule({ kind: 'interleaved', ranks: 4, microBatches: 6 }),
      /`microBatches` passed to interleavedOneFOneB\(\) must be a multiple of `ranks` \(4\): .*microbatch_group_size_per_vp_stage.*N % P == 0, got 6$/,
    );
  });

  it('chunks: interleaved takes an integer >= 2; other kinds take none', () => {
    expectPlanError(
      () => generateSchedule({ kind: 'interleaved', ranks: 4, microBatches: 8, chunks: 1 }),
      /`chunks` passed to generateSchedule\(\) must be an integer >= 2, got 1/,
    );
    expectPlanError(
      () => generateSchedule({ kind: '1f1b', ranks: 4, microBatches: 8, chunks: 2 }),
      /`chunks` passed to generateSchedule\(\) must be left out for '1f1b' \(only 'interleaved' takes chunks\), got 2/,
    );
  });

  it("DualPipe's own constraints come from its generator", () => {
    expectPlanError(() => generateSchedule({ kind: 'dualpipe', ranks: 4, microBatches: 6 }), /microBatches/);
  });
});

describe('TSDoc examples', () => {
  it('gpipe', () => {
    expect(kinds(gpipe({ ranks: 2, microBatches: 3 }), 1)).toBe('F F F B B B');
  });
  it('oneFOneB', () => {
    const schedule = oneFOneB({ ranks: 4, microBatches: 8 });
    expect(
      schedule.ops[3]!.slice(0, 4)
        .map((op) => op.kind)
        .join(' '),
    ).toBe('F B F B');
  });
  it('zbH1', () => {
    expect(kinds(zbH1({ ranks: 2, microBatches: 3 }), 1)).toBe('F Bi F Bi W F Bi W W');
  });
  it('oneFOneBOverlap', () => {
    expect(kinds(oneFOneBOverlap({ ranks: 2, microBatches: 4 }), 1)).toBe('F F&B F&B F&B B');
  });
  it('interleavedOneFOneB', () => {
    const schedule = interleavedOneFOneB({ ranks: 2, microBatches: 4, chunks: 2 });
    expect(schedule.placement[0]).toEqual([0, 1, 0, 1]);
    expect(schedule.ops[0]!.length).toBe(16);
  });
  it('generateSchedule', () => {
    expect(generateSchedule({ kind: '1f1b', ranks: 4, microBatches: 8 }).ops[0]!.length).toBe(16);
    expectPlanError(
      () => generateSchedule({ kind: 'interleaved', ranks: 4, microBatches: 8, chunks: 2, layers: 30 }),
      /^`layers` passed to generateSchedule\(\) must be a multiple of the stages \(8\), got 30$/,
    );
  });
});
