/**
 * Local search after EPLB: per layer, move or swap physical slots away from the most loaded GPU
 * while that lowers the max GPU load (or, at an equal max, the sum of squared GPU loads).
 *
 * Letters: L MoE layers, E logical experts, R physical slots, P GPUs, S slots per GPU (R / P),
 * N nodes (P / N GPUs each, slot s on GPU floor(s / S), GPU p on node floor(p / (P / N))).
 *
 * Two kinds of step, both between the most loaded GPU `hot` and a partner GPU (the least loaded
 * first, then the others in rising load; in a hierarchical placement only GPUs of `hot`'s node):
 * - swap: a slot of `hot` and a slot of the partner exchange experts (replica counts unchanged);
 * - move: one slot of the two changes its expert from `a` (which keeps >= 1 replica) to `b`, so `a`
 *   loses a replica and `b` gains one: every other replica of `a` serves more, every replica of `b`
 *   less. In a hierarchical placement `b` must already live on that node.
 * Each step taken is the best of all candidates for the pair (lowest max, then lowest sum of
 * squares), so the pair (max, sum of squares) falls strictly and the search ends.
 */
import { checkInt, invalidArgument } from '../errors';
import { balancedness, type ExpertPlacement, logToPhysOf } from './eplb';

const FN = 'refinePlacement';

/** Options of {@link refinePlacement}. */
export interface RefineOptions {
  /** Steps (swaps and moves) at most per layer; default 4 * R. 0 returns a copy of the input. */
  readonly maxSwaps?: number;
  /**
   * Nodes N of the placement's topology (the `nodes` given to rebalanceExperts). Needed for a
   * hierarchical placement, whose replicas must stay on their node; a global one ignores it.
   */
  readonly nodes?: number;
}

/** A refined placement, with the steps it took per layer. */
export interface RefinedPlacement extends ExpertPlacement {
  /** [L] swaps taken per layer. */
  readonly swaps: number[];
  /** [L] moves (a replica handed from one expert to another) taken per layer. */
  readonly moves: number[];
}

/** Relative margin a step must gain by: guards against steps that only move rounding noise. */
const EPS = 1e-12;

/** One layer under search: which expert and replica rank each slot holds, and the GPU loads. */
class LayerState {
  readonly expertR: number[];
  readonly rankR: number[];
  readonly countE: number[];
  readonly loadP: number[];
  swaps = 0;
  moves = 0;

  constructor(
    readonly weightE: readonly number[],
    physToLog: readonly number[],
    logToPhys: readonly (readonly number[])[],
    countE: readonly number[],
    readonly gpus: number,
    readonly gpusPerNode: number,
  ) {
    this.expertR = [...physToLog];
    this.countE = [...countE];
    this.rankR = new Array<number>(physToLog.length).fill(0);
    logToPhys.forEach((slots, e) => {
      slots.forEach((slot, k) => {
        if (k < countE[e]!) this.rankR[slot] = k;
      });
    });
    this.loadP = new Array<number>(gpus).fill(0);
    this.recompute();
  }

  get slotsPerGpu(): number {
    return this.expertR.length / this.gpus;
  }

  /** Load each replica of expert e serves. */
  perReplica(e: number, count = this.countE[e]!): number {
    return this.weightE[e]! / count;
  }

  recompute(): void {
    this.loadP.fill(0);
    const s = this.slotsPerGpu;
    this.expertR.forEach((e, slot) => {
      this.loadP[Math.floor(slot / s)]! += this.perReplica(e);
    });
  }

  nodeOfGpu(p: number): number {
    return Math.floor(p / this.gpusPerNode);
  }

  /** Max and sum of squares of GPU loads. */
  static score(loadP: readonly number[]): { max: number; sq: number } {
    let max = 0;
    let sq = 0;
    for (const x of loadP) {
      if (x > max) max = x;
      sq += x * x;
    }
    return { max, sq };
  }
}

/** A candidate step and its score. */
interface Step {
  readonly max: number;
  readonly sq: number;
  readonly apply: () => void;
}

function better(a: { max: number; sq: number }, b: { max: number; sq: number }): boolean {
  return a.max < b.max || (a.max === b.max && a.sq < b.sq);
}

/** The best swap between GPUs `hot` and `cold`, or undefined when none changes anything. */
function bestSwap(st: LayerState, hot: number, cold: number): Step | undefined {
  const s = st.slotsPerGpu;
  const loadP = [...st.loadP];
  let best: Step | undefined;
  for (let i = hot * s; i < (hot + 1) * s; i++) {
    for (let j = cold * s; j < (cold + 1) * s; j++) {
      const a = st.expertR[i]!;
      const b = st.expertR[j]!;
      if (a === b) continue;
      const d = st.perReplica(a) - st.perReplica(b);
      loadP[hot] = st.loadP[hot]! - d;
      loadP[cold] = st.loadP[cold]! + d;
      const score = LayerState.score(loadP);
      if (best === undefined || better(score, best)) {
        best = {
          ...score,
          apply: () => {
            [st.expertR[i], st.expertR[j]] = [b, a];
            [st.rankR[i], st.rankR[j]] = [st.rankR[j]!, st.rankR[i]!];
            st.swaps += 1;
          },
        };
      }
    }
  }
  return best;
}

/** The best move on a slot of GPU `hot` or `cold`: its expert hands that replica to another expert. */
function bestMove(st: LayerState, hot: number, cold: number, allowedE: readonly number[]): Step | undefined {
  const s = st.slotsPerGpu;
  let best: Step | undefined;
  for (const gpu of [hot, cold]) {
    for (let x = gpu * s; x < (gpu + 1) * s; x++) {
      const a = st.expertR[x]!;
      const ca = st.countE[a]!;
      if (ca < 2) continue;
      for (const b of allowedE) {
        if (b === a) continue;
        const cb = st.countE[b]!;
        const loadP = [...st.loadP];
        const wa = st.perReplica(a);
        const wa1 = st.perReplica(a, ca - 1);
        const wb = st.perReplica(b);
        const wb1 = st.perReplica(b, cb + 1);
        st.expertR.forEach((e, slot) => {
          const p = Math.floor(slot / s);
          if (slot === x) loadP[p]! += wb1 - wa;
          else if (e === a) loadP[p]! += wa1 - wa;
          else if (e === b) loadP[p]! += wb1 - wb;
        });
        const score = LayerState.score(loadP);
        if (best === undefined || better(score, best)) {
          best = {
            ...score,
            apply: () => {
              const gone = st.rankR[x]!;
              st.expertR.forEach((e, slot) => {
                if (e === a && st.rankR[slot]! > gone) st.rankR[slot]! -= 1;
              });
              st.expertR[x] = b;
              st.rankR[x] = cb;
              st.countE[a] = ca - 1;
              st.countE[b] = cb + 1;
              st.moves += 1;
            },
          };
        }
      }
    }
  }
  return best;
}

/** Runs the search on one layer until no step helps or `maxSteps` were taken. */
function refineLayer(st: LayerState, maxSteps: number, hierarchical: boolean): void {
  const experts = st.countE.length;
  const s = st.slotsPerGpu;
  for (let step = 0; step < maxSteps; step++) {
    const current = LayerState.score(st.loadP);
    let hot = 0;
    st.loadP.forEach((x, p) => {
      if (x > st.loadP[hot]!) hot = p;
    });
    const node = st.nodeOfGpu(hot);
    const partners = st.loadP
      .map((_, p) => p)
      .filter((p) => p !== hot && (!hierarchical || st.nodeOfGpu(p) === node))
      .sort((p, q) => st.loadP[p]! - st.loadP[q]! || p - q);
    // Experts a move may hand a replica to: in a hierarchical placement those already on this node.
    const onNode = new Set<number>();
    st.expertR.forEach((e, slot) => {
      if (!hierarchical || st.nodeOfGpu(Math.floor(slot / s)) === node) onNode.add(e);
    });
    const allowedE = Array.from({ length: experts }, (_, e) => e).filter((e) => onNode.has(e));
    const margin = { max: current.max * (1 - EPS), sq: current.sq * (1 - EPS) };
    let taken = false;
    for (const cold of partners) {
      const candidates = [bestSwap(st, hot, cold), bestMove(st, hot, cold, allowedE)];
      let best: Step | undefined;
      for (const c of candidates) if (c !== undefined && (best === undefined || better(c, best))) best = c;
      if (best !== undefined && (best.max < margin.max || (best.max <= current.max && best.sq < margin.sq))) {
        best.apply();
        st.recompute();
        taken = true;
        break;
      }
    }
    if (!taken) return;
  }
}

/**
 * Improves a placement by local search: per layer, while it lowers the max GPU load (or, at the same
 * max, the spread of GPU loads), swaps a slot of the most loaded GPU with a slot of a lighter GPU, or
 * moves a replica from one expert to another on one of the two (an expert keeps >= 1 replica).
 * Slots per GPU, the replica total and, for a hierarchical placement, each expert's node are kept;
 * the max GPU load of each layer is never above the input's (the input layer is returned otherwise).
 *
 * When to use: after {@link rebalanceExperts}, whose greedy packing and replication leave some
 * imbalance, when the placement is computed once and served many times (the search costs more than
 * EPLB). It does not look at cross-node traffic.
 *
 * @example
 * ```ts
 * const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
 * const p = rebalanceExperts(load, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
 * const r = refinePlacement(load, p, { nodes: 2 });
 * balancedness(load, p).gpuLoad[0]; // [167, 156, 173.5, 138.5]: balancedness 0.915
 * balancedness(load, r).gpuLoad[0]; // [167, 156, 149, 163]: balancedness 0.951
 * r.moves[0]; // 1: expert 4 handed one of its 2 replicas to expert 5 (now 3)
 * ```
 */
export function refinePlacement(
  load: number[][],
  placement: ExpertPlacement,
  options: RefineOptions = {},
): RefinedPlacement {
  // balancedness checks load and the maps' shapes and values.
  const before = balancedness(load, placement);
  const gpus = placement.gpus;
  const hierarchical = placement.policy === 'hierarchical';
  let nodes = 1;
  if (hierarchical) {
    if (options.nodes === undefined) {
      throw invalidArgument(
        FN,
        'options.nodes',
        'the number of nodes for a hierarchical placement (replicas stay on their node)',
        undefined,
      );
    }
    nodes = checkInt(FN, 'options.nodes', options.nodes, 1);
    if (gpus % nodes !== 0) {
      throw invalidArgument(FN, 'options.nodes', `a divisor of placement.gpus (${gpus})`, nodes);
    }
  }
  const replicas = placement.physToLog[0]!.length;
  const maxSteps =
    options.maxSwaps === undefined ? 4 * replicas : checkInt(FN, 'options.maxSwaps', options.maxSwaps, 0);

  const layers = load.map((weightE, l) => {
    const st = new LayerState(
      weightE,
      placement.physToLog[l]!,
      placement.logToPhys[l]!,
      placement.replicaCounts[l]!,
      gpus,
      gpus / nodes,
    );
    refineLayer(st, maxSteps, hierarchical);
    return st;
  });
  const refined = layers.map((st) => ({ physToLog: st.expertR, replicaCounts: st.countE }));
  const after = balancedness(load, {
    physToLog: refined.map((r) => r.physToLog),
    replicaCounts: refined.map((r) => r.replicaCounts),
    gpus,
  });
  // Keep the input layer where rounding made the refined max even one ulp higher.
  const keep = after.gpuLoad.map((loadP, l) => Math.max(...loadP) > Math.max(...before.gpuLoad[l]!));
  const physToLog = layers.map((st, l) => (keep[l] ? [...placement.physToLog[l]!] : st.expertR));
  const replicaCounts = layers.map((st, l) => (keep[l] ? [...placement.replicaCounts[l]!] : st.countE));
  const rankR = layers.map((st, l) => {
    if (!keep[l]) return st.rankR;
    const ranks = new Array<number>(replicas).fill(0);
    placement.logToPhys[l]!.forEach((slots, e) => {
      slots.forEach((slot, k) => {
        if (k < placement.replicaCounts[l]![e]!) ranks[slot] = k;
      });
    });
    return ranks;
  });
  return {
    physToLog,
    logToPhys: logToPhysOf(physToLog, replicaCounts, rankR),
    replicaCounts,
    gpus,
    policy: placement.policy,
    swaps: layers.map((st, l) => (keep[l] ? 0 : st.swaps)),
    moves: layers.map((st, l) => (keep[l] ? 0 : st.moves)),
  };
}
