/**
 * Expert placement and replication: deepseek-ai/EPLB's `rebalance_experts`, reproduced step by
 * step, and the balancedness of a placement.
 *
 * Letters: L MoE layers, E logical experts, R physical expert slots (replicas), G expert groups,
 * N nodes, P GPUs (P is a multiple of N), S slots per GPU (R / P). Inside one node: El logical experts
 * of the node (E / N), Rl slots of the node (R / N), Pl GPUs of the node (P / N). "mlog" numbers the
 * logical experts node by node (the groups a node received, in the order they arrived), "phy" numbers
 * a node's slots in the order replication created them, "pphy" numbers them GPU by GPU.
 *
 * Arithmetic follows the reference: it casts the loads to float32 (`weight.float()`), so sums and
 * load-per-replica quotients are rounded to float32 here too (`Math.fround`), and comparisons see the
 * same numbers as torch does. For integer loads below 2^24 (token counts) every sum is exact.
 *
 * Ties, where the reference leaves them to torch:
 * - `sort(descending=True)` (which group, or which slot, is packed first) is torch's CPU sort with
 *   `stable=False`: std::sort or x86-simd-sort depending on the build, so its order of equal loads is
 *   unspecified. Here equal loads keep their index order (a stable descending sort, lower index
 *   first). Results equal the reference's whenever the loads sorted there are distinct; on ties
 *   (for example two replicas of one expert, which always tie in the GPU packing) the physical-to-
 *   logical map can still agree, but which replica rank sits in which slot may differ.
 * - `max(dim=-1).indices` (which expert gets the next replica) returns the first maximum in torch,
 *   and here: the lowest expert index among equal load-per-replica.
 * - Python's `min(..., key=pack_weights.__getitem__)` (the pack an item goes to) returns the first
 *   minimum: the lowest pack index among the packs with room and the least load. Same here.
 */
import { checkInt, invalidArgument, PlanError } from '../errors';

const FN = 'rebalanceExperts';

/** Topology and slot count for {@link rebalanceExperts}: the arguments of the reference after `weight`. */
export interface RebalanceOptions {
  /** Physical expert slots R in all (the reference's `num_replicas`); a multiple of `gpus`, >= E. */
  readonly replicas: number;
  /** Expert groups G (group-limited routing); divides E. Groups are kept whole on one node. */
  readonly groups: number;
  /** Server nodes N (fast links inside a node, e.g. NVLink). */
  readonly nodes: number;
  /** GPUs P in all; a multiple of `nodes`. */
  readonly gpus: number;
}

/** A placement of physical expert slots, per layer: the three maps of the reference and the GPU count. */
export interface ExpertPlacement {
  /** [L][R] the logical expert each slot holds (the reference's `phy2log`). Slot s is on GPU floor(s / S). */
  readonly physToLog: number[][];
  /**
   * [L][E][maxReplicas] the slots of each expert, ordered by replica rank, padded with -1 up to the
   * largest replica count of any layer (the reference's `log2phy`).
   */
  readonly logToPhys: number[][][];
  /** [L][E] replicas of each expert, >= 1, summing to R per layer (the reference's `logcnt`). */
  readonly replicaCounts: number[][];
  /** GPUs P the slots are spread over, S = R / P per GPU in slot order. */
  readonly gpus: number;
  /** Which policy made it: `hierarchical` when groups % nodes == 0, else `global`. */
  readonly policy: 'hierarchical' | 'global';
}

/** Balanced packing of one layer's items: pack and rank in pack of each item. */
interface Packing {
  readonly pack: number[];
  readonly rank: number[];
}

/**
 * The reference's `balanced_packing` for one layer: items in descending weight (stable) go, each, to
 * the lightest pack that still has room (lowest index on ties); every pack gets n / packs items.
 */
function balancedPacking(weightN: readonly number[], packs: number): Packing {
  const n = weightN.length;
  const perPack = n / packs;
  if (perPack === 1) {
    return { pack: weightN.map((_, i) => i), rank: weightN.map(() => 0) };
  }
  const order = weightN.map((_, i) => i).sort((a, b) => weightN[b]! - weightN[a]! || a - b);
  const pack = new Array<number>(n).fill(-1);
  const rank = new Array<number>(n).fill(-1);
  const packWeight = new Array<number>(packs).fill(0);
  const packItems = new Array<number>(packs).fill(0);
  for (const item of order) {
    let best = -1;
    for (let p = 0; p < packs; p++) {
      if (packItems[p]! < perPack && (best < 0 || packWeight[p]! < packWeight[best]!)) best = p;
    }
    pack[item] = best;
    rank[item] = packItems[best]!;
    packWeight[best] = Math.fround(packWeight[best]! + weightN[item]!);
    packItems[best]! += 1;
  }
  return { pack, rank };
}

/** One layer's replication: the reference's `replicate_experts`. */
interface Replication {
  /** [Rl] logical expert of each slot, in creation order. */
  readonly phyToLog: number[];
  /** [Rl] replica rank of each slot (0 for the first copy). */
  readonly phyRank: number[];
  /** [El] replicas of each expert. */
  readonly count: number[];
}

/**
 * The reference's `replicate_experts` for one layer: slot i < El holds expert i; each further slot
 * goes to the expert with the largest load per replica (float32 quotient, first maximum on ties).
 */
function replicateExperts(weightEl: readonly number[], slots: number): Replication {
  const experts = weightEl.length;
  const phyToLog = Array.from({ length: slots }, (_, i) => i);
  const phyRank = new Array<number>(slots).fill(0);
  const count = new Array<number>(experts).fill(1);
  for (let i = experts; i < slots; i++) {
    let best = 0;
    let bestLoad = Math.fround(weightEl[0]! / count[0]!);
    for (let e = 1; e < experts; e++) {
      const perReplica = Math.fround(weightEl[e]! / count[e]!);
      if (perReplica > bestLoad) {
        best = e;
        bestLoad = perReplica;
      }
    }
    phyToLog[i] = best;
    phyRank[i] = count[best]!;
    count[best]! += 1;
  }
  return { phyToLog, phyRank, count };
}

/** One layer's result of the hierarchical policy, before `logToPhys` is built. */
interface LayerPlacement {
  readonly physToLog: number[];
  readonly physRank: number[];
  readonly replicaCounts: number[];
}

/** The reference's `rebalance_experts_hierarchical` for one layer (already float32). */
function rebalanceLayer(
  weightE: readonly number[],
  replicas: number,
  groups: number,
  nodes: number,
  gpus: number,
): LayerPlacement {
  const experts = weightE.length;
  const groupSize = experts / groups;
  const groupsPerNode = groups / nodes;
  const slotsPerGpu = replicas / gpus;
  const expertsPerNode = experts / nodes;
  const slotsPerNode = replicas / nodes;

  // Step 1: pack groups onto nodes, each node getting G / N groups.
  const tokensG = Array.from({ length: groups }, (_, g) => {
    let sum = 0;
    for (let j = 0; j < groupSize; j++) sum = Math.fround(sum + weightE[g * groupSize + j]!);
    return sum;
  });
  const groupPacking = balancedPacking(tokensG, nodes);
  const logToMlogE = new Array<number>(experts);
  for (let g = 0; g < groups; g++) {
    const first = (groupPacking.pack[g]! * groupsPerNode + groupPacking.rank[g]!) * groupSize;
    for (let j = 0; j < groupSize; j++) logToMlogE[g * groupSize + j] = first + j;
  }
  const mlogToLogE = new Array<number>(experts);
  for (let e = 0; e < experts; e++) mlogToLogE[logToMlogE[e]!] = e;

  const physToLog = new Array<number>(replicas);
  const physRank = new Array<number>(replicas);
  const mlogCountE = new Array<number>(experts);
  for (let node = 0; node < nodes; node++) {
    const mlogBase = node * expertsPerNode;
    // Step 2: replicate the heaviest experts inside the node. [El] loads in mlog order.
    const tokensEl = Array.from({ length: expertsPerNode }, (_, k) => weightE[mlogToLogE[mlogBase + k]!]!);
    const rep = replicateExperts(tokensEl, slotsPerNode);
    for (let k = 0; k < expertsPerNode; k++) mlogCountE[mlogBase + k] = rep.count[k]!;

    // Step 3: pack the node's slots onto its GPUs, S slots each. [Rl] load per slot.
    const tokensRl = rep.phyToLog.map((k) => Math.fround(tokensEl[k]! / rep.count[k]!));
    const gpuPacking = balancedPacking(tokensRl, gpus / nodes);
    const pphyToPhyRl = new Array<number>(slotsPerNode);
    for (let p = 0; p < slotsPerNode; p++) {
      pphyToPhyRl[gpuPacking.pack[p]! * slotsPerGpu + gpuPacking.rank[p]!] = p;
    }
    for (let q = 0; q < slotsPerNode; q++) {
      const phy = pphyToPhyRl[q]!;
      physToLog[node * slotsPerNode + q] = mlogToLogE[mlogBase + rep.phyToLog[phy]!]!;
      physRank[node * slotsPerNode + q] = rep.phyRank[phy]!;
    }
  }
  const replicaCounts = Array.from({ length: experts }, (_, e) => mlogCountE[logToMlogE[e]!]!);
  return { physToLog, physRank, replicaCounts };
}

/** Checks `load` ([L][E], rectangular, finite >= 0 in float32) and returns E. */
export function checkLoad(fn: string, load: unknown): number {
  if (!Array.isArray(load) || load.length === 0) {
    throw invalidArgument(
      fn,
      'load',
      'a non-empty array of layers, each an array of expert loads [L][E]',
      load,
    );
  }
  const first: unknown = load[0];
  if (!Array.isArray(first) || first.length === 0) {
    throw invalidArgument(fn, 'load[0]', 'a non-empty array of expert loads', first);
  }
  const experts = first.length;
  load.forEach((row: unknown, l) => {
    if (!Array.isArray(row)) throw invalidArgument(fn, `load[${l}]`, 'an array of expert loads', row);
    if (row.length !== experts) {
      throw invalidArgument(
        fn,
        `load[${l}].length`,
        `${experts} (the length of load[0]; rows must not be ragged)`,
        row.length,
      );
    }
    row.forEach((v: unknown, e) => {
      if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(Math.fround(v))) {
        const shown = typeof v === 'number' ? String(v) : JSON.stringify(v);
        throw new PlanError(
          'INVALID_ARGUMENT',
          `\`load[${l}][${e}]\` passed to ${fn}() must be a finite number >= 0 (within float32 range), got ${shown}`,
        );
      }
    });
  });
  return experts;
}

/**
 * Replicates and places experts from their loads: deepseek-ai/EPLB's `rebalance_experts`. With
 * groups % nodes == 0 (hierarchical policy) it packs expert groups onto nodes (balanced, G / N groups
 * each), replicates inside each node the expert with the largest load per replica until the node's
 * R / N slots are filled, then packs those slots onto the node's GPUs (balanced, R / P each). Otherwise
 * (global policy) it does the same with one group on one node: replicas may land anywhere.
 *
 * When to use: to choose which experts to duplicate and where, from per-layer expert loads (routed
 * token counts) observed in training or serving, before an expert-parallel run loads its weights.
 * Loads are float32 as in the reference; ties are broken as the file header says.
 *
 * @example
 * ```ts
 * const load = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]];
 * const p = rebalanceExperts(load, { replicas: 16, groups: 4, nodes: 2, gpus: 8 });
 * p.physToLog[0]; // [5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1]
 * p.replicaCounts[0]; // [1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1]
 * ```
 */
export function rebalanceExperts(load: number[][], options: RebalanceOptions): ExpertPlacement {
  const experts = checkLoad(FN, load);
  if (typeof options !== 'object' || options === null) {
    throw invalidArgument(FN, 'options', 'an object { replicas, groups, nodes, gpus }', options);
  }
  const replicas = checkInt(FN, 'options.replicas', options.replicas, 1);
  const groups = checkInt(FN, 'options.groups', options.groups, 1);
  const nodes = checkInt(FN, 'options.nodes', options.nodes, 1);
  const gpus = checkInt(FN, 'options.gpus', options.gpus, 1);
  if (gpus % nodes !== 0) {
    throw invalidArgument(FN, 'options.gpus', `a multiple of options.nodes (${nodes})`, gpus);
  }
  if (replicas % gpus !== 0) {
    throw invalidArgument(
      FN,
      'options.replicas',
      `a multiple of options.gpus (${gpus}), the same number of slots on every GPU`,
      replicas,
    );
  }
  if (experts % groups !== 0) {
    throw invalidArgument(FN, 'options.groups', `a divisor of the number of experts (${experts})`, groups);
  }
  if (replicas < experts) {
    throw invalidArgument(
      FN,
      'options.replicas',
      `>= the number of experts (${experts}), so that every expert has a slot`,
      replicas,
    );
  }

  const hierarchical = groups % nodes === 0;
  const layers = load.map((row) => {
    const weightE = row.map((v) => Math.fround(v));
    return hierarchical
      ? rebalanceLayer(weightE, replicas, groups, nodes, gpus)
      : rebalanceLayer(weightE, replicas, 1, 1, gpus);
  });

  const replicaCounts = layers.map((p) => p.replicaCounts);
  return {
    physToLog: layers.map((p) => p.physToLog),
    logToPhys: logToPhysOf(
      layers.map((p) => p.physToLog),
      replicaCounts,
      layers.map((p) => p.physRank),
    ),
    replicaCounts,
    gpus,
    policy: hierarchical ? 'hierarchical' : 'global',
  };
}

/**
 * The reference's `log2phy` from `phy2log`: [L][E][maxReplicas] the slot of each replica rank of each
 * expert, padded with -1 up to the largest count of any layer. Without `rankR` ([L][R], the replica
 * rank of each slot) an expert's replicas are ranked in slot order.
 */
export function logToPhysOf(
  physToLog: readonly (readonly number[])[],
  replicaCounts: readonly (readonly number[])[],
  rankR?: readonly (readonly number[])[],
): number[][][] {
  const maxReplicas = Math.max(...replicaCounts.map((c) => Math.max(...c)));
  return replicaCounts.map((countE, l) => {
    const mapEX = countE.map(() => new Array<number>(maxReplicas).fill(-1));
    const next = countE.map(() => 0);
    physToLog[l]!.forEach((e, slot) => {
      const rank = rankR === undefined ? next[e]!++ : rankR[l]![slot]!;
      mapEX[e]![rank] = slot;
    });
    return mapEX;
  });
}

/**
 * Checks a placement's slots: per layer a positive multiple of `gpus` slots, each an expert in
 * [0, experts) (with `replicaCounts` given: one of its rows as long as the experts, and >= 1 for
 * every expert a slot holds).
 */
export function checkSlots(
  fn: string,
  physToLog: readonly (readonly number[])[],
  gpus: number,
  experts: number,
  replicaCounts?: readonly (readonly number[])[],
): void {
  physToLog.forEach((slotsR, l) => {
    if (slotsR.length === 0 || slotsR.length % gpus !== 0) {
      throw invalidArgument(
        fn,
        `placement.physToLog[${l}].length`,
        `a multiple of gpus (${gpus})`,
        slotsR.length,
      );
    }
    const countE = replicaCounts?.[l];
    if (replicaCounts !== undefined && countE?.length !== experts) {
      throw invalidArgument(
        fn,
        `placement.replicaCounts[${l}].length`,
        `${experts} (experts in load)`,
        countE?.length,
      );
    }
    slotsR.forEach((e, slot) => {
      if (!Number.isInteger(e) || e < 0 || e >= experts || (countE !== undefined && !(countE[e]! >= 1))) {
        const expected = `an expert in [0, ${experts - 1}]${countE === undefined ? '' : ' with replicaCounts >= 1'}`;
        throw invalidArgument(fn, `placement.physToLog[${l}][${slot}]`, expected, e);
      }
    });
  });
}

/** Per-layer GPU loads of a placement and two summaries of how even they are. */
export interface PlacementBalance {
  /** [L][P] load each GPU serves: the sum over its slots of load[e] / replicaCounts[e]. */
  readonly gpuLoad: number[][];
  /** [L] mean GPU load / max GPU load, in (0, 1]; 1 is perfect balance (and a layer with no load). */
  readonly balancedness: number[];
  /** [L] max GPU load / mean GPU load, >= 1 (TensorRT-LLM's imbalance ratio); 1 for a layer with no load. */
  readonly imbalanceRatio: number[];
}

/**
 * How evenly a placement spreads the load over GPUs, per layer. Each replica of expert e serves
 * load[e] / replicaCounts[e] (tokens split evenly over replicas); a GPU serves the sum over its slots.
 * `balancedness` = mean / max GPU load (the EPLB/DeepSeek measure, 1 at best); `imbalanceRatio` =
 * max / mean (TensorRT-LLM's wide-EP load-balancer measure, its reciprocal, 1 at best). Computed in
 * float64.
 *
 * When to use: to compare placements (EPLB against plain expert parallelism, or against a later
 * refinement) on the same loads, or to decide whether re-placing is worth it.
 *
 * @example
 * ```ts
 * const load = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86]];
 * const p = rebalanceExperts(load, { replicas: 16, groups: 4, nodes: 2, gpus: 8 });
 * const b = balancedness(load, p);
 * b.gpuLoad[0]; // [121.5, 86.5, 125, 113, 147.5, 131.5, 156, 152]
 * b.balancedness[0]; // (1033 / 8) / 156 = 0.8277
 * b.imbalanceRatio[0]; // 156 / (1033 / 8) = 1.2081
 * ```
 */
export function balancedness(
  load: number[][],
  placement: Pick<ExpertPlacement, 'physToLog' | 'replicaCounts' | 'gpus'>,
): PlacementBalance {
  const fn = 'balancedness';
  const experts = checkLoad(fn, load);
  const gpus = checkInt(fn, 'placement.gpus', placement.gpus, 1);
  const { physToLog, replicaCounts } = placement;
  if (physToLog.length !== load.length || replicaCounts.length !== load.length) {
    throw invalidArgument(
      fn,
      'placement',
      `maps with one row per layer of load (${load.length})`,
      `physToLog ${physToLog.length}, replicaCounts ${replicaCounts.length}`,
    );
  }
  checkSlots(fn, physToLog, gpus, experts, replicaCounts);
  const gpuLoad = load.map((rowE, l) => {
    const slotsR = physToLog[l]!;
    const countE = replicaCounts[l]!;
    const slotsPerGpu = slotsR.length / gpus;
    const loadP = new Array<number>(gpus).fill(0);
    slotsR.forEach((e, slot) => {
      loadP[Math.floor(slot / slotsPerGpu)]! += rowE[e]! / countE[e]!;
    });
    return loadP;
  });
  const ratios = gpuLoad.map((loadP) => {
    const max = Math.max(...loadP);
    const mean = loadP.reduce((a, b) => a + b, 0) / loadP.length;
    return max > 0 ? { balancedness: mean / max, imbalance: max / mean } : { balancedness: 1, imbalance: 1 };
  });
  return {
    gpuLoad,
    balancedness: ratios.map((r) => r.balancedness),
    imbalanceRatio: ratios.map((r) => r.imbalance),
  };
}
