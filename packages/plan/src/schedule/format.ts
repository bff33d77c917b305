/**
 * Schedules as text, JSON and SVG: one line of op tokens per rank, a plain JSON object with a stable
 * field order, and a timeline drawing of a replay (one row per rank, one box per op).
 *
 * Tokens: DualPipe and DualPipeV use the reference's names, `F0 F1 B0 B1 B0i B1i W F0&B1 F1&B0`,
 * where the digit is the stage copy (`chunk`: DualPipe's direction, DualPipeV's leg) and `i` marks
 * a backward for the input gradient only. The other kinds use `F B Bi W`, with a `c<k>` chunk
 * suffix (`Fc1`) only when the schedule has more than one chunk per rank, and `F&B` for an
 * overlapped pair.
 */
import type { OverlapOp, Schedule, ScheduleOp, StageWork } from './types';

/** Kinds whose tokens carry DualPipe's digit. */
function usesDualPipeTokens(schedule: Pick<Schedule, 'kind'>): boolean {
  return schedule.kind === 'dualpipe' || schedule.kind === 'dualpipev';
}

function workToken(schedule: Pick<Schedule, 'kind' | 'chunks'>, work: StageWork): string {
  if (usesDualPipeTokens(schedule)) {
    if (work.kind === 'W') return 'W';
    const letter = work.kind === 'F' ? 'F' : 'B';
    return `${letter}${work.chunk}${work.kind === 'Bi' ? 'i' : ''}`;
  }
  return schedule.chunks > 1 ? `${work.kind}c${work.chunk}` : work.kind;
}

/**
 * The token of one op as {@link formatScheduleText} prints it (`F0`, `B1i`, `W`, `F0&B1`, `Fc1`, `F&B`).
 *
 * When to use: to label one op (a timeline cell, a log line) the way the text format does.
 *
 * @example
 * ```ts
 * const schedule = dualPipe({ ranks: 4, microBatches: 8 });
 * opToken(schedule, schedule.ops[1]![0]!); // 'F0'
 * ```
 */
export function opToken(schedule: Pick<Schedule, 'kind' | 'chunks'>, op: ScheduleOp): string {
  if (op.kind === 'F&B') return `${workToken(schedule, op.forward)}&${workToken(schedule, op.backward)}`;
  return workToken(schedule, op);
}

/**
 * The schedule as text, one line per rank: `rank 0: F0 F0 F0 F1 B1i W ...`.
 *
 * When to use: to print a schedule or compare it with a hand-written one in a test.
 *
 * @example
 * ```ts
 * formatScheduleText(dualPipe({ ranks: 4, microBatches: 8 })).split('\n')[0];
 * // 'rank 0: F0 F0 F0 F1 B1i W F1 F0&B1 F1&B0 B1 F1&B0 B1 B0i W B0i W'
 * ```
 */
export function formatScheduleText(schedule: Schedule): string {
  return schedule.ops
    .map((ops, rank) => `rank ${rank}: ${ops.map((op) => opToken(schedule, op)).join(' ')}`.trimEnd())
    .join('\n');
}

function workToJson(work: StageWork): StageWork {
  return {
    kind: work.kind,
    microBatch: work.microBatch,
    stage: work.stage,
    chunk: work.chunk,
    phase: work.phase,
  };
}

function opToJson(op: ScheduleOp): ScheduleOp {
  if (op.kind !== 'F&B') return workToJson(op);
  const pair: OverlapOp = {
    kind: 'F&B',
    forward: { ...workToJson(op.forward), kind: 'F' },
    backward: { ...workToJson(op.backward), kind: op.backward.kind },
  };
  return pair;
}

/**
 * A plain copy of the schedule for `JSON.stringify`: only the fields of {@link Schedule}, always in
 * the same order (`kind, ranks, microBatches, stages, chunks, placement, phaseOf, ops`; each op
 * `kind, microBatch, stage, chunk, phase`, a pair `kind, forward, backward`), so equal schedules
 * give equal JSON text.
 *
 * When to use: to save a schedule, diff two of them or hand one to another process.
 *
 * @example
 * ```ts
 * const text = JSON.stringify(scheduleToJson(dualPipe({ ranks: 4, microBatches: 8 })), null, 2);
 * ```
 */
export function scheduleToJson(schedule: Schedule): Schedule {
  return {
    kind: schedule.kind,
    ranks: schedule.ranks,
    microBatches: schedule.microBatches,
    stages: schedule.stages,
    chunks: schedule.chunks,
    placement: schedule.placement.map((row) => [...row]),
    phaseOf: [...schedule.phaseOf],
    ops: schedule.ops.map((ops) => ops.map(opToJson)),
  };
}

/** The part of a replay that {@link formatScheduleSvg} draws (a `validateSchedule()` report fits). */
export interface TimelineSource {
  /** End of the last op. */
  readonly makespan: number;
  /** Per rank, its ops with their start and end times. */
  readonly ranks: readonly {
    readonly timeline: readonly { readonly op: ScheduleOp; readonly start: number; readonly end: number }[];
  }[];
}

/** Sizes of the drawing of {@link formatScheduleSvg}. */
export interface SvgOptions {
  /** Pixels per time unit (default 20). */
  readonly unit?: number;
  /** Pixels per rank row (default 22). */
  readonly rowHeight?: number;
}

/** Fill colours per kind of work, after DualPipe's figures: forward orange, backward green, W blue. */
const SVG_COLOURS: Readonly<Record<StageWork['kind'], string>> = {
  F: '#f3b13d',
  B: '#7ccf5b',
  Bi: '#b9e5a4',
  W: '#86bdf0',
};

const SVG_LEGEND: readonly [string, readonly string[]][] = [
  ['forward', [SVG_COLOURS.F]],
  ['backward', [SVG_COLOURS.B]],
  ['backward for input', [SVG_COLOURS.Bi]],
  ['backward for weights', [SVG_COLOURS.W]],
  ['overlapped forward & backward', [SVG_COLOURS.F, SVG_COLOURS.B]],
];

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A number for an SVG attribute: at most two decimals, no trailing zeros. */
function px(value: number): string {
  return String(Math.round(value * 100) / 100);
}

function describeWork(work: StageWork): string {
  const phase = work.phase === 1 ? ' (phase 1)' : '';
  return `${work.kind} micro-batch ${work.microBatch} stage ${work.stage}${phase}`;
}

/** A tick spacing of 1, 2 or 5 times a power of ten giving at most about 20 ticks. */
function tickStep(makespan: number): number {
  const raw = Math.max(makespan, 1) / 20;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((k) => k * power).find((step) => step >= raw) ?? 10 * power;
}

/**
 * The replay of a schedule as an SVG timeline: one row per rank, one box per op from its start to
 * its end, labelled with its token ({@link opToken}) and coloured by kind (an F&B pair split
 * between the forward's and the backward's colour, with a heavier border); hovering a box shows
 * its micro-batch, stage and times.
 *
 * When to use: to look at a schedule's bubbles; get the times from `validateSchedule(schedule, costs)`.
 *
 * @example
 * ```ts
 * const schedule = dualPipe({ ranks: 4, microBatches: 8 });
 * const svg = formatScheduleSvg(schedule, validateSchedule(schedule));
 * ```
 */
export function formatScheduleSvg(
  schedule: Schedule,
  replay: TimelineSource,
  options: SvgOptions = {},
): string {
  const unit = options.unit ?? 20;
  const rowHeight = options.rowHeight ?? 22;
  const left = 60;
  const top = 8;
  const plotWidth = replay.makespan * unit;
  const axisY = top + replay.ranks.length * rowHeight;
  const legendY = axisY + 30;
  const width = Math.max(left + plotWidth + 10, 760);
  const height = legendY + 20;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${px(width)}" height="${px(height)}" viewBox="0 0 ${px(width)} ${px(height)}" font-family="sans-serif" font-size="10">`,
    `<title>${escapeXml(`${schedule.kind}: ${schedule.ranks} ranks, ${schedule.stages} stages, ${schedule.microBatches} micro-batches, makespan ${px(replay.makespan)}`)}</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
  ];
  replay.ranks.forEach(({ timeline }, rank) => {
    const y = top + rank * rowHeight;
    out.push(
      `<text x="${left - 6}" y="${px(y + rowHeight / 2 + 3.5)}" text-anchor="end">rank ${rank}</text>`,
      `<rect x="${left}" y="${px(y + 1)}" width="${px(plotWidth)}" height="${px(rowHeight - 2)}" fill="#f4f4f4"/>`,
    );
    for (const { op, start, end } of timeline) {
      const x = left + start * unit;
      const w = (end - start) * unit;
      const box = `y="${px(y + 1)}" height="${px(rowHeight - 2)}"`;
      const parts = op.kind === 'F&B' ? [op.forward, op.backward] : [op];
      const title = `rank ${rank}: ${parts.map(describeWork).join(' & ')}, ${px(start)}..${px(end)}`;
      out.push(`<g><title>${escapeXml(title)}</title>`);
      parts.forEach((work, k) => {
        const partX = x + (k * w) / parts.length;
        out.push(
          `<rect x="${px(partX)}" ${box} width="${px(w / parts.length)}" fill="${SVG_COLOURS[work.kind]}"/>`,
        );
      });
      const stroke = op.kind === 'F&B' ? 'stroke-width="1.5"' : 'stroke-width="0.5"';
      out.push(`<rect x="${px(x)}" ${box} width="${px(w)}" fill="none" stroke="#222222" ${stroke}/>`);
      out.push(
        `<text x="${px(x + w / 2)}" y="${px(y + rowHeight / 2 + 3.5)}" text-anchor="middle">${escapeXml(opToken(schedule, op))}</text></g>`,
      );
    }
  });
  const step = tickStep(replay.makespan);
  out.push(
    `<line x1="${left}" y1="${px(axisY)}" x2="${px(left + plotWidth)}" y2="${px(axisY)}" stroke="#222222"/>`,
  );
  for (let t = 0; t <= replay.makespan + 1e-9; t += step) {
    const x = px(left + t * unit);
    out.push(
      `<line x1="${x}" y1="${px(axisY)}" x2="${x}" y2="${px(axisY + 4)}" stroke="#222222"/>`,
      `<text x="${x}" y="${px(axisY + 15)}" text-anchor="middle">${px(t)}</text>`,
    );
  }
  let legendX = left;
  for (const [label, colours] of SVG_LEGEND) {
    colours.forEach((colour, k) => {
      out.push(
        `<rect x="${px(legendX + k * 6)}" y="${px(legendY - 9)}" width="${12 / colours.length}" height="12" fill="${colour}" stroke="#222222" stroke-width="0.5"/>`,
      );
    });
    out.push(`<text x="${px(legendX + 16)}" y="${px(legendY + 1)}">${escapeXml(label)}</text>`);
    legendX += 16 + label.length * 6 + 14;
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
