/**
 * Per-layer expert loads from a Switchyard training run's `metrics.jsonl`: each line is one
 * optimizer step, `{ step, tokens, expertLoad, ... }`, where `expertLoad[l][e]` is the share of the
 * step's routed assignments of MoE layer l that went to expert e and `tokens` counts the training
 * tokens seen so far. This file reads that format as text (the plan package does not depend on the
 * trainer, and runs in the browser).
 */
import { checkInt, invalidArgument, PlanError } from '../errors';

/** Options of {@link parseRunLoads}. */
export interface RunLoadOptions {
  /** Use the last `steps` steps only (default: all). */
  readonly steps?: number;
  /** K: experts per token, to turn shares into assignment counts (default 1: counts of tokens x shares). */
  readonly topK?: number;
}

/** Loads read from a run. */
export interface RunLoads {
  /** [L][E] assignments per expert summed over the steps used: share x the step's tokens x K. */
  readonly load: number[][];
  /** Steps used, first and last step number. */
  readonly steps: number;
  readonly firstStep: number;
  readonly lastStep: number;
}

interface StepLine {
  readonly step: number;
  readonly tokens: number;
  readonly expertLoad: number[][];
}

/**
 * Reads the per-layer expert loads of a Switchyard run from the text of its `metrics.jsonl`: per
 * step, the `expertLoad` shares times the step's tokens (the difference of the cumulative `tokens`
 * of consecutive lines) times K, summed over the last `steps` steps. A step logged twice (a resumed
 * run) counts once, its last line.
 *
 * When to use: to place experts (`switchyard-plan eplb --load RUN_FOLDER`) or plan cross-datacenter
 * EP from the loads a real training run saw.
 *
 * @example
 * ```ts
 * const text = [
 *   '{"step":1,"tokens":1000,"expertLoad":[[0.75,0.25]]}',
 *   '{"step":2,"tokens":3000,"expertLoad":[[0.5,0.5]]}',
 * ].join('\n');
 * parseRunLoads(text, { topK: 2 }).load; // [[3500, 2500]]: 1000 x 2 x (0.75, 0.25) + 2000 x 2 x (0.5, 0.5)
 * ```
 */
export function parseRunLoads(metricsJsonl: string, options: RunLoadOptions = {}): RunLoads {
  const fn = 'parseRunLoads';
  if (typeof metricsJsonl !== 'string')
    throw invalidArgument(fn, 'metricsJsonl', 'the text of a metrics.jsonl', metricsJsonl);
  const topK = checkInt(fn, 'options.topK', options.topK ?? 1, 1);
  const byStep = new Map<number, StepLine>();
  metricsJsonl.split('\n').forEach((text, i) => {
    if (text.trim() === '') return;
    let row: unknown;
    try {
      row = JSON.parse(text);
    } catch (e) {
      throw new PlanError(
        'INVALID_ARGUMENT',
        `metrics.jsonl line ${i + 1} passed to ${fn}() is not JSON: ${(e as Error).message}`,
      );
    }
    const r = row as Partial<StepLine>;
    if (typeof r !== 'object' || r === null || !Number.isInteger(r.step) || typeof r.tokens !== 'number') {
      throw new PlanError(
        'INVALID_ARGUMENT',
        `metrics.jsonl line ${i + 1} passed to ${fn}() must have an integer "step" and a number "tokens"`,
      );
    }
    if (r.expertLoad === undefined) return;
    if (!Array.isArray(r.expertLoad) || !r.expertLoad.every((l) => Array.isArray(l))) {
      throw new PlanError(
        'INVALID_ARGUMENT',
        `metrics.jsonl line ${i + 1} passed to ${fn}() must have "expertLoad" as [layer][expert] shares`,
      );
    }
    byStep.set(r.step!, r as StepLine);
  });
  const lines = [...byStep.values()].sort((a, b) => a.step - b.step);
  if (lines.length === 0) {
    throw new PlanError('INVALID_ARGUMENT', `metrics.jsonl passed to ${fn}() has no step with "expertLoad"`);
  }
  const tokensBefore = lines.map((_, i) => (i === 0 ? undefined : lines[i - 1]!.tokens));
  const steps = options.steps === undefined ? lines.length : checkInt(fn, 'options.steps', options.steps, 1);
  const start = Math.max(0, lines.length - steps);
  const used = lines.slice(start);
  const first = used[0]!;
  const layers = first.expertLoad.length;
  const experts = first.expertLoad[0]?.length ?? 0;
  const load = Array.from({ length: layers }, () => new Array<number>(experts).fill(0));
  used.forEach((line, i) => {
    const before = tokensBefore[start + i];
    // The first logged step's tokens are all its own; later ones differ from the line before.
    const stepTokens = before === undefined ? line.tokens : line.tokens - before;
    if (line.expertLoad.length !== layers || line.expertLoad.some((row) => row.length !== experts)) {
      throw new PlanError(
        'INVALID_ARGUMENT',
        `metrics.jsonl step ${line.step} passed to ${fn}() has expertLoad of another shape than step ${first.step} ([${layers}][${experts}]; rows must not be ragged)`,
      );
    }
    line.expertLoad.forEach((row, l) => {
      row.forEach((share, e) => {
        if (typeof share !== 'number' || !(share >= 0)) {
          throw new PlanError(
            'INVALID_ARGUMENT',
            `metrics.jsonl step ${line.step} passed to ${fn}(): expertLoad[${l}][${e}] must be a share >= 0, got ${JSON.stringify(share)}`,
          );
        }
        load[l]![e]! += share * Math.max(0, stepTokens) * topK;
      });
    });
  });
  return { load, steps: used.length, firstStep: first.step, lastStep: used.at(-1)!.step };
}
