/**
 * The collective interface every transport implements, and the context a rank runs with.
 *
 * Collectives work on host buffers (Float32Array or Int32Array); tensors are converted at the edges
 * (see `allToAllRows` and `allReduceGradients`). Calls are blocking: they return once this rank's part
 * of the collective has completed, so they can run inside a gradient function. Every rank must call
 * the same collectives in the same order.
 */
import type { BackendInfo } from '@switchyard/tensor';

/** A host buffer a collective can carry. */
export type HostBuffer = Float32Array | Int32Array;

/** Reduction of {@link Communicator.allReduce}: element-wise sum, mean (float32 only) or max. */
export type ReduceOp = 'sum' | 'mean' | 'max';

/** How ranks reach each other: `local` (one rank, this thread), `worker` (worker_threads), `zmq` (ZeroMQ between processes). */
export type TransportKind = 'local' | 'worker' | 'zmq';

/** Per-call options of every collective. */
export interface CollectiveOptions {
  /** Milliseconds this rank waits for its peers before failing with TIMEOUT; defaults to the communicator's `timeoutMs`. */
  readonly timeoutMs?: number;
  /** allReduce only: write the result into the input buffer instead of a new array (saves an allocation). */
  readonly inPlace?: boolean;
}

/** Where one rank lives. */
export interface PeerInfo {
  /** Global rank in [0, worldSize). */
  readonly rank: number;
  /** Node (machine or process group) the rank runs on. */
  readonly nodeRank: number;
  /** Index of the rank among the ranks of its node. */
  readonly localRank: number;
  /** Host the node advertised (127.0.0.1 on one machine). */
  readonly host: string;
}

/**
 * Collectives among `worldSize` ranks.
 *
 * When to use: inside a rank function started by `launch()` (as `ctx.comm`), or
 * `createLocalCommunicator()` for a single rank in the current thread.
 * A rank that dies or stalls makes every other rank's pending collective fail with RANK_FAILED or
 * TIMEOUT naming the missing rank(s); after such a failure the communicator refuses further calls.
 *
 * @example
 * ```ts
 * const total = ctx.comm.allReduce(new Float32Array([ctx.rank]), 'sum'); // [0 + 1 + ... + R-1]
 * const parts = ctx.comm.allGather(new Int32Array([ctx.rank])); // one Int32Array per rank
 * ctx.comm.barrier();
 * if (ctx.rank === 0) ctx.comm.send(1, new Float32Array([1, 2]), 7);
 * if (ctx.rank === 1) ctx.comm.recv(0, 7); // Float32Array [1, 2]
 * ```
 */
export interface Communicator {
  /** This rank, in [0, worldSize). */
  readonly rank: number;
  /** Number of ranks. */
  readonly worldSize: number;
  /** The transport carrying the collectives. */
  readonly transport: TransportKind;
  /** Default per-collective timeout in milliseconds. */
  readonly timeoutMs: number;
  /**
   * Element-wise reduction over ranks; every rank passes a buffer of the same length and dtype and gets
   * the same result (bit for bit: ranks are summed in rank order on every rank). `mean` needs Float32Array.
   * With `options.inPlace` the result overwrites `buf` and `buf` is returned.
   */
  allReduce<T extends HostBuffer>(buf: T, op?: ReduceOp, options?: CollectiveOptions): T;
  /** Every rank's buffer, indexed by rank; lengths may differ between ranks. */
  allGather<T extends HostBuffer>(buf: T, options?: CollectiveOptions): T[];
  /**
   * Personalised exchange with variable sizes: `send[j]` goes to rank j; returns `recv` with `recv[i]`
   * the buffer rank i sent to this rank. All buffers must have the same dtype.
   */
  allToAllV<T extends HostBuffer>(send: readonly T[], options?: CollectiveOptions): T[];
  /** Rank `root`'s buffer on every rank; all ranks pass a buffer of the same length and dtype. */
  broadcast<T extends HostBuffer>(buf: T, root: number, options?: CollectiveOptions): T;
  /** Returns once every rank has called it. */
  barrier(options?: CollectiveOptions): void;
  /**
   * Posts `buf` (copied) to rank `dst` under `tag` (a non-negative integer) and returns at once.
   * Point-to-point: only `dst` takes part, with a matching {@link Communicator.recv}; messages from
   * one rank under one tag arrive in the order they were sent. They never mix with collectives.
   */
  send(dst: number, buf: HostBuffer, tag?: number): void;
  /**
   * Blocks until the next message rank `src` sent to this rank under `tag` arrives, and returns it.
   * Fails with TIMEOUT after `timeoutMs`, or at once with RANK_FAILED when `src` failed or finished
   * without sending it; either error names `src`, and breaks the communicator like a failed collective.
   */
  recv<T extends HostBuffer = HostBuffer>(src: number, tag?: number, options?: CollectiveOptions): T;
  /**
   * A communicator for a subgroup: `ranks` (this communicator's numbering; any order, this rank among
   * them) become ranks 0..n-1 in ascending order. Its collectives and messages run among the members
   * only, over the same transport, and every member must create it. The same ranks give the same
   * communicator; all the ranks give this one. A failure in any communicator of a link breaks them all.
   *
   * When to use: collectives among part of the world, such as the data-parallel replicas of one
   * pipeline stage.
   */
  group(ranks: readonly number[]): Communicator;
  /** Number of collectives this communicator has started (the next collective's sequence number). */
  readonly collectivesStarted: number;
}

/**
 * What a rank function receives: its place in the world, the communicator, and the launch arguments.
 *
 * When to use: the single parameter of the function a rank module exports for `launch()`.
 *
 * @example
 * ```ts
 * export default function main(ctx: RankContext<{ steps: number }>) {
 *   for (let s = 0; s < ctx.args.steps; s++) ctx.comm.barrier();
 *   return { rank: ctx.rank };
 * }
 * ```
 */
export interface RankContext<A = unknown> {
  /** Global rank in [0, worldSize). */
  readonly rank: number;
  /** Number of ranks over all nodes. */
  readonly worldSize: number;
  /** Index of this rank on its node. */
  readonly localRank: number;
  /** Ranks on this node. */
  readonly localWorldSize: number;
  /** This node's index in [0, nnodes). */
  readonly nodeRank: number;
  /** Number of nodes. */
  readonly nnodes: number;
  /** Every rank's location, indexed by rank. */
  readonly peers: readonly PeerInfo[];
  /** Collectives among all ranks. */
  readonly comm: Communicator;
  /** The `args` given to `launch()` (structured-cloned into each rank). */
  readonly args: A;
  /** The TensorFlow.js backend this rank initialised. */
  readonly backend: BackendInfo;
}

/** The function a rank module exports: runs on every rank; its (structured-cloneable) result is returned by `launch()`. */
export type RankFunction<A = unknown, R = unknown> = (ctx: RankContext<A>) => R | Promise<R>;
