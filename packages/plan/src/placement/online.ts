/**
 * Online rebalancing as a plan: given the per-expert loads of each window of training (or
 * serving), decide whether to re-place the experts and what to move.
 *
 * Letters: L MoE layers, E experts, R slots, P GPUs, N nodes, S slots per GPU, K steps per window.
 *
 * Each decision: smooth the loads (exponential moving average over windows), place them with EPLB
 * (optionally refined), then align the candidate with the current placement so that as few slots
 * as possible change expert: GPUs (and, for a hierarchical placement, nodes first) are matched by
 * how many experts they already share, largest overlap first (or kept as numbered, when that moves
 * fewer), and inside a GPU an expert it keeps stays in its slot. A slot that changes expert loads that expert's weights (and optimizer state:
 * `expertBytes` says how much). Re-place when the expert time the better balance saves over the
 * coming window exceeds the time the moves take:
 *   horizonSteps x sum over layers of (expertSecondsPerStep / L) (1 / b_now - 1 / b_new)
 *     > bytesMoved / moveBandwidth
 * where b is a layer's balancedness (mean / max GPU load: a layer's routed-expert time grows as
 * 1 / b), and the mean balancedness gain is at least `minGain`.
 */
import { checkInt, invalidArgument } from '../errors';
import {
  balancedness,
  checkLoad,
  type ExpertPlacement,
  logToPhysOf,
  type RebalanceOptions,
  rebalanceExperts,
} from './eplb';
import { refinePlacement } from './refine';

/** Options of {@link decideRebalance} and {@link OnlineRebalancer}: the topology, and the costs the rule weighs. */
export interface OnlineRebalanceOptions extends RebalanceOptions {
  /** Bytes one slot loads when it changes expert (weights, plus optimizer state in training). */
  readonly expertBytes: number;
  /** Bytes per second the moves of one decision go at, all GPUs together. */
  readonly moveBandwidth: number;
  /** Seconds of routed-expert compute per step at perfect balance, all MoE layers. */
  readonly expertSecondsPerStep: number;
  /** Steps the chosen placement serves before the next decision (the K of "every K steps"). */
  readonly horizonSteps: number;
  /** Weight of the newest window in the smoothed load, in (0, 1] (default 1: the newest window only). */
  readonly smoothing?: number;
  /** Refine EPLB's candidate with `refinePlacement` (default false). */
  readonly refine?: boolean;
  /** Smallest mean balancedness gain worth a re-placement (default 0). */
  readonly minGain?: number;
}

/** One slot that changes expert. */
export interface SlotMove {
  readonly layer: number;
  readonly slot: number;
  /** The expert it held (-1: none yet, the first placement). */
  readonly from: number;
  /** The expert it loads. */
  readonly to: number;
}

/** What {@link decideRebalance} decided, and why. */
export interface RebalanceDecision {
  /** True when the candidate replaces the current placement. */
  readonly replace: boolean;
  /** The placement to run from now on: the candidate if `replace`, else the current one. */
  readonly placement: ExpertPlacement;
  /** EPLB's placement of the load, aligned with the current one. */
  readonly candidate: ExpertPlacement;
  /** [L] balancedness on the load of the current placement and of the candidate. */
  readonly currentBalancedness: number[];
  readonly candidateBalancedness: number[];
  /** Mean over layers of candidate - current balancedness. */
  readonly gain: number;
  /** The slots the candidate changes (to do when `replace`). */
  readonly moves: SlotMove[];
  readonly bytesMoved: number;
  /** bytesMoved / moveBandwidth. */
  readonly moveSeconds: number;
  /** Expert seconds the candidate saves over horizonSteps. */
  readonly savedSeconds: number;
  /** One line saying why. */
  readonly reason: string;
}

function checkOptions(fn: string, o: OnlineRebalanceOptions) {
  if (typeof o !== 'object' || o === null) {
    throw invalidArgument(
      fn,
      'options',
      'an object { replicas, groups, nodes, gpus, expertBytes, moveBandwidth, expertSecondsPerStep, horizonSteps }',
      o,
    );
  }
  const positive = (arg: keyof OnlineRebalanceOptions) => {
    const v = o[arg];
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
      throw invalidArgument(fn, `options.${arg}`, 'a finite number > 0', v);
    }
  };
  positive('moveBandwidth');
  positive('expertSecondsPerStep');
  if (!(o.expertBytes >= 0 && Number.isFinite(o.expertBytes))) {
    throw invalidArgument(fn, 'options.expertBytes', 'a finite number >= 0', o.expertBytes);
  }
  checkInt(fn, 'options.horizonSteps', o.horizonSteps, 1);
  const smoothing = o.smoothing ?? 1;
  if (!(smoothing > 0 && smoothing <= 1)) {
    throw invalidArgument(fn, 'options.smoothing', 'a number in (0, 1]', smoothing);
  }
  const minGain = o.minGain ?? 0;
  if (!(minGain >= 0 && minGain <= 1))
    throw invalidArgument(fn, 'options.minGain', 'a number in [0, 1]', minGain);
  return { smoothing, minGain };
}

/** Experts of a group of slots as counts (a multiset). */
function countsOf(slots: readonly number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const e of slots) m.set(e, (m.get(e) ?? 0) + 1);
  return m;
}

function overlap(a: Map<number, number>, b: Map<number, number>): number {
  let n = 0;
  for (const [e, c] of a) n += Math.min(c, b.get(e) ?? 0);
  return n;
}

/** Greedy matching of `candidate` groups to `current` groups, largest overlap first (ties by index): out[i] = current group of candidate group i. */
function matchGroups(current: readonly number[][], candidate: readonly number[][]): number[] {
  const n = current.length;
  const cur = current.map(countsOf);
  const cand = candidate.map(countsOf);
  const pairs: [number, number, number][] = [];
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) pairs.push([overlap(cand[i]!, cur[j]!), i, j]);
  pairs.sort((x, y) => y[0] - x[0] || x[1] - y[1] || x[2] - y[2]);
  const out = new Array<number>(n).fill(-1);
  const taken = new Array<boolean>(n).fill(false);
  for (const [, i, j] of pairs) {
    if (out[i] !== -1 || taken[j]) continue;
    out[i] = j;
    taken[j] = true;
  }
  return out;
}

/** Orders a GPU's new experts so that those it already holds keep their slots. */
function alignSlots(current: readonly number[], next: readonly number[]): number[] {
  const out = new Array<number>(current.length).fill(-1);
  const left = countsOf(next);
  current.forEach((e, s) => {
    const c = left.get(e) ?? 0;
    if (c > 0) {
      out[s] = e;
      left.set(e, c - 1);
    }
  });
  const rest: number[] = [];
  for (const [e, c] of left) for (let k = 0; k < c; k++) rest.push(e);
  rest.sort((a, b) => a - b);
  return out.map((e) => (e >= 0 ? e : rest.shift()!));
}

/**
 * One layer of `candidate` with its GPUs (for a hierarchical placement: nodes, then GPUs inside
 * them) renumbered and its slots reordered to keep as many experts as possible where `current` has
 * them.
 */
function alignLayer(
  current: readonly number[],
  candidate: readonly number[],
  gpus: number,
  nodes: number,
): number[] {
  const S = current.length / gpus;
  const gpusPerNode = gpus / nodes;
  const gpuSlots = (slots: readonly number[], p: number) => slots.slice(p * S, (p + 1) * S);
  const out = new Array<number>(current.length);
  const place = (curGpus: number[], candGpus: number[]) => {
    const match = matchGroups(
      curGpus.map((p) => gpuSlots(current, p)),
      candGpus.map((p) => gpuSlots(candidate, p)),
    );
    candGpus.forEach((p, i) => {
      const target = curGpus[match[i]!]!;
      alignSlots(gpuSlots(current, target), gpuSlots(candidate, p)).forEach((e, k) => {
        out[target * S + k] = e;
      });
    });
  };
  const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
  if (nodes === 1) {
    place(range(0, gpus), range(0, gpus));
    return out;
  }
  const nodeSlots = (slots: readonly number[], n: number) =>
    slots.slice(n * gpusPerNode * S, (n + 1) * gpusPerNode * S);
  const nodeMatch = matchGroups(
    range(0, nodes).map((n) => nodeSlots(current, n)),
    range(0, nodes).map((n) => nodeSlots(candidate, n)),
  );
  nodeMatch.forEach((target, n) => {
    place(range(target * gpusPerNode, gpusPerNode), range(n * gpusPerNode, gpusPerNode));
  });
  return out;
}

/**
 * Decides whether to re-place experts from one window's loads (see the file header for the rule):
 * EPLB's placement of `load` (refined if asked), aligned with `current` so that the fewest slots
 * change, weighed by the expert time its balance saves over `horizonSteps` against the time its
 * moves take. Stateless; {@link OnlineRebalancer} keeps the smoothed load and the placement.
 *
 * When to use: every K steps of training (or serving) with the per-expert counts of the window,
 * when the loads drift and moving an expert costs time.
 *
 * @example
 * ```ts
 * const o = { replicas: 12, groups: 1, nodes: 2, gpus: 4, expertBytes: 1e8,
 *   moveBandwidth: 1e10, expertSecondsPerStep: 0.2, horizonSteps: 100 };
 * const current = rebalanceExperts([[1, 1, 1, 1, 1, 1, 1, 1]], o);
 * const d = decideRebalance(current, [[90, 132, 40, 61, 104, 165, 39, 4]], o);
 * d.replace; // true: 0.07 s of moves (7 slots) buys 16 s of expert time over 100 steps
 * d.moves.length; // slots that change expert
 * ```
 */
export function decideRebalance(
  current: ExpertPlacement,
  load: number[][],
  options: OnlineRebalanceOptions,
): RebalanceDecision {
  const fn = 'decideRebalance';
  const { minGain } = checkOptions(fn, options);
  checkLoad(fn, load);
  const now = balancedness(load, current).balancedness;
  const eplb = rebalanceExperts(load, options);
  const fresh = options.refine === true ? refinePlacement(load, eplb, { nodes: options.nodes }) : eplb;
  if (fresh.physToLog[0]!.length !== current.physToLog[0]!.length || fresh.gpus !== current.gpus) {
    throw invalidArgument(
      fn,
      'current',
      `a placement of ${fresh.physToLog[0]!.length} slots on ${fresh.gpus} GPUs (the options' topology)`,
      `${current.physToLog[0]!.length} slots on ${current.gpus} GPUs`,
    );
  }
  const nodes = fresh.policy === 'hierarchical' ? options.nodes : 1;
  // The matched alignment, unless keeping the GPUs as numbered (slots aligned) moves fewer experts.
  const changed = (a: readonly number[], b: readonly number[]) => a.filter((e, i) => e !== b[i]).length;
  const physToLog = fresh.physToLog.map((slots, l) => {
    const now = current.physToLog[l]!;
    const matched = alignLayer(now, slots, fresh.gpus, nodes);
    const S = slots.length / fresh.gpus;
    const kept = Array.from({ length: fresh.gpus }, (_, p) =>
      alignSlots(now.slice(p * S, (p + 1) * S), slots.slice(p * S, (p + 1) * S)),
    ).flat();
    return changed(kept, now) < changed(matched, now) ? kept : matched;
  });
  const candidate: ExpertPlacement = {
    physToLog,
    logToPhys: logToPhysOf(physToLog, fresh.replicaCounts),
    replicaCounts: fresh.replicaCounts,
    gpus: fresh.gpus,
    policy: fresh.policy,
  };
  const next = balancedness(load, candidate).balancedness;
  const moves: SlotMove[] = [];
  physToLog.forEach((slots, l) => {
    slots.forEach((e, slot) => {
      const from = current.physToLog[l]![slot]!;
      if (from !== e) moves.push({ layer: l, slot, from, to: e });
    });
  });
  const L = load.length;
  const gain = next.reduce((a, b, l) => a + b - now[l]!, 0) / L;
  const perLayer = options.expertSecondsPerStep / L;
  const savedSeconds =
    options.horizonSteps * next.reduce((a, b, l) => a + perLayer * (1 / now[l]! - 1 / b), 0);
  const bytesMoved = moves.length * options.expertBytes;
  const moveSeconds = bytesMoved / options.moveBandwidth;
  let reason: string;
  let replace = false;
  if (moves.length === 0) reason = 'the candidate is the current placement';
  else if (gain < minGain) reason = `balancedness gain ${gain.toFixed(4)} < minGain ${minGain}`;
  else if (savedSeconds <= moveSeconds) {
    reason = `saves ${savedSeconds.toFixed(3)} s over ${options.horizonSteps} steps, moves take ${moveSeconds.toFixed(3)} s`;
  } else {
    replace = true;
    reason = `saves ${savedSeconds.toFixed(3)} s over ${options.horizonSteps} steps for ${moveSeconds.toFixed(3)} s of moves`;
  }
  return {
    replace,
    placement: replace ? candidate : current,
    candidate,
    currentBalancedness: now,
    candidateBalancedness: next,
    gain,
    moves,
    bytesMoved,
    moveSeconds,
    savedSeconds,
    reason,
  };
}

/**
 * The online rebalancing planner a trainer (or server) calls every K steps: it keeps the smoothed
 * per-expert load and the current placement, and each {@link OnlineRebalancer.observe} with the
 * window's counts returns {@link decideRebalance}'s decision on the smoothed load, adopting the
 * candidate when it says so.
 *
 * When to use: training where routing drifts (expert popularity changes over steps) and expert
 * moves are not free; `observe` takes the `[layer][expert]` counts the trainer already sums.
 *
 * @example
 * ```ts
 * const r = new OnlineRebalancer({ replicas: 16, groups: 4, nodes: 2, gpus: 8, expertBytes: 6e8,
 *   moveBandwidth: 4e11, expertSecondsPerStep: 0.3, horizonSteps: 50, smoothing: 0.5 });
 * // every 50 steps:
 * const d = r.observe(countsLE);
 * if (d.replace) applyMoves(d.moves); // load the new experts into the slots that change
 * ```
 */
export class OnlineRebalancer {
  private current: ExpertPlacement | undefined;
  private smoothed: number[][] | undefined;
  private readonly smoothing: number;

  /** `initial`: the placement running now (default: EPLB's placement of the first window). */
  constructor(
    readonly options: OnlineRebalanceOptions,
    initial?: ExpertPlacement,
  ) {
    this.smoothing = checkOptions('OnlineRebalancer', options).smoothing;
    this.current = initial;
  }

  /** The placement in force. */
  get placement(): ExpertPlacement | undefined {
    return this.current;
  }

  /** The smoothed load the last decision used. */
  get load(): number[][] | undefined {
    return this.smoothed;
  }

  /**
   * Takes one window's `[layer][expert]` counts, updates the smoothed load and decides. The first
   * call without an initial placement adopts EPLB's placement of the window (all its slots count
   * as moves, `replace` true).
   */
  observe(countsLE: number[][]): RebalanceDecision {
    const fn = 'OnlineRebalancer.observe';
    const experts = checkLoad(fn, countsLE);
    if (this.smoothed !== undefined) {
      if (countsLE.length !== this.smoothed.length || experts !== this.smoothed[0]!.length) {
        throw invalidArgument(
          fn,
          'countsLE',
          `[${this.smoothed.length}][${this.smoothed[0]!.length}] counts like the earlier windows`,
          `[${countsLE.length}][${experts}]`,
        );
      }
      const a = this.smoothing;
      this.smoothed = this.smoothed.map((row, l) => row.map((x, e) => (1 - a) * x + a * countsLE[l]![e]!));
    } else {
      this.smoothed = countsLE.map((row) => [...row]);
    }
    if (this.current === undefined) {
      const first = rebalanceExperts(this.smoothed, this.options);
      this.current = first;
      const b = balancedness(this.smoothed, first).balancedness;
      const bytesMoved = first.physToLog.length * this.options.replicas * this.options.expertBytes;
      return {
        replace: true,
        placement: first,
        candidate: first,
        currentBalancedness: b,
        candidateBalancedness: b,
        gain: 0,
        moves: first.physToLog.flatMap((slots, l) =>
          slots.map((to, slot) => ({ layer: l, slot, from: -1, to })),
        ),
        bytesMoved,
        moveSeconds: bytesMoved / this.options.moveBandwidth,
        savedSeconds: 0,
        reason: 'first window: initial placement',
      };
    }
    const d = decideRebalance(this.current, this.smoothed, this.options);
    this.current = d.placement;
    return d;
  }
}
