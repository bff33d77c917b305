/**
 * Group communicators: the collectives of one group of ranks, where the groups partition the world
 * (expert-parallel groups, the replicas of one expert shard). Every collective of a group is one
 * collective of the world communicator in which ranks outside the group exchange nothing, so the
 * groups of one partition run their collectives side by side, the same calls in the same order
 * (SPMD code, where every group executes the same program), and a failure or a stall of any rank
 * surfaces in every group with the world's error naming it.
 */
import { invalidArgument, SwitchyardError } from '@switchyard/tensor';
import type { CollectiveOptions, Communicator, HostBuffer, ReduceOp, TransportKind } from './types';

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

function emptyLike<T extends HostBuffer>(buf: T, n = 0): T {
  return (buf instanceof Float32Array ? new Float32Array(n) : new Int32Array(n)) as T;
}

/** One group of a partition of a world communicator, as a communicator of its own. */
class GroupCommunicator implements Communicator {
  readonly rank: number;
  readonly worldSize: number;
  private started = 0;

  constructor(
    private readonly world: Communicator,
    /** World ranks of the group, in group-rank order. */
    readonly members: readonly number[],
  ) {
    this.rank = members.indexOf(world.rank);
    this.worldSize = members.length;
  }

  get transport(): TransportKind {
    return this.world.transport;
  }

  get timeoutMs(): number {
    return this.world.timeoutMs;
  }

  get collectivesStarted(): number {
    return this.started;
  }

  allToAllV<T extends HostBuffer>(send: readonly T[], options?: CollectiveOptions): T[] {
    if (!Array.isArray(send) || send.length !== this.worldSize) {
      throw invalidArgument(
        'allToAllV',
        'send',
        `an array of ${this.worldSize} buffers (one per rank of the group)`,
        Array.isArray(send) ? `an array of ${send.length}` : send,
      );
    }
    return this.exchange(send, options, 'allToAllV');
  }

  allGather<T extends HostBuffer>(buf: T, options?: CollectiveOptions): T[] {
    return this.exchange(
      this.members.map(() => buf),
      options,
      'allGather',
    );
  }

  allReduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', options?: CollectiveOptions): T {
    if (op !== 'sum' && op !== 'mean' && op !== 'max')
      throw invalidArgument('allReduce', 'op', 'one of "sum", "mean", "max"', op);
    if (op === 'mean' && !(buf instanceof Float32Array))
      throw invalidArgument('allReduce', 'buf', 'a Float32Array for op "mean"', buf);
    const parts = this.allGather(buf, options);
    parts.forEach((p, i) => {
      if (p.length !== buf.length) {
        throw new SwitchyardError(
          'INVALID_ARGUMENT',
          `allReduce() needs the same buffer length on every rank: rank ${this.world.rank} passed ${buf.length}, rank ${this.members[i]} passed ${p.length}`,
        );
      }
    });
    const out = options?.inPlace ? buf : emptyLike(buf, buf.length);
    // In group-rank order on every member, rounded after each addition: the same bits everywhere.
    const f32 = buf instanceof Float32Array;
    for (let j = 0; j < buf.length; j++) {
      let v = parts[0]![j]!;
      for (let i = 1; i < parts.length; i++) {
        const x = parts[i]![j]!;
        if (op === 'max') {
          if (x > v || Number.isNaN(x)) v = x;
        } else v = f32 ? Math.fround(v + x) : (v + x) | 0;
      }
      out[j] = op === 'mean' ? v / parts.length : v;
    }
    return out;
  }

  broadcast<T extends HostBuffer>(buf: T, root: number, options?: CollectiveOptions): T {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize)
      throw invalidArgument('broadcast', 'root', `an integer in [0, ${this.worldSize - 1}]`, root);
    const send = this.members.map((_, i) => (this.rank === root && i !== root ? buf : emptyLike(buf)));
    const got = this.exchange(send, options, 'broadcast')[root]!;
    if (this.rank === root) return buf.slice() as T;
    if (got.length !== buf.length) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `broadcast() needs the same buffer length on every rank: rank ${this.world.rank} passed ${buf.length}, rank ${this.members[root]} passed ${got.length}`,
      );
    }
    return got;
  }

  barrier(options?: CollectiveOptions): void {
    this.exchange(
      this.members.map(() => new Int32Array(0)),
      options,
      'barrier',
    );
  }

  /** One world allToAllV carrying `send[i]` to member i and nothing to ranks outside the group. */
  private exchange<T extends HostBuffer>(
    send: readonly T[],
    options: CollectiveOptions | undefined,
    op: string,
  ): T[] {
    const first = send[0];
    if (!(first instanceof Float32Array) && !(first instanceof Int32Array))
      throw invalidArgument(op, 'buf', 'a Float32Array or an Int32Array', first);
    const empty = emptyLike(first);
    const worldSend: T[] = new Array<T>(this.world.worldSize).fill(empty);
    this.members.forEach((r, i) => {
      worldSend[r] = send[i]!;
    });
    this.started += 1;
    const recv = this.world.allToAllV(worldSend, options);
    return this.members.map((r) => recv[r]!);
  }
}

/**
 * The communicator of this rank's group, for groups that partition the ranks of `comm`: rank i of
 * the result is `groups[g][i]` of `comm`, where g is the group holding `comm.rank`. Each collective
 * of the result is one collective of `comm` (ranks outside the group send and receive nothing), so
 * every group of the partition must call its collectives in step with the others: the same calls
 * in the same order, as the groups of SPMD code do. Errors (a dead or stalled rank) are `comm`'s,
 * naming world ranks.
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
  return new GroupCommunicator(comm, groupOf(fn, groups, comm.worldSize, comm.rank));
}
