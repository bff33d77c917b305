/**
 * One GPU's two streams, compute and communication, as a discrete-event simulation of a task
 * graph: each task runs on one stream, after the tasks it depends on, and a stream runs one task
 * at a time. Whenever a stream is free it starts the ready task that became ready first (ties: the
 * one listed first), non-preemptively; so two independent chains (an F&B pair) interleave, and each
 * layer of the pair costs about max(compute, communication) instead of their sum.
 */
import { invalidArgument } from '../errors';

/** Which stream a task runs on. */
export type StreamKind = 'compute' | 'comm';

/** One task of a GPU's op graph. */
export interface StreamTask {
  readonly stream: StreamKind;
  /** Seconds. */
  readonly duration: number;
  /** Indices of tasks (earlier in the list) that must finish first. */
  readonly deps: readonly number[];
  /** Label for timelines (`F.attn[3]`). */
  readonly label: string;
}

/** The result of {@link runStreams}. */
export interface StreamRun {
  /** End of the last task. */
  readonly makespan: number;
  /** Sum of compute-task durations. */
  readonly compute: number;
  /** Sum of communication-task durations. */
  readonly comm: number;
  /** makespan - compute: communication (or waiting on it) the compute stream did not hide. */
  readonly exposedComm: number;
  /** Start and end of each task, in the input's order. */
  readonly starts: readonly number[];
  readonly ends: readonly number[];
}

/**
 * Runs a task graph on one GPU's compute and communication streams (see the file header).
 *
 * When to use: to cost an op (F, B, an F&B pair) from its per-layer tasks; the cluster simulator
 * calls it per stage and op kind.
 *
 * @example
 * ```ts
 * // Two independent chains compute 1 -> comm 1: they overlap, 3 instead of 4.
 * runStreams([
 *   { stream: 'compute', duration: 1, deps: [], label: 'a' },
 *   { stream: 'comm', duration: 1, deps: [0], label: 'b' },
 *   { stream: 'compute', duration: 1, deps: [], label: 'c' },
 *   { stream: 'comm', duration: 1, deps: [2], label: 'd' },
 * ]).makespan; // 3
 * ```
 */
export function runStreams(tasks: readonly StreamTask[]): StreamRun {
  const n = tasks.length;
  const starts = new Array<number>(n).fill(0);
  const ends = new Array<number>(n).fill(-1);
  const free: Record<StreamKind, number> = { compute: 0, comm: 0 };
  let left = n;
  while (left > 0) {
    // The next event: the (stream, ready task) pair that can start earliest.
    let best = -1;
    let bestStart = Number.POSITIVE_INFINITY;
    let bestReady = Number.POSITIVE_INFINITY;
    for (let i = 0; i < n; i++) {
      if (ends[i]! >= 0) continue;
      const t = tasks[i]!;
      let ready = 0;
      let ok = true;
      for (const d of t.deps) {
        const e = ends[d]!;
        if (e < 0) {
          ok = false;
          break;
        }
        if (e > ready) ready = e;
      }
      if (!ok) continue;
      const start = Math.max(ready, free[t.stream]);
      if (start < bestStart || (start === bestStart && ready < bestReady)) {
        best = i;
        bestStart = start;
        bestReady = ready;
      }
    }
    if (best < 0)
      throw invalidArgument(
        'runStreams',
        'tasks',
        'deps naming tasks of the list, without cycles',
        'a cycle or a missing task',
      );
    const t = tasks[best]!;
    starts[best] = bestStart;
    ends[best] = bestStart + t.duration;
    free[t.stream] = ends[best]!;
    left--;
  }
  let compute = 0;
  let comm = 0;
  for (const t of tasks) {
    if (t.stream === 'compute') compute += t.duration;
    else comm += t.duration;
  }
  const makespan = Math.max(0, ...ends);
  return { makespan, compute, comm, exposedComm: makespan - compute, starts, ends };
}
