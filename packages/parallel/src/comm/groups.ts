/**
 * Group communicators for a partition of the ranks (expert-parallel groups, the replicas of one
 * expert shard): each rank gets its group's subgroup communicator (`Communicator.group`), after the
 * partition is checked.
 */
import { invalidArgument } from '@switchyard/tensor';
import type { Communicator } from './types';

/** Checks that `groups` partitions [0, worldSize) and returns the group holding `rank`. */
function groupOf(
  fn: string,
  groups: readonly (readonly number[])[],
  worldSize: number,
  rank: number,
): number[] {
  if (!Array.isArray(groups) || groups.length === 0)
    throw invalidArgument(fn, 'groups', 'a non-empty array of rank lists', groups);
  const seen = new Int32Array(worldSize).fill(-1);
  groups.forEach((g, i) => {
    if (!Array.isArray(g) || g.length === 0)
      throw invalidArgument(fn, `groups[${i}]`, 'a non-empty array of ranks', g);
    for (const r of g) {
      if (!Number.isInteger(r) || r < 0 || r >= worldSize)
        throw invalidArgument(fn, `groups[${i}]`, `ranks in [0, ${worldSize - 1}]`, g);
      if (seen[r] !== -1)
        throw invalidArgument(fn, 'groups', `a partition of the ranks (rank ${r} is in two groups)`, groups);
      seen[r] = i;
    }
  });
  const missing = seen.indexOf(-1);
  if (missing >= 0)
    throw invalidArgument(
      fn,
      'groups',
      `a partition of all ${worldSize} ranks (rank ${missing} is in none)`,
      groups,
    );
  return [...groups[seen[rank]!]!];
}

/**
 * The communicator of this rank's group, for groups that partition the ranks of `comm`: the group's
 * subgroup communicator (`comm.group(members)`), whose rank i is the i-th smallest member. The groups
 * run their collectives independently of each other, over the same transport; errors (a dead or
 * stalled rank) name world ranks, and a failure breaks every communicator of the rank that sees it.
 *
 * When to use: to run a strategy on part of the ranks while the other parts run the same strategy,
 * e.g. expert parallelism inside groups of P ranks with data parallelism across the groups.
 *
 * @example
 * ```ts
 * // 4 ranks: experts sharded over {0, 1} and over {2, 3}; each shard's two copies in {0, 2} and {1, 3}
 * const ep = groupCommunicator(ctx.comm, [[0, 1], [2, 3]]);
 * const replicas = groupCommunicator(ctx.comm, [[0, 2], [1, 3]]);
 * ep.allReduce(new Float32Array([ctx.rank])); // [1] on ranks 0 and 1, [5] on ranks 2 and 3
 * ```
 */
export function groupCommunicator(comm: Communicator, groups: readonly (readonly number[])[]): Communicator {
  const fn = 'groupCommunicator';
  if (comm === null || typeof comm !== 'object' || typeof comm.allToAllV !== 'function')
    throw invalidArgument(fn, 'comm', 'a Communicator', comm);
  return comm.group(groupOf(fn, groups, comm.worldSize, comm.rank));
}
