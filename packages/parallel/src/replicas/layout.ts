/**
 * Expert parallelism combined with data parallelism, with or without redundant experts: the groups
 * of ranks, the banks installed in a model, and online rebalancing from observed expert loads.
 *
 * Layout of R ranks at expert-parallel degree P (P divides R): consecutive ranks form an
 * expert-parallel group, ranks `[g P, (g + 1) P)` for g in [0, R / P); the groups are data-parallel
 * copies of each other. Rank r holds slots `[(r mod P) J, (r mod P + 1) J)` of every MoE layer;
 * ranks `{i, i + P, i + 2 P, ...}` hold the same slots (a replica group) and sum their gradients.
 * Tokens travel only inside a group. Everything else in the model is replicated over all R ranks.
 *
 * Shape letters: L MoE layers, E logical experts, Q physical slots per layer, P ranks per group.
 */
import { balancedness, rebalanceExperts } from '@switchyard/plan';
import { checkInt, invalidArgument } from '@switchyard/tensor';
import { groupCommunicator } from '../comm/groups';
import type { Communicator } from '../comm/types';
import { type MoELayerHost, moeLayersOf } from '../strategies/expert';
import { type MigrationStats, ReplicatedExpertBank, type SlotFollowers } from './bank';

/** The communicators of one rank in an expert-parallel layout. */
export interface ExpertParallelGroups {
  /** P: ranks per expert-parallel group. */
  readonly degree: number;
  /** Index of this rank's group, in [0, R / P). */
  readonly group: number;
  /** The ranks of this rank's group (rank i of it is world rank `group P + i`). */
  readonly ep: Communicator;
  /** The ranks holding the same slots in every group (rank g of it is world rank `g P + ep.rank`). */
  readonly replicas: Communicator;
}

/**
 * Splits the ranks of `comm` into expert-parallel groups of `degree` consecutive ranks, and the
 * replica groups across them (see the file header for the layout).
 *
 * When to use: before installing expert banks on a run of R ranks at expert-parallel degree P.
 *
 * @example
 * ```ts
 * const g = expertParallelGroups(ctx.comm, 2); // 4 ranks: groups {0, 1}, {2, 3}; replicas {0, 2}, {1, 3}
 * ```
 */
export function expertParallelGroups(comm: Communicator, degree: number): ExpertParallelGroups {
  const fn = 'expertParallelGroups';
  const R = comm?.worldSize;
  checkInt(fn, 'degree', degree, { min: 1, max: R });
  if (R % degree !== 0)
    throw invalidArgument(fn, 'degree', `a divisor of the number of ranks (${R})`, degree);
  const G = R / degree;
  const ep = Array.from({ length: G }, (_, g) => Array.from({ length: degree }, (_, i) => g * degree + i));
  const replicas = Array.from({ length: degree }, (_, i) =>
    Array.from({ length: G }, (_, g) => g * degree + i),
  );
  return {
    degree,
    group: Math.floor(comm.rank / degree),
    ep: groupCommunicator(comm, ep),
    replicas: groupCommunicator(comm, replicas),
  };
}

/** Placement of {@link applyReplicatedExperts}: the slot-to-expert map of every MoE layer, or the slot count for an initial one. */
export type InitialPlacement =
  /** [L][Q] slot-to-expert maps, one per MoE layer. */
  | { readonly physToLog: readonly (readonly number[])[] }
  /** Q slots per layer, placed by EPLB as if every expert had the same load (the first Q - E experts get a second copy). */
  | { readonly slots: number };

/**
 * Makes every MoE layer of a model (or one layer) expert-parallel over `groups.ep` with the given
 * placement: each layer's local experts are replaced by a {@link ReplicatedExpertBank} holding this
 * rank's slots (the local bank is released), through `setExperts`. Returns the banks, in layer order.
 * With `{ slots: E }` and no replicas this is plain expert parallelism.
 *
 * When to use: to train a whole model with expert parallelism, optionally combined with data
 * parallelism (`expertParallelGroups`) and redundant experts. Build the model with the same seed on
 * every rank first (or load the same checkpoint).
 *
 * @example
 * ```ts
 * const groups = expertParallelGroups(ctx.comm, 2);
 * const banks = applyReplicatedExperts(model, groups, { slots: 12 }); // 8 experts + 4 redundant
 * ```
 */
export function applyReplicatedExperts(
  target: MoELayerHost,
  groups: ExpertParallelGroups,
  placement: InitialPlacement,
): ReplicatedExpertBank[] {
  const fn = 'applyReplicatedExperts';
  const layers = moeLayersOf(fn, target);
  if (layers.length === 0) return [];
  const E = layers[0]!.experts.numExperts;
  let maps: readonly (readonly number[])[];
  if ('slots' in placement) {
    const Q = checkInt(fn, 'placement.slots', placement.slots, { min: E });
    if (Q % groups.degree !== 0)
      throw invalidArgument(fn, 'placement.slots', `a multiple of the ${groups.degree} ranks of a group`, Q);
    const uniform = layers.map(() => new Array<number>(E).fill(1));
    maps = rebalanceExperts(uniform, { replicas: Q, groups: 1, nodes: 1, gpus: groups.degree }).physToLog;
  } else {
    maps = placement.physToLog;
    if (!Array.isArray(maps) || maps.length !== layers.length)
      throw invalidArgument(fn, 'placement.physToLog', `one map per MoE layer (${layers.length})`, maps);
  }
  return layers.map((layer, l) => {
    const bank = new ReplicatedExpertBank(layer.experts, groups.ep, maps[l]!, {
      replicaComm: groups.replicas,
    });
    layer.setExperts(bank).dispose();
    return bank;
  });
}

/** What {@link rebalanceReplicatedExperts} did. */
export interface RebalanceResult {
  /** [L] slot-to-expert maps now in force. */
  readonly physToLog: number[][];
  /** [L] balancedness (mean / max rank load) of the loads under the placement before. */
  readonly before: number[];
  /** [L] the same under the new placement. */
  readonly after: number[];
  /** Whether the banks moved: false when EPLB's placement did not beat the current one by `minGain`. */
  readonly migrated: boolean;
  /** Wall time of the migration (weights and followers), milliseconds; 0 when nothing moved. */
  readonly migrationMs: number;
  /** Per layer, what the migration moved on this rank. */
  readonly moved: MigrationStats[];
}

/**
 * Online rebalancing: places every layer's slots by EPLB (`rebalanceExperts` of @switchyard/plan,
 * global policy over the P ranks of a group) from `loadLE` (tokens per expert observed, [L][E], the
 * same on every rank), and migrates each bank (and its `followers`, e.g. optimizer moments) to it
 * when its mean balancedness on these loads beats the current placement's by more than `minGain`
 * (EPLB is greedy: on loads the current placement already serves well it can do slightly worse).
 * A collective over each group.
 *
 * When to use: between optimizer steps, every K steps, with the loads counted since the last rebalance.
 *
 * @example
 * ```ts
 * const r = rebalanceReplicatedExperts(banks, loadLE, (l) => [momentsOf(l, 'm'), momentsOf(l, 'v')]);
 * console.log(r.before, r.after, r.migrationMs);
 * ```
 */
export function rebalanceReplicatedExperts(
  banks: readonly ReplicatedExpertBank[],
  loadLE: number[][],
  followers: (layer: number) => readonly SlotFollowers[] = () => [],
  minGain = 0,
): RebalanceResult {
  const fn = 'rebalanceReplicatedExperts';
  if (!Array.isArray(banks) || banks.length === 0 || !banks.every((b) => b instanceof ReplicatedExpertBank))
    throw invalidArgument(fn, 'banks', 'a non-empty array of ReplicatedExpertBank', banks);
  if (!Array.isArray(loadLE) || loadLE.length !== banks.length)
    throw invalidArgument(fn, 'loadLE', `one row of expert loads per bank (${banks.length})`, loadLE);
  const P = banks[0]!.comm.worldSize;
  const current = {
    physToLog: banks.map((b) => b.physToLog),
    replicaCounts: banks.map((b) => b.replicaCounts),
    gpus: P,
  };
  const before = balancedness(loadLE, current).balancedness;
  const next = rebalanceExperts(loadLE, { replicas: banks[0]!.numSlots, groups: 1, nodes: 1, gpus: P });
  const after = balancedness(loadLE, next).balancedness;
  if (!(mean(after) > mean(before) + minGain)) {
    return {
      physToLog: current.physToLog,
      before,
      after: before,
      migrated: false,
      migrationMs: 0,
      moved: [],
    };
  }
  const t0 = performance.now();
  const moved = banks.map((b, l) => b.migrate(next.physToLog[l]!, followers(l)));
  const migrationMs = performance.now() - t0;
  return { physToLog: next.physToLog, before, after, migrated: true, migrationMs, moved };
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}
