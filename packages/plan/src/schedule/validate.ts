/**
 * The schedule validator: checks a {@link Schedule} against the rules every pipeline schedule must
 * keep, then replays it as a discrete-event simulation and reports time, bubble and memory per rank.
 *
 * Letters: P ranks, N micro-batches, S stages, m a micro-batch, s a stage, F forward, B full backward,
 * Bi input-gradient backward, W weight gradient (B = Bi + W), F&B an overlapped forward/backward pair.
 * A "cell" is one (m, s): it needs exactly one F and one backward (a B, or a Bi and a later W).
 *
 * Replay rules: each rank runs its ops strictly in order; an op starts when its rank is free and all
 * its dependencies have finished (plus `costs.transfer` when the producer ran on another rank).
 * - F(m, s) needs F(m, s-1) (s > 0);
 * - B or Bi (m, s) needs F(m, s) and the backward of (m, s+1) (s < S-1; the last stage's backward
 *   starts from the loss, so it needs only its F);
 * - W(m, s) needs Bi(m, s);
 * - an F&B pair needs what both its parts need, and finishes both at its end.
 * Ranks share nothing but these dependencies (a transfer never waits for a link), so each op's start
 * is the latest of its rank's previous end and its inputs' arrival, whatever order events are taken in.
 */
import { checkInt, invalidArgument, PlanError } from '../errors';
import type { OpCosts, Schedule, ScheduleOp, StageWork } from './types';

/** The SPEC's unit costs: F = 1, B = 2, W = 1, F&B = 3, transfers free. */
export const defaultOpCosts: Required<OpCosts> = { F: 1, B: 2, W: 1, FB: 3, transfer: 0 };

/** Options of {@link validateSchedule}. */
export interface ValidateOptions {
  /** Throw when a rank breaks first-in-first-out order (see {@link RankReport.fifo}); default false: only report it. */
  readonly requireFifo?: boolean;
}

/** One op of a rank's replay: where it sits in the rank's order and when it ran. */
export interface TimedOp {
  readonly op: ScheduleOp;
  /** Index of the op in `schedule.ops[rank]`. */
  readonly index: number;
  readonly start: number;
  readonly end: number;
}

/** What the replay measured on one rank. */
export interface RankReport {
  readonly rank: number;
  /** Sum of the rank's op durations. */
  readonly busy: number;
  /** makespan - busy: time in [0, makespan] the rank computes nothing (waiting on others, or done early). */
  readonly idle: number;
  /**
   * The pipeline bubble as DualPipe's README and the SPEC count it: the rank's idle time over the
   * whole step, [0, makespan], = makespan - busy (the same number as `idle`; with `transfer > 0` it
   * includes waiting for transfers). It counts the wait before the rank's first op and after its
   * last: in 1F1B rank r starts r·F late and ends r·B early, and the idle time between its own first
   * and last op would be 21 - 3r, not the table's 21. Figures (F = 1, B = 2, W = 1, F&B = 3, P = 8):
   * 1F1B 21 = (P-1)(F+B) on every rank; DualPipe 6 = (P/2-1)(F&B+B-3W) on every rank, for any N.
   * Costs are per stage op: for interleaved 1F1B (v chunks) the table's F and B are a rank's whole
   * share, v times a chunk's.
   */
  readonly bubble: number;
  /** Max over the rank's order of activations held: +1 at each F, -1 at each B or Bi (in an F&B pair, the F counts first). */
  readonly peakActivations: number;
  /** Max over the rank's order of weight gradients pending: +1 at each Bi, -1 at each W. */
  readonly peakPendingW: number;
  /**
   * First-in-first-out: for every stage the rank runs, the backwards come in the micro-batch order of
   * the forwards, and the Ws in the order of the Bis. DualPipe's reference relies on both (chunk
   * counters per direction, one WeightGradStore queue per rank).
   */
  readonly fifo: boolean;
  /** Where FIFO first breaks on this rank, or null when {@link RankReport.fifo} holds. */
  readonly fifoBreak: string | null;
  /** Every op of the rank with its start and end, in the rank's order. */
  readonly timeline: readonly TimedOp[];
}

/** The result of {@link validateSchedule}. */
export interface ScheduleReport {
  /** End of the last op on any rank: the step time (the replay starts every rank at 0). */
  readonly makespan: number;
  /** The costs the replay used (defaults filled in). */
  readonly costs: Required<OpCosts>;
  /** Per rank, [P]. */
  readonly ranks: readonly RankReport[];
  /** Bubble over ranks: the largest and the mean of {@link RankReport.bubble}. */
  readonly bubble: { readonly max: number; readonly mean: number };
  /** True when every rank keeps FIFO order. */
  readonly fifo: boolean;
}

/**
 * Checks a schedule's rules and replays it: makespan, per-rank busy/idle/bubble, peak activations,
 * pending Ws, FIFO order and a timeline of every op.
 *
 * When to use: on every generated schedule before running or drawing it (generator tests call it),
 * and to compare schedules' bubbles and memory under given op costs.
 *
 * Throws PlanError `SCHEDULE_INVALID` when an op's micro-batch, stage, phase or chunk is out of range,
 * a stage runs on a rank other than its placement, a cell lacks exactly one F and one backward (B, or
 * Bi + W), a W comes before its Bi, or the replay deadlocks; also on broken FIFO order when
 * `options.requireFifo` (off by default: ops name their micro-batch, so a LIFO order such as GPipe's
 * paper figure is valid; DualPipe's and Megatron's executors are FIFO, and so are our generators).
 * Throws `INVALID_ARGUMENT` for a malformed schedule object or negative costs.
 *
 * @example
 * ```ts
 * // P = 1, N = 1, S = 1: F then B.
 * const report = validateSchedule({
 *   kind: 'gpipe', ranks: 1, microBatches: 1, stages: 1, chunks: 1, placement: [[0]], phaseOf: [0],
 *   ops: [[
 *     { kind: 'F', microBatch: 0, stage: 0, chunk: 0, phase: 0 },
 *     { kind: 'B', microBatch: 0, stage: 0, chunk: 0, phase: 0 },
 *   ]],
 * });
 * report.makespan; // 3
 * ```
 */
export function validateSchedule(
  schedule: Schedule,
  costs: OpCosts = defaultOpCosts,
  options: ValidateOptions = {},
): ScheduleReport {
  const fn = 'validateSchedule';
  const c = resolveCosts(fn, costs);
  checkScheduleStructure(fn, schedule);
  checkCells(fn, schedule);
  checkWAfterBi(fn, schedule);
  const timelines = replay(fn, schedule, c);
  const makespan = Math.max(0, ...timelines.map((t) => t.at(-1)?.end ?? 0));
  const ranks = timelines.map((timeline, rank) => rankReport(rank, timeline, makespan));
  const broken = ranks.find((r) => !r.fifo);
  if (options.requireFifo === true && broken !== undefined) {
    throw new PlanError(
      'SCHEDULE_INVALID',
      `${fn}(): rank ${broken.rank} breaks FIFO order: ${broken.fifoBreak}`,
    );
  }
  const bubbles = ranks.map((r) => r.bubble);
  const mean = bubbles.reduce((a, b) => a + b, 0) / Math.max(1, bubbles.length);
  return {
    makespan,
    costs: c,
    ranks,
    bubble: { max: Math.max(0, ...bubbles), mean },
    fifo: broken === undefined,
  };
}

// ---------------------------------------------------------------------------------------------------
// Op helpers

/**
 * The stage works of an op: itself, or an F&B pair's forward then its backward.
 *
 * When to use: to walk a schedule's work without special-casing overlapped pairs.
 *
 * @example
 * ```ts
 * const f = { kind: 'F', microBatch: 1, stage: 0, chunk: 0, phase: 0 } as const;
 * const b = { kind: 'B', microBatch: 0, stage: 0, chunk: 0, phase: 0 } as const;
 * partsOf({ kind: 'F&B', forward: f, backward: b }); // [f, b]
 * partsOf(f); // [f]
 * ```
 */
export function partsOf(op: ScheduleOp): readonly StageWork[] {
  return op.kind === 'F&B' ? [op.forward, op.backward] : [op];
}

/**
 * A short label for an op, the one error messages use: `F(m=2,s=1)`, `F(m=2,s=1)&Bi(m=0,s=3)`, and
 * `,ph=1` for phase 1.
 *
 * When to use: in messages, logs and drawings that name an op.
 *
 * @example
 * ```ts
 * opLabel({ kind: 'Bi', microBatch: 3, stage: 1, chunk: 1, phase: 1 }); // 'Bi(m=3,s=1,ph=1)'
 * ```
 */
export function opLabel(op: ScheduleOp): string {
  return partsOf(op)
    .map((w) => `${w.kind}(m=${w.microBatch},s=${w.stage}${w.phase === 1 ? ',ph=1' : ''})`)
    .join('&');
}

function isBackward(w: StageWork): boolean {
  return w.kind === 'B' || w.kind === 'Bi';
}

function where(fn: string, rank: number, index: number, op: ScheduleOp): string {
  return `${fn}(): rank ${rank} op #${index} ${opLabel(op)}`;
}

function invalid(message: string): PlanError {
  return new PlanError('SCHEDULE_INVALID', message);
}

function resolveCosts(fn: string, costs: OpCosts): Required<OpCosts> {
  const c = {
    F: costs.F,
    B: costs.B,
    W: costs.W,
    FB: costs.FB ?? costs.F + costs.B,
    transfer: costs.transfer ?? 0,
  };
  for (const key of ['F', 'B', 'W', 'FB', 'transfer'] as const) {
    if (!(Number.isFinite(c[key]) && c[key] >= 0)) {
      throw invalidArgument(fn, `costs.${key}`, 'a finite number >= 0', c[key]);
    }
  }
  if (c.W > c.B) throw invalidArgument(fn, 'costs.W', `<= costs.B (${c.B})`, c.W);
  if (c.W > c.FB) throw invalidArgument(fn, 'costs.W', `<= costs.FB (${c.FB})`, c.W);
  return c;
}

/** Duration of one op: F, B, Bi = B - W, W; F&B = FB, or FB - W when its backward is a Bi. */
function durationOf(op: ScheduleOp, c: Required<OpCosts>): number {
  switch (op.kind) {
    case 'F':
      return c.F;
    case 'B':
      return c.B;
    case 'Bi':
      return c.B - c.W;
    case 'W':
      return c.W;
    case 'F&B':
      return op.backward.kind === 'Bi' ? c.FB - c.W : c.FB;
  }
}

// ---------------------------------------------------------------------------------------------------
// Structure: sizes, ranges, placement

/**
 * Checks a schedule's sizes (P, N, S, chunks, placement, phaseOf, ops) and every op's micro-batch,
 * stage, chunk, phase and placement; not the cells, the order or the dependencies (that is
 * {@link validateSchedule}). Throws INVALID_ARGUMENT for a malformed object, SCHEDULE_INVALID for an op.
 *
 * When to use: at the start of a function that reads a schedule without replaying it
 * (`scheduleTransfers`); `fn` names that function in the messages.
 *
 * @example
 * ```ts
 * checkScheduleStructure('myTool', { ...schedule, ops: [] }); // throws: `schedule.ops` passed to myTool() must be an array of length P ...
 * ```
 */
export function checkScheduleStructure(fn: string, schedule: Schedule): void {
  const { ranks: P, microBatches: N, stages: S, chunks } = schedule;
  checkInt(fn, 'schedule.ranks', P, 1);
  checkInt(fn, 'schedule.microBatches', N, 1);
  checkInt(fn, 'schedule.stages', S, 1);
  checkInt(fn, 'schedule.chunks', chunks, 1);
  checkLength(fn, 'schedule.ops', schedule.ops, P);
  checkLength(fn, 'schedule.phaseOf', schedule.phaseOf, N);
  const phases: unknown = schedule.placement;
  if (!Array.isArray(phases) || phases.length < 1 || phases.length > 2) {
    throw invalidArgument(fn, 'schedule.placement', 'an array of 1 or 2 phases', phases);
  }
  for (const [phase, ranksS] of schedule.placement.entries()) {
    checkLength(fn, `schedule.placement[${phase}]`, ranksS, S);
    for (const [s, r] of ranksS.entries()) checkInt(fn, `schedule.placement[${phase}][${s}]`, r, 0, P - 1);
  }
  for (const [m, ph] of schedule.phaseOf.entries()) {
    checkInt(fn, `schedule.phaseOf[${m}]`, ph, 0, schedule.placement.length - 1);
  }
  for (const [rank, opsR] of schedule.ops.entries()) {
    const list: unknown = opsR;
    if (!Array.isArray(list)) throw invalidArgument(fn, `schedule.ops[${rank}]`, 'an array of ops', list);
    for (const [index, op] of opsR.entries()) checkOp(fn, schedule, rank, index, op);
  }
  checkChunksAgree(fn, schedule);
}

function checkLength(fn: string, arg: string, value: unknown, length: number): void {
  if (!Array.isArray(value) || value.length !== length) {
    const got = Array.isArray(value) ? `an array of length ${value.length}` : value;
    throw invalidArgument(fn, arg, `an array of length ${length}`, got);
  }
}

function checkOp(fn: string, schedule: Schedule, rank: number, index: number, op: ScheduleOp): void {
  checkPair(fn, rank, index, op);
  for (const w of partsOf(op)) {
    const at = where(fn, rank, index, op);
    const { microBatch: m, stage: s, phase } = w;
    const { microBatches: N, stages: S, chunks } = schedule;
    if (!['F', 'B', 'Bi', 'W'].includes(w.kind))
      throw invalid(`${at}: unknown kind ${JSON.stringify(w.kind)}`);
    if (!isIndex(m, N)) throw invalid(`${at}: micro-batch ${m} is out of range [0, ${N})`);
    if (!isIndex(s, S)) throw invalid(`${at}: stage ${s} is out of range [0, ${S})`);
    if (!isIndex(w.chunk, chunks)) throw invalid(`${at}: chunk ${w.chunk} is out of range [0, ${chunks})`);
    if (phase !== schedule.phaseOf[m]) {
      throw invalid(`${at}: phase ${phase}, but micro-batch ${m} has phase ${schedule.phaseOf[m]} (phaseOf)`);
    }
    const home = schedule.placement[phase]![s];
    if (home !== rank) {
      throw invalid(
        `${at}: stage ${s} of phase ${phase} runs on rank ${home} (placement[${phase}][${s}]), not ${rank}`,
      );
    }
  }
}

function checkPair(fn: string, rank: number, index: number, op: ScheduleOp): void {
  if (op.kind !== 'F&B') return;
  const back: unknown = op.backward?.kind;
  if (op.forward?.kind !== 'F' || (back !== 'B' && back !== 'Bi')) {
    throw invalid(`${fn}(): rank ${rank} op #${index} is an F&B pair whose parts are not an F and a B or Bi`);
  }
}

function isIndex(value: unknown, size: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < size;
}

/** Calls `visit` on every stage work of every op (an F&B pair's F, then its backward), rank by rank, in each rank's order. */
function eachWork(
  schedule: Schedule,
  visit: (w: StageWork, rank: number, index: number, op: ScheduleOp) => void,
): void {
  for (const [rank, opsR] of schedule.ops.entries()) {
    for (const [index, op] of opsR.entries()) {
      for (const w of partsOf(op)) visit(w, rank, index, op);
    }
  }
}

/** Every op of one (phase, stage) names the same chunk. */
function checkChunksAgree(fn: string, schedule: Schedule): void {
  const chunkOf = new Map<string, number>();
  eachWork(schedule, (w, rank, index, op) => {
    const key = `${w.phase}:${w.stage}`;
    const seen = chunkOf.get(key) ?? w.chunk;
    chunkOf.set(key, seen);
    if (seen !== w.chunk) {
      const was = `stage ${w.stage} of phase ${w.phase} ran as chunk ${seen} before`;
      throw invalid(`${where(fn, rank, index, op)}: chunk ${w.chunk}, but ${was}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Cells: exactly one F and one backward per (m, s); W after its Bi

/** Where a cell's F, backward and W were seen (`rank R op #I LABEL`), and the backward's kind. */
interface Seen {
  F?: string;
  back?: string;
  W?: string;
  backKind?: 'B' | 'Bi';
}

/** Every (m, s) has exactly one F, one backward (B or Bi), and a W exactly when the backward is a Bi. */
function checkCells(fn: string, schedule: Schedule): void {
  const S = schedule.stages;
  const seen: Seen[] = Array.from({ length: schedule.microBatches * S }, () => ({}));
  eachWork(schedule, (w, rank, index, op) => {
    const cell = seen[w.microBatch * S + w.stage]!;
    const slot = w.kind === 'F' ? 'F' : w.kind === 'W' ? 'W' : 'back';
    const here = `rank ${rank} op #${index} ${opLabel(op)}`;
    if (cell[slot] !== undefined) {
      const what = `${slot === 'back' ? 'backward (B or Bi)' : slot} of micro-batch ${w.microBatch} stage ${w.stage}`;
      throw invalid(`${fn}(): ${here}: duplicate ${what} (first at ${cell[slot]})`);
    }
    cell[slot] = here;
    if (w.kind === 'B' || w.kind === 'Bi') cell.backKind = w.kind;
  });
  for (const [cell, got] of seen.entries()) checkCell(fn, schedule, cell, got);
}

function checkCell(fn: string, schedule: Schedule, cell: number, got: Seen): void {
  const S = schedule.stages;
  const m = Math.floor(cell / S);
  const s = cell % S;
  const phase = schedule.phaseOf[m]!;
  const what = `micro-batch ${m} stage ${s} (phase ${phase}, rank ${schedule.placement[phase]![s]})`;
  if (got.F === undefined) throw invalid(`${fn}(): ${what} has no F`);
  if (got.back === undefined) throw invalid(`${fn}(): ${what} has no backward (B or Bi)`);
  if (got.backKind === 'Bi' && got.W === undefined) {
    throw invalid(`${fn}(): ${what} has a Bi (${got.back}) but no W`);
  }
  if (got.backKind === 'B' && got.W !== undefined) {
    throw invalid(`${fn}(): ${what} has a full B (${got.back}) and also a W (${got.W}); a W belongs to a Bi`);
  }
}

/** A W comes after the Bi of its (m, s) (both on the stage's rank, so this is an order within one rank). */
function checkWAfterBi(fn: string, schedule: Schedule): void {
  const doneBi = new Set<number>();
  eachWork(schedule, (w, rank, index, op) => {
    const cell = w.microBatch * schedule.stages + w.stage;
    if (w.kind === 'Bi') doneBi.add(cell);
    if (w.kind === 'W' && !doneBi.has(cell)) {
      throw invalid(`${where(fn, rank, index, op)}: W comes before its Bi on rank ${rank}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------------
// Replay

/** A finished piece of work: F or backward of one cell. */
interface Dep {
  readonly kind: 'F' | 'back';
  readonly microBatch: number;
  readonly stage: number;
}

/** What one stage work waits for (see the file's header). */
function depsOf(w: StageWork, S: number): Dep[] {
  const { microBatch: m, stage: s } = w;
  if (w.kind === 'F') return s > 0 ? [{ kind: 'F', microBatch: m, stage: s - 1 }] : [];
  if (w.kind === 'W') return [{ kind: 'back', microBatch: m, stage: s }];
  const deps: Dep[] = [{ kind: 'F', microBatch: m, stage: s }];
  if (s < S - 1) deps.push({ kind: 'back', microBatch: m, stage: s + 1 });
  return deps;
}

/** End times of finished F and backward work, per cell. */
class DoneTimes {
  private readonly ends: Record<Dep['kind'], (number | undefined)[]> = { F: [], back: [] };

  constructor(private readonly schedule: Schedule) {}

  /** When `dep`'s output is available on `rank`, or undefined if it has not run yet. */
  readyOn(dep: Dep, rank: number, transfer: number): number | undefined {
    const end = this.ends[dep.kind][this.cell(dep)];
    if (end === undefined) return undefined;
    return this.rankOf(dep) === rank ? end : end + transfer;
  }

  finish(w: StageWork, end: number): void {
    if (w.kind !== 'W') this.ends[w.kind === 'F' ? 'F' : 'back'][this.cell(w)] = end;
  }

  rankOf(dep: Dep): number {
    return this.schedule.placement[this.schedule.phaseOf[dep.microBatch]!]![dep.stage]!;
  }

  private cell(d: { microBatch: number; stage: number }): number {
    return d.microBatch * this.schedule.stages + d.stage;
  }
}

/** Runs every rank's ops in order as soon as their dependencies allow; throws on deadlock. */
function replay(fn: string, schedule: Schedule, c: Required<OpCosts>): TimedOp[][] {
  const done = new DoneTimes(schedule);
  const timelines: TimedOp[][] = schedule.ops.map(() => []);
  let progressed = true;
  while (progressed) {
    progressed = false;
    schedule.ops.forEach((opsR, rank) => {
      const timeline = timelines[rank]!;
      for (let index = timeline.length; index < opsR.length; index++) {
        const op = opsR[index]!;
        const ready = readyTime(schedule, done, op, rank, c.transfer);
        if (ready === undefined) break;
        const start = Math.max(ready, timeline.at(-1)?.end ?? 0);
        const end = start + durationOf(op, c);
        timeline.push({ op, index, start, end });
        for (const w of partsOf(op)) done.finish(w, end);
        progressed = true;
      }
    });
  }
  if (timelines.some((t, rank) => t.length < schedule.ops[rank]!.length)) {
    throw deadlock(fn, schedule, timelines, done);
  }
  return timelines;
}

/** When all of `op`'s dependencies are available on `rank`, or undefined if one has not run. */
function readyTime(
  schedule: Schedule,
  done: DoneTimes,
  op: ScheduleOp,
  rank: number,
  transfer: number,
): number | undefined {
  let ready = 0;
  for (const w of partsOf(op)) {
    for (const dep of depsOf(w, schedule.stages)) {
      const t = done.readyOn(dep, rank, transfer);
      if (t === undefined) return undefined;
      ready = Math.max(ready, t);
    }
  }
  return ready;
}

function deadlock(fn: string, schedule: Schedule, timelines: TimedOp[][], done: DoneTimes): PlanError {
  const stuck: string[] = [];
  schedule.ops.forEach((opsR, rank) => {
    const index = timelines[rank]!.length;
    const op = opsR[index];
    if (op === undefined) return;
    const waits = partsOf(op)
      .flatMap((w) => depsOf(w, schedule.stages))
      .filter((dep) => done.readyOn(dep, rank, 0) === undefined)
      .map(
        (dep) =>
          `${dep.kind === 'F' ? 'F' : 'backward'}(m=${dep.microBatch},s=${dep.stage}) on rank ${done.rankOf(dep)}`,
      );
    stuck.push(`rank ${rank} op #${index} ${opLabel(op)} waits for ${waits.join(', ')}`);
  });
  return invalid(`${fn}(): the replay deadlocks: ${stuck.join('; ')}`);
}

// ---------------------------------------------------------------------------------------------------
// Per-rank report

function rankReport(rank: number, timeline: TimedOp[], makespan: number): RankReport {
  const busy = timeline.reduce((sum, t) => sum + (t.end - t.start), 0);
  const parts = timeline.flatMap((t) => partsOf(t.op));
  const fifoBreak = findFifoBreak(parts);
  return {
    rank,
    busy,
    idle: makespan - busy,
    bubble: makespan - busy,
    peakActivations: peakOf(parts, (w) => (w.kind === 'F' ? 1 : isBackward(w) ? -1 : 0)),
    peakPendingW: peakOf(parts, (w) => (w.kind === 'Bi' ? 1 : w.kind === 'W' ? -1 : 0)),
    fifo: fifoBreak === null,
    fifoBreak,
    timeline,
  };
}

/** Max of the running sum of `step` over `parts` (starting at 0). */
function peakOf(parts: readonly StageWork[], step: (w: StageWork) => number): number {
  let held = 0;
  let peak = 0;
  for (const w of parts) {
    held += step(w);
    peak = Math.max(peak, held);
  }
  return peak;
}

/** The first place where backwards leave their stage's forward order, or Ws their Bis' order. */
function findFifoBreak(parts: readonly StageWork[]): string | null {
  const byStage = new Map<string, { forwards: number[]; backwards: number[] }>();
  const bis: StageWork[] = [];
  const ws: StageWork[] = [];
  for (const w of parts) {
    const key = `stage ${w.stage} of phase ${w.phase}`;
    const lists = byStage.get(key) ?? { forwards: [], backwards: [] };
    byStage.set(key, lists);
    if (w.kind === 'F') lists.forwards.push(w.microBatch);
    if (isBackward(w)) lists.backwards.push(w.microBatch);
    if (w.kind === 'Bi') bis.push(w);
    if (w.kind === 'W') ws.push(w);
  }
  for (const [key, { forwards, backwards }] of byStage) {
    const i = forwards.findIndex((m, k) => m !== backwards[k]);
    if (i >= 0)
      return `${key}: forward #${i} is micro-batch ${forwards[i]}, backward #${i} is ${backwards[i]}`;
  }
  const j = ws.findIndex((w, k) => w.microBatch !== bis[k]!.microBatch || w.stage !== bis[k]!.stage);
  if (j < 0) return null;
  return `W #${j} is ${opLabel(ws[j]!)}, but Bi #${j} is ${opLabel(bis[j]!)}`;
}
