/**
 * Cross-node traffic of an expert placement, counted on a routing trace, and a traffic-aware local
 * search that lowers it without unbalancing the GPUs.
 *
 * Letters: L MoE layers, E logical experts, R physical slots, P GPUs, N nodes (P / N GPUs each),
 * S slots per GPU (R / P, slot s on GPU floor(s / S)), T tokens per layer, K experts per token,
 * G expert groups, M groups a token may use (group-limited routing, DeepSeek-V3's node limit when
 * groups live on nodes).
 *
 * Traffic model (what a DeepEP-style dispatch sends):
 * - Tokens are data-parallel: token t of a layer starts on GPU t mod P (so every GPU and node holds
 *   the same number of tokens).
 * - Each of a token's K experts is served by one replica. `node-local` (default): a replica on the
 *   token's own node when the expert has one there (spread evenly over those), else any replica
 *   (spread evenly over all of them). `spread`: any replica, evenly, whatever the token's node (the
 *   rule EPLB's balancedness assumes).
 * - A token crosses nodes once per distinct remote node that serves one of its experts (the copy
 *   is forwarded inside the node over NVLink), so the bytes of one dispatch are
 *   bytesPerToken x the distinct remote nodes, summed over tokens. The combine returns the same
 *   bytes, and the backward pass's two all-to-alls move them again.
 * "Spread evenly" makes the counts expectations: a token's remote node m is hit with probability
 * 1 - prod over its remote experts e of (1 - replicas of e on m / replicas of e). They are exact
 * expectations over the replica choice, deterministic for a given trace.
 */
import { checkInt, invalidArgument } from '../errors';
import { checkLoad, checkSlots, type ExpertPlacement, logToPhysOf } from './eplb';
import { seededRandom } from './random';

/** Per-token expert choices of each layer: a routing trace, measured or sampled. */
export interface RoutingTrace {
  /** K: experts per token. */
  readonly topK: number;
  /**
   * [L][T * K] token-major: token t's experts are `experts[l][t * K + k]` for k < K, distinct
   * logical experts. T may differ between layers.
   */
  readonly experts: readonly ArrayLike<number>[];
}

/** How {@link sampleRoutingTrace} draws tokens. */
export interface TraceOptions {
  /** T: tokens per layer. */
  readonly tokens: number;
  /** K: experts per token (distinct). */
  readonly topK: number;
  /** G: expert groups, consecutive experts (E / G each); divides E. Default 1. */
  readonly groups?: number;
  /** M: groups each token draws its experts from (group-limited routing); default G (no limit). */
  readonly groupsPerToken?: number;
  /** Seed of the draws (default 1). */
  readonly seed?: number;
}

/** Draws `count` distinct indices of `weights` (those with `allowed[i]`), each draw ∝ weight; uniform once only zeros remain. */
function drawDistinct(
  weights: ArrayLike<number>,
  candidates: number[],
  count: number,
  random: () => number,
  out: number[],
): void {
  const pool = [...candidates];
  for (let k = 0; k < count; k++) {
    let total = 0;
    for (const i of pool) total += weights[i]!;
    let pick = pool.length - 1;
    if (total > 0) {
      let u = random() * total;
      for (let j = 0; j < pool.length; j++) {
        u -= weights[pool[j]!]!;
        if (u < 0) {
          pick = j;
          break;
        }
      }
    } else {
      pick = Math.floor(random() * pool.length);
    }
    out.push(pool[pick]!);
    pool.splice(pick, 1);
  }
}

/**
 * Samples a routing trace from per-layer expert loads under group-limited routing: each token draws
 * M groups without replacement, each draw ∝ the group's load, then K distinct experts from those
 * groups, each draw ∝ the expert's load. With G = M = 1 the K experts are drawn from all experts.
 * Drawing without replacement flattens the loads a little (an expert can be picked once per token),
 * so the trace's counts follow `load` closely but not exactly; with G > 1 experts of one group are
 * picked together, the co-activation that node-limited routing relies on.
 *
 * When to use: to measure a placement's traffic ({@link placementTraffic}) where only per-expert
 * counts are known (a training run's metrics, a serving counter), not per-token choices.
 *
 * @example
 * ```ts
 * const trace = sampleRoutingTrace([[90, 132, 40, 61, 104, 165, 39, 4]], {
 *   tokens: 1024, topK: 2, groups: 2, groupsPerToken: 1, seed: 7,
 * });
 * trace.experts[0].length; // 2048: both experts of a token in the same group of 4
 * ```
 */
export function sampleRoutingTrace(load: number[][], options: TraceOptions): RoutingTrace {
  const fn = 'sampleRoutingTrace';
  const experts = checkLoad(fn, load);
  const tokens = checkInt(fn, 'options.tokens', options.tokens, 1);
  const groups = checkInt(fn, 'options.groups', options.groups ?? 1, 1);
  if (experts % groups !== 0) {
    throw invalidArgument(fn, 'options.groups', `a divisor of the number of experts (${experts})`, groups);
  }
  const perToken = checkInt(fn, 'options.groupsPerToken', options.groupsPerToken ?? groups, 1, groups);
  const groupSize = experts / groups;
  // The experts of M groups must be able to hold K distinct picks.
  const topK = checkInt(fn, 'options.topK', options.topK, 1, perToken * groupSize);
  const random = seededRandom(checkInt(fn, 'options.seed', options.seed ?? 1, 0));
  const allGroups = Array.from({ length: groups }, (_, g) => g);
  const chosenGroups: number[] = [];
  const candidates: number[] = [];
  const picks: number[] = [];
  return {
    topK,
    experts: load.map((weightE) => {
      const groupLoad = allGroups.map((g) => {
        let s = 0;
        for (let j = 0; j < groupSize; j++) s += weightE[g * groupSize + j]!;
        return s;
      });
      const out = new Int32Array(tokens * topK);
      for (let t = 0; t < tokens; t++) {
        chosenGroups.length = 0;
        if (perToken === groups) chosenGroups.push(...allGroups);
        else drawDistinct(groupLoad, allGroups, perToken, random, chosenGroups);
        candidates.length = 0;
        for (const g of chosenGroups) for (let j = 0; j < groupSize; j++) candidates.push(g * groupSize + j);
        picks.length = 0;
        drawDistinct(weightE, candidates, topK, random, picks);
        out.set(picks, t * topK);
      }
      return out;
    }),
  };
}

/**
 * The per-expert counts of a trace: [L][E] how many of each layer's tokens chose each expert.
 *
 * When to use: to place experts with the loads a trace really has (sampled traces follow their
 * loads only approximately), so that balance and traffic are measured on the same routing.
 *
 * @example
 * ```ts
 * traceCounts({ topK: 2, experts: [[0, 1, 0, 2]] }, 3); // [[2, 1, 1]]
 * ```
 */
export function traceCounts(trace: RoutingTrace, experts: number): number[][] {
  checkInt('traceCounts', 'experts', experts, 1);
  checkTrace('traceCounts', trace, trace.experts?.length ?? 0, experts);
  return trace.experts.map((row) => {
    const countE = new Array<number>(experts).fill(0);
    for (let i = 0; i < row.length; i++) countE[row[i]!]! += 1;
    return countE;
  });
}

/** How a token picks among an expert's replicas (see the file header). */
export type ReplicaChoice = 'node-local' | 'spread';

/** Options of {@link placementTraffic} and {@link localizePlacement}. */
export interface TrafficOptions {
  /** N: nodes; divides the placement's GPUs (GPU p is on node floor(p / (P / N))). */
  readonly nodes: number;
  /** Bytes one token copy sends (hidden size x bytes per element); default 1, so bytes count token copies. */
  readonly bytesPerToken?: number;
  /** How a token picks a replica (default `node-local`). */
  readonly replicaChoice?: ReplicaChoice;
}

/** Traffic and routed load of a placement on a trace, per layer. */
export interface PlacementTraffic {
  /** [L] expected bytes that cross nodes in one dispatch (the combine sends as many back). */
  readonly crossNodeBytes: number[];
  /** [L] expected distinct remote nodes a token is sent to. */
  readonly remoteNodesPerToken: number[];
  /** [L] share of the expert assignments served on the token's own node. */
  readonly localShare: number[];
  /** [L][P] expected assignments each GPU serves under this replica choice. */
  readonly gpuLoad: number[][];
  /** [L] mean / max of `gpuLoad` (1 is perfect). */
  readonly balancedness: number[];
}

/** One layer of a placement and a trace, with what traffic and load need, updatable by slot swaps. */
class LayerTraffic {
  readonly tokens: number;
  readonly experts: number;
  readonly slotsPerGpu: number;
  readonly gpusPerNode: number;
  /** [E * N] replicas of expert e on node n. */
  readonly onNode: Int32Array;
  /** [E] replicas of each expert. */
  readonly count: Int32Array;
  /** [E * N] assignments of expert e from tokens of node n. */
  readonly fromNode: Float64Array;
  /** [E] tokens that chose expert e. */
  readonly tokensOf: number[][];
  /** [T] expected remote nodes of each token. */
  readonly remote: Float64Array;
  /** [E * N] what one replica of expert e on node n serves. */
  private readonly perReplica: Float64Array;
  /** [P] expected assignments each GPU serves. */
  readonly loadP: number[];
  /** Tokens the last recount changed, and their old counts. */
  private readonly changedToken: Int32Array;
  private readonly changedRemote: Float64Array;
  private changedCount = 0;
  private readonly noHit: Float64Array;
  /** [T] the last swap that re-counted each token (a token choosing both experts counts once). */
  private readonly seen: Int32Array;
  private stamp = 0;
  /** Nodes tokenRemote touched, and how many. */
  private readonly touched: Int32Array;
  private touchedCount = 0;

  constructor(
    readonly slotExpert: number[],
    readonly choicesTK: ArrayLike<number>,
    readonly topK: number,
    readonly gpus: number,
    readonly nodes: number,
    readonly choice: ReplicaChoice,
    experts: number,
  ) {
    this.experts = experts;
    this.tokens = choicesTK.length / topK;
    this.slotsPerGpu = slotExpert.length / gpus;
    this.gpusPerNode = gpus / nodes;
    this.onNode = new Int32Array(experts * nodes);
    this.count = new Int32Array(experts);
    slotExpert.forEach((e, s) => {
      this.onNode[e * nodes + this.nodeOfSlot(s)]! += 1;
      this.count[e]! += 1;
    });
    this.fromNode = new Float64Array(experts * nodes);
    this.tokensOf = Array.from({ length: experts }, () => []);
    for (let t = 0; t < this.tokens; t++) {
      const n = this.nodeOfToken(t);
      for (let k = 0; k < topK; k++) {
        const e = choicesTK[t * topK + k]!;
        this.fromNode[e * nodes + n]! += 1;
        this.tokensOf[e]!.push(t);
      }
    }
    this.noHit = new Float64Array(nodes).fill(1);
    this.touched = new Int32Array(nodes);
    this.remote = new Float64Array(this.tokens);
    for (let t = 0; t < this.tokens; t++) this.remote[t] = this.tokenRemote(t);
    this.seen = new Int32Array(this.tokens);
    this.changedToken = new Int32Array(this.tokens);
    this.changedRemote = new Float64Array(this.tokens);
    this.perReplica = new Float64Array(experts * nodes);
    for (let e = 0; e < experts; e++) this.updateExpert(e);
    this.loadP = new Array<number>(gpus).fill(0);
    this.updateLoads();
  }

  nodeOfSlot(s: number): number {
    return Math.floor(Math.floor(s / this.slotsPerGpu) / this.gpusPerNode);
  }

  nodeOfToken(t: number): number {
    return Math.floor((t % this.gpus) / this.gpusPerNode);
  }

  /** Expected distinct remote nodes token t is sent to. */
  tokenRemote(t: number): number {
    const N = this.nodes;
    const n = this.nodeOfToken(t);
    for (let k = 0; k < this.topK; k++) {
      const e = this.choicesTK[t * this.topK + k]!;
      if (this.choice === 'node-local' && this.onNode[e * N + n]! > 0) continue;
      const c = this.count[e]!;
      for (let m = 0; m < N; m++) {
        const r = this.onNode[e * N + m]!;
        if (m === n || r === 0) continue;
        if (this.noHit[m] === 1) this.touched[this.touchedCount++] = m;
        this.noHit[m]! *= 1 - r / c;
      }
    }
    let sum = 0;
    for (let i = 0; i < this.touchedCount; i++) {
      const m = this.touched[i]!;
      sum += 1 - this.noHit[m]!;
      this.noHit[m] = 1;
    }
    this.touchedCount = 0;
    return sum;
  }

  /** Recomputes what one replica of expert e on each node serves ([E * N] `perReplica`). */
  private updateExpert(e: number): void {
    const N = this.nodes;
    const c = this.count[e]!;
    let spill = 0;
    let total = 0;
    for (let n = 0; n < N; n++) {
      const a = this.fromNode[e * N + n]!;
      total += a;
      if (this.onNode[e * N + n] === 0) spill += a;
    }
    for (let m = 0; m < N; m++) {
      const r = this.onNode[e * N + m]!;
      this.perReplica[e * N + m] =
        r === 0 ? 0 : this.choice === 'spread' ? total / c : this.fromNode[e * N + m]! / r + spill / c;
    }
  }

  /** Re-adds every GPU's load from the slots (`loadP`). */
  private updateLoads(): void {
    this.loadP.fill(0);
    this.slotExpert.forEach((e, s) => {
      this.loadP[Math.floor(s / this.slotsPerGpu)]! += this.perReplica[e * this.nodes + this.nodeOfSlot(s)]!;
    });
  }

  /** The largest GPU load. */
  maxLoad(): number {
    let max = 0;
    for (const x of this.loadP) if (x > max) max = x;
    return max;
  }

  /** Summed expected remote nodes over tokens (re-added, free of the drift of swap deltas). */
  remoteTotal(): number {
    let sum = 0;
    for (const r of this.remote) sum += r;
    return sum;
  }

  /** Share of assignments served on the token's own node. */
  localShare(): number {
    const N = this.nodes;
    let local = 0;
    let total = 0;
    for (let e = 0; e < this.experts; e++) {
      for (let n = 0; n < N; n++) {
        const a = this.fromNode[e * N + n]!;
        const r = this.onNode[e * N + n]!;
        total += a;
        if (r > 0) local += this.choice === 'node-local' ? a : (a * r) / this.count[e]!;
      }
    }
    return total > 0 ? local / total : 1;
  }

  /** Exchanges the experts of slots i and j (on different nodes); loads follow, token counts wait for {@link recount}. */
  swap(i: number, j: number): void {
    const N = this.nodes;
    const x = this.slotExpert[i]!;
    const y = this.slotExpert[j]!;
    const a = this.nodeOfSlot(i);
    const b = this.nodeOfSlot(j);
    this.slotExpert[i] = y;
    this.slotExpert[j] = x;
    this.onNode[x * N + a]! -= 1;
    this.onNode[x * N + b]! += 1;
    this.onNode[y * N + b]! -= 1;
    this.onNode[y * N + a]! += 1;
    this.updateExpert(x);
    this.updateExpert(y);
    this.updateLoads();
  }

  /**
   * Re-counts the tokens that chose expert x or y after a swap of theirs and returns the change of
   * the summed remote nodes; {@link restore} takes the old counts back.
   */
  recount(x: number, y: number): number {
    let delta = 0;
    this.stamp += 1;
    this.changedCount = 0;
    for (const list of [this.tokensOf[x]!, this.tokensOf[y]!]) {
      for (let i = 0; i < list.length; i++) {
        const t = list[i]!;
        if (this.seen[t] === this.stamp) continue;
        this.seen[t] = this.stamp;
        const r = this.tokenRemote(t);
        delta += r - this.remote[t]!;
        this.changedToken[this.changedCount] = t;
        this.changedRemote[this.changedCount] = this.remote[t]!;
        this.changedCount += 1;
        this.remote[t] = r;
      }
    }
    return delta;
  }

  /** Undoes the last {@link recount}. */
  restore(): void {
    for (let i = 0; i < this.changedCount; i++) this.remote[this.changedToken[i]!] = this.changedRemote[i]!;
    this.changedCount = 0;
  }
}

/** Checks a trace against a placement's layers and experts. */
function checkTrace(fn: string, trace: RoutingTrace, layers: number, experts: number): void {
  if (typeof trace !== 'object' || trace === null || !Array.isArray(trace.experts)) {
    throw invalidArgument(fn, 'trace', 'a RoutingTrace { topK, experts: [L][T * K] }', trace);
  }
  const K = checkInt(fn, 'trace.topK', trace.topK, 1, experts);
  if (trace.experts.length !== layers) {
    throw invalidArgument(
      fn,
      'trace.experts.length',
      `${layers} (the placement's layers)`,
      trace.experts.length,
    );
  }
  trace.experts.forEach((row, l) => {
    if (row.length === 0 || row.length % K !== 0) {
      throw invalidArgument(
        fn,
        `trace.experts[${l}].length`,
        `a positive multiple of topK (${K})`,
        row.length,
      );
    }
    for (let i = 0; i < row.length; i++) {
      const e = row[i]!;
      if (!Number.isInteger(e) || e < 0 || e >= experts) {
        throw invalidArgument(fn, `trace.experts[${l}][${i}]`, `an expert in [0, ${experts - 1}]`, e);
      }
    }
  });
}

function checkTopology(fn: string, placement: ExpertPlacement, o: TrafficOptions) {
  if (typeof o !== 'object' || o === null) {
    throw invalidArgument(fn, 'options', 'an object { nodes, bytesPerToken?, replicaChoice? }', o);
  }
  const gpus = checkInt(fn, 'placement.gpus', placement.gpus, 1);
  const nodes = checkInt(fn, 'options.nodes', o.nodes, 1);
  if (gpus % nodes !== 0)
    throw invalidArgument(fn, 'options.nodes', `a divisor of placement.gpus (${gpus})`, nodes);
  const bytesPerToken = o.bytesPerToken ?? 1;
  if (!(bytesPerToken > 0 && Number.isFinite(bytesPerToken))) {
    throw invalidArgument(fn, 'options.bytesPerToken', 'a finite number > 0', bytesPerToken);
  }
  const choice = o.replicaChoice ?? 'node-local';
  if (choice !== 'node-local' && choice !== 'spread') {
    throw invalidArgument(fn, 'options.replicaChoice', "'node-local' or 'spread'", choice);
  }
  const experts = placement.replicaCounts[0]?.length ?? 0;
  checkSlots(fn, placement.physToLog, gpus, experts);
  return { gpus, nodes, bytesPerToken, choice, experts };
}

function layerStates(fn: string, placement: ExpertPlacement, trace: RoutingTrace, o: TrafficOptions) {
  const t = checkTopology(fn, placement, o);
  checkTrace(fn, trace, placement.physToLog.length, t.experts);
  const layers = placement.physToLog.map(
    (slots, l) =>
      new LayerTraffic([...slots], trace.experts[l]!, trace.topK, t.gpus, t.nodes, t.choice, t.experts),
  );
  return { ...t, layers };
}

function summarize(layers: readonly LayerTraffic[], bytesPerToken: number): PlacementTraffic {
  const gpuLoad = layers.map((st) => [...st.loadP]);
  return {
    crossNodeBytes: layers.map((st) => st.remoteTotal() * bytesPerToken),
    remoteNodesPerToken: layers.map((st) => st.remoteTotal() / st.tokens),
    localShare: layers.map((st) => st.localShare()),
    gpuLoad,
    balancedness: gpuLoad.map((loadP) => {
      const max = Math.max(...loadP);
      return max > 0 ? loadP.reduce((a, b) => a + b, 0) / loadP.length / max : 1;
    }),
  };
}

/**
 * Counts the bytes a placement sends across nodes on a routing trace, with the GPU loads the same
 * routing gives (see the file header for the model): per layer the expected bytes of one dispatch
 * that cross nodes, the distinct remote nodes per token, the share of assignments served on the
 * token's node, each GPU's load and the balancedness (mean / max).
 *
 * When to use: to compare placements on traffic as well as balance (EPLB's hierarchical policy
 * keeps a group's experts on one node so that group-limited routing reaches few nodes; the global
 * policy balances better but scatters them), with a measured trace or one from
 * {@link sampleRoutingTrace}.
 *
 * @example
 * ```ts
 * const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
 * const trace = sampleRoutingTrace(load, { tokens: 4096, topK: 2, groups: 2, groupsPerToken: 1 });
 * const hier = rebalanceExperts(load, { replicas: 12, groups: 2, nodes: 2, gpus: 4 });
 * const glob = rebalanceExperts(load, { replicas: 12, groups: 1, nodes: 2, gpus: 4 });
 * placementTraffic(hier, trace, { nodes: 2 }).remoteNodesPerToken[0]; // 0.5: one group per node
 * placementTraffic(glob, trace, { nodes: 2 }).remoteNodesPerToken[0]; // more: groups split over nodes
 * ```
 */
export function placementTraffic(
  placement: ExpertPlacement,
  trace: RoutingTrace,
  options: TrafficOptions,
): PlacementTraffic {
  const { layers, bytesPerToken } = layerStates('placementTraffic', placement, trace, options);
  return summarize(layers, bytesPerToken);
}

/** Options of {@link localizePlacement}. */
export interface LocalizeOptions extends TrafficOptions {
  /**
   * How much a layer's max GPU load (under the same routing) may rise above the input's, as a
   * fraction: 0 (default) never lowers its balancedness, 0.05 trades up to 5% of it for traffic.
   */
  readonly maxLoadIncrease?: number;
  /** Swaps tried per layer (default 32 x R). */
  readonly tries?: number;
  /** Seed of the order swaps are tried in (default 1). */
  readonly seed?: number;
}

/** A placement after {@link localizePlacement}, with what the search did and what it gained. */
export interface LocalizedPlacement extends ExpertPlacement {
  /** [L] swaps taken per layer. */
  readonly swaps: number[];
  /** Traffic of the input placement on the trace. */
  readonly before: PlacementTraffic;
  /** Traffic of the result on the trace. */
  readonly after: PlacementTraffic;
}

/**
 * Lowers a placement's cross-node traffic on a trace by local search: per layer, seeded random
 * pairs of slots on different nodes exchange their experts when that lowers the expected cross-node
 * bytes and keeps the layer's max GPU load within `maxLoadIncrease` of the input's (both under the
 * same routing). It spreads an expert's replicas over nodes (more tokens find one on their node) and
 * gathers experts that tokens choose together. Replica counts and slots per GPU are kept; the
 * cross-node bytes of a layer never rise. Replicas change nodes, so a hierarchical input comes back
 * as `global` once a swap was taken.
 *
 * When to use: after {@link rebalanceExperts} (and {@link refinePlacement}) with the global policy,
 * when the inter-node links are the bottleneck, with a trace of the routing the placement will serve.
 *
 * @example
 * ```ts
 * const load = [[90, 132, 40, 61, 104, 165, 39, 4]];
 * const trace = sampleRoutingTrace(load, { tokens: 4096, topK: 2, groups: 2, groupsPerToken: 1 });
 * const glob = rebalanceExperts(load, { replicas: 12, groups: 1, nodes: 2, gpus: 4 });
 * const local = localizePlacement(glob, trace, { nodes: 2 });
 * local.after.crossNodeBytes[0] <= local.before.crossNodeBytes[0]; // true
 * local.after.balancedness[0] >= local.before.balancedness[0] - 1e-9; // true (maxLoadIncrease 0)
 * ```
 */
export function localizePlacement(
  placement: ExpertPlacement,
  trace: RoutingTrace,
  options: LocalizeOptions,
): LocalizedPlacement {
  const fn = 'localizePlacement';
  const { layers, bytesPerToken, nodes } = layerStates(fn, placement, trace, options);
  const before = summarize(layers, bytesPerToken);
  const slack = options.maxLoadIncrease ?? 0;
  if (!(slack >= 0 && Number.isFinite(slack))) {
    throw invalidArgument(fn, 'options.maxLoadIncrease', 'a finite number >= 0', slack);
  }
  const replicas = placement.physToLog[0]!.length;
  const tries = checkInt(fn, 'options.tries', options.tries ?? 32 * replicas, 0);
  const random = seededRandom(checkInt(fn, 'options.seed', options.seed ?? 1, 0));
  const swaps = layers.map((st, l) => {
    if (nodes === 1) return 0;
    const bound = Math.max(...before.gpuLoad[l]!) * (1 + slack) * (1 + 1e-12);
    const eps = 1e-9 * Math.max(1, st.tokens);
    let taken = 0;
    for (let k = 0; k < tries; k++) {
      const i = Math.floor(random() * replicas);
      const j = Math.floor(random() * replicas);
      if (st.nodeOfSlot(i) === st.nodeOfSlot(j) || st.slotExpert[i] === st.slotExpert[j]) continue;
      const x = st.slotExpert[i]!;
      const y = st.slotExpert[j]!;
      st.swap(i, j);
      if (st.maxLoad() <= bound) {
        if (st.recount(x, y) < -eps) {
          taken += 1;
          continue;
        }
        st.restore();
      }
      st.swap(i, j);
    }
    return taken;
  });
  const after = summarize(layers, bytesPerToken);
  const physToLog = layers.map((st) => st.slotExpert);
  const replicaCounts = placement.replicaCounts.map((c) => [...c]);
  return {
    physToLog,
    logToPhys: logToPhysOf(physToLog, replicaCounts),
    replicaCounts,
    gpus: placement.gpus,
    policy: swaps.some((s) => s > 0) ? 'global' : placement.policy,
    swaps,
    before,
    after,
  };
}
