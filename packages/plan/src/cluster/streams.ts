/**
 * One GPU's two streams, compute and communication, as a discrete-event simulation of a task
 * graph: each task runs on one stream, after the tasks it depends on, and a stream runs one task
 * at a time. Whenever a stream is free it starts, among the tasks ready by then, the one of highest
 * priority (lowest `priority`), then the one that became ready first, then the one listed first;
 * when none is ready it waits for the first to become ready. Non-preemptive; so two independent
 * chains (an F&B pair) interleave, and each layer of the pair costs about max(compute,
 * communication) instead of their sum, and background transfers (priority > 0) fill the gaps of a
 * link without delaying the transfers already waiting.
 *
 * Each stream keeps its tasks in two heaps (not yet ready by the stream's free time; ready), so a
 * graph of n tasks runs in O(n log n).
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
  /**
   * Among tasks ready when the stream frees, lower runs first (default 0); a background transfer
   * (a prefetch) gets a higher number so that it only fills gaps.
   */
  readonly priority?: number;
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
  const prio = tasks.map((t) => t.priority ?? 0);
  const left = new Int32Array(n);
  const ready = new Float64Array(n);
  const dependents: number[][] = tasks.map(() => []);
  tasks.forEach((t, i) => {
    for (const d of t.deps) {
      if (!Number.isInteger(d) || d < 0 || d >= n || d === i) {
        throw invalidArgument('runStreams', `tasks[${i}].deps`, 'indices of other tasks of the list', t.deps);
      }
      dependents[d]!.push(i);
    }
    left[i] = t.deps.length;
  });
  const free: Record<StreamKind, number> = { compute: 0, comm: 0 };
  // Per stream: tasks whose deps are done but that are not ready by the stream's free time
  // (ordered by ready time, priority, index), and those that are (priority, ready time, index).
  const byReady = (a: number, b: number) => ready[a]! - ready[b]! || prio[a]! - prio[b]! || a - b;
  const byPriority = (a: number, b: number) => prio[a]! - prio[b]! || ready[a]! - ready[b]! || a - b;
  const queues = {
    compute: { waiting: new Heap(byReady), released: new Heap(byPriority) },
    comm: { waiting: new Heap(byReady), released: new Heap(byPriority) },
  };
  const enqueue = (i: number) => queues[tasks[i]!.stream].waiting.push(i);
  for (let i = 0; i < n; i++) if (left[i] === 0) enqueue(i);
  for (let done = 0; done < n; done++) {
    // The next event: the stream whose best task can start earliest (ties: earlier ready, lower index).
    let best = -1;
    let bestStart = Number.POSITIVE_INFINITY;
    let bestStream: StreamKind = 'compute';
    for (const stream of ['compute', 'comm'] as const) {
      const q = queues[stream];
      while (q.waiting.size > 0 && ready[q.waiting.peek()]! <= free[stream]) q.released.push(q.waiting.pop());
      const i = q.released.size > 0 ? q.released.peek() : q.waiting.size > 0 ? q.waiting.peek() : -1;
      if (i < 0) continue;
      const start = Math.max(ready[i]!, free[stream]);
      if (
        best < 0 ||
        start < bestStart ||
        (start === bestStart && (ready[i]! < ready[best]! || (ready[i] === ready[best] && i < best)))
      ) {
        best = i;
        bestStart = start;
        bestStream = stream;
      }
    }
    if (best < 0) {
      throw invalidArgument(
        'runStreams',
        'tasks',
        'deps naming tasks of the list, without cycles',
        'a cycle',
      );
    }
    const q = queues[bestStream];
    if (q.released.size > 0) q.released.pop();
    else q.waiting.pop();
    starts[best] = bestStart;
    ends[best] = bestStart + tasks[best]!.duration;
    free[bestStream] = ends[best]!;
    for (const j of dependents[best]!) {
      if (ends[best]! > ready[j]!) ready[j] = ends[best]!;
      left[j]! -= 1;
      if (left[j] === 0) enqueue(j);
    }
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

/** A binary min-heap of task indices under a comparator. */
class Heap {
  private readonly items: number[] = [];

  constructor(private readonly less: (a: number, b: number) => number) {}

  get size(): number {
    return this.items.length;
  }

  peek(): number {
    return this.items[0]!;
  }

  push(x: number): void {
    const a = this.items;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.less(a[i]!, a[parent]!) >= 0) break;
      [a[i], a[parent]] = [a[parent]!, a[i]!];
      i = parent;
    }
  }

  pop(): number {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.less(a[l]!, a[m]!) < 0) m = l;
        if (r < a.length && this.less(a[r]!, a[m]!) < 0) m = r;
        if (m === i) break;
        [a[i], a[m]] = [a[m]!, a[i]!];
        i = m;
      }
    }
    return top;
  }
}
