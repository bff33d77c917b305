import { describe, expect, it } from 'vitest';
import { dualPipe, dualPipeV } from './dualpipe';
import {
  formatScheduleSvg,
  formatScheduleText,
  opToken,
  scheduleToJson,
  type TimelineSource,
} from './format';
import type { Schedule, ScheduleOp, StageWork } from './types';
import { validateSchedule } from './validate';

function work(kind: StageWork['kind'], microBatch: number, stage: number, chunk = 0): StageWork {
  return { kind, microBatch, stage, chunk, phase: 0 };
}

/** A hand-made two-rank schedule of some kind (ops need not be valid for the formatters). */
function tiny(kind: Schedule['kind'], chunks: number, ops: ScheduleOp[][]): Schedule {
  return {
    kind,
    ranks: ops.length,
    microBatches: 1,
    stages: 2,
    chunks,
    placement: [[0, 1]],
    phaseOf: [0],
    ops,
  };
}

describe('opToken', () => {
  it('names DualPipe work by its stage copy, i for input-grad only, W without a digit', () => {
    const s = dualPipe({ ranks: 4, microBatches: 8 });
    expect(opToken(s, s.ops[1]![0]!)).toBe('F0');
    const tokens = new Set(s.ops.flat().map((op) => opToken(s, op)));
    expect([...tokens].sort()).toEqual(['B0', 'B0i', 'B1', 'B1i', 'F0', 'F0&B1', 'F1', 'F1&B0', 'W']);
  });

  it('names DualPipeV work by its leg', () => {
    const s = dualPipeV({ ranks: 2, microBatches: 4 });
    expect(s.ops[1]!.slice(0, 2).map((op) => opToken(s, op))).toEqual(['F0', 'F1']);
  });

  it('adds a chunk suffix to the other kinds only when a rank holds several chunks', () => {
    const one = tiny('1f1b', 1, [[]]);
    expect(opToken(one, work('F', 0, 0))).toBe('F');
    expect(opToken(one, work('Bi', 0, 0))).toBe('Bi');
    expect(opToken(one, work('W', 0, 0))).toBe('W');
    const pair: ScheduleOp = {
      kind: 'F&B',
      forward: { ...work('F', 1, 0), kind: 'F' },
      backward: { ...work('B', 0, 0), kind: 'B' },
    };
    expect(opToken(tiny('1f1b-overlap', 1, [[]]), pair)).toBe('F&B');
    const two = tiny('interleaved', 2, [[]]);
    expect(opToken(two, work('F', 0, 1, 1))).toBe('Fc1');
    expect(opToken(two, work('Bi', 0, 0, 0))).toBe('Bic0');
    expect(opToken(two, pair)).toBe('Fc0&Bc0');
  });
});

describe('formatScheduleText', () => {
  it('prints one line per rank (the TSDoc example)', () => {
    const lines = formatScheduleText(dualPipe({ ranks: 4, microBatches: 8 })).split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toBe('rank 0: F0 F0 F0 F1 B1i W F1 F0&B1 F1&B0 B1 F1&B0 B1 B0i W B0i W');
  });

  it('prints a rank with no ops as an empty line after its label', () => {
    expect(formatScheduleText(tiny('gpipe', 1, [[work('F', 0, 0), work('B', 0, 0)], []]))).toBe(
      'rank 0: F B\nrank 1:',
    );
  });
});

describe('scheduleToJson', () => {
  it('keeps only the schedule fields, in a fixed order', () => {
    const s = dualPipe({ ranks: 2, microBatches: 4 });
    // Same content, fields in another order and one extra: the JSON text is that of the original.
    const shuffled = {
      ops: s.ops.map((ops) =>
        ops.map((op) =>
          op.kind === 'F&B'
            ? { backward: { ...op.backward }, forward: { ...op.forward }, kind: op.kind }
            : {
                phase: op.phase,
                chunk: op.chunk,
                stage: op.stage,
                microBatch: op.microBatch,
                kind: op.kind,
                note: 'x',
              },
        ),
      ),
      phaseOf: s.phaseOf,
      placement: s.placement,
      chunks: s.chunks,
      stages: s.stages,
      microBatches: s.microBatches,
      ranks: s.ranks,
      kind: s.kind,
    } as Schedule;
    const text = JSON.stringify(scheduleToJson(s));
    expect(JSON.stringify(scheduleToJson(shuffled))).toBe(text);
    expect(Object.keys(JSON.parse(text))).toEqual([
      'kind',
      'ranks',
      'microBatches',
      'stages',
      'chunks',
      'placement',
      'phaseOf',
      'ops',
    ]);
    expect(JSON.parse(text)).toEqual(s);
    expect(text).toMatch(
      /^\{"kind":"dualpipe","ranks":2,"microBatches":4,"stages":2,"chunks":2,"placement":\[\[0,1\],\[1,0\]\]/,
    );
  });
});

describe('formatScheduleSvg', () => {
  it('draws one box per op of the replay, labelled with its token (the TSDoc example)', () => {
    const schedule = dualPipe({ ranks: 4, microBatches: 8 });
    const report = validateSchedule(schedule);
    const svg = formatScheduleSvg(schedule, report);
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="\d+" height="\d+"/);
    expect(svg.trimEnd()).toMatch(/<\/svg>$/);
    const ops = schedule.ops.flat().length;
    expect(svg.match(/<g><title>/g)).toHaveLength(ops);
    expect(svg).toContain('>F0&#38;B1</text>');
    expect(svg).not.toMatch(/&(?!#\d+;)/); // every & escaped
    for (let rank = 0; rank < 4; rank++) expect(svg).toContain(`>rank ${rank}</text>`);
  });

  it('places each box at start..end times the unit, after the label column', () => {
    const schedule = tiny('gpipe', 1, [[work('F', 0, 0), work('B', 0, 0)], []]);
    const replay: TimelineSource = {
      makespan: 3,
      ranks: [
        {
          timeline: [
            { op: schedule.ops[0]![0]!, start: 0, end: 1 },
            { op: schedule.ops[0]![1]!, start: 1, end: 3 },
          ],
        },
        { timeline: [] },
      ],
    };
    const svg = formatScheduleSvg(schedule, replay, { unit: 10, rowHeight: 20 });
    expect(svg).toContain('<rect x="60" y="9" height="18" width="10" fill="#f3b13d"/>');
    expect(svg).toContain('<rect x="70" y="9" height="18" width="20" fill="#7ccf5b"/>');
    expect(svg).toContain('<title>rank 0: B micro-batch 0 stage 0, 1..3</title>');
  });
});
