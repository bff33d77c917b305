/**
 * The collective algorithms, written once over a point-to-point {@link Link}, and the
 * point-to-point messages and subgroups that share the link with them.
 *
 * Each collective is a generator: it posts its sends (never blocking), then takes the messages it
 * needs from a mailbox, yielding the ranks it still waits for whenever one is missing. A driver resumes
 * it after new messages arrive, checks the missing ranks' liveness and the deadline, and blocks on the
 * link's wait primitive in between. The same generators run in a worker (blocking driver), on one
 * rank (never waits) and in tests (several ranks stepped in lockstep in one thread).
 *
 * Results are identical on every rank, bit for bit: reductions add rank 0's values first, then rank
 * 1's, and so on, whichever rank computes them.
 */
import { invalidArgument, SwitchyardError } from '@switchyard/tensor';
import type { CollectiveOptions, Communicator, HostBuffer, ReduceOp, TransportKind } from '../types';

/** The collectives, as named in messages and errors. */
export type CollectiveName = 'allReduce' | 'allGather' | 'allToAllV' | 'broadcast' | 'barrier';

/** What a message carries: a part of a collective, or a point-to-point message (`p2p`). */
export type WireOp = CollectiveName | 'p2p';

/** One message on a link: a part of a collective, or a point-to-point message. */
export interface WireMessage {
  /** Sending rank (its rank in `group` when the message belongs to a subgroup). */
  readonly src: number;
  /** Sequence number of the collective on the sender (the n-th collective it started); the tag of a `p2p` message. */
  readonly seq: number;
  /** Which collective the sender is running, or `p2p`. */
  readonly op: WireOp;
  /** The subgroup the message belongs to (its world ranks joined by commas); absent for the whole world. */
  readonly group?: string;
  /** Step of the collective the message belongs to. */
  readonly phase: number;
  readonly data: HostBuffer;
  /** Integers the receiver checks against its own call (lengths, reduce op, root, dtype). */
  readonly meta: readonly number[];
}

/** Liveness of a peer as the link knows it. */
export const PEER_RUNNING = 0;
/** The peer's rank function returned. */
export const PEER_DONE = 1;
/** The peer failed, exited or stopped responding. */
export const PEER_FAILED = 2;

/** Point-to-point transport under a {@link CollectiveEngine}. */
export interface Link {
  readonly rank: number;
  readonly worldSize: number;
  readonly transport: TransportKind;
  /** Posts a message to `dst` without blocking; the link may take ownership of `msg.data`. */
  send(dst: number, msg: WireMessage): void;
  /** Hands every message that has arrived to `deliver`. */
  poll(deliver: (msg: WireMessage) => void): void;
  /** PEER_RUNNING, PEER_DONE or PEER_FAILED. */
  peerState(rank: number): number;
  /** Why a peer is not running, when known. */
  peerReason(rank: number): string | undefined;
  /** A value to pass to {@link Link.wait}; read it before polling. */
  waitToken(): number;
  /** Blocks until something arrives after `token` was read, or `ms` elapse. */
  wait(token: number, ms: number): void;
  /** Tells every peer that this rank failed, so their collectives fail at once. */
  abort(reason: string): void;
}

/** What a collective generator can do. */
interface StepIO {
  readonly rank: number;
  readonly worldSize: number;
  send(dst: number, phase: number, data: HostBuffer, meta?: readonly number[]): void;
  take(src: number, phase: number): WireMessage | undefined;
}

/** A collective generator: yields the ranks it still waits for, returns the result. */
type Steps<R> = Generator<readonly number[], R, void>;

const DTYPE_F32 = 0;
const DTYPE_I32 = 1;
const REDUCE_CODES: Record<ReduceOp, number> = { sum: 0, mean: 1, max: 2 };
const REDUCE_NAMES = ['sum', 'mean', 'max'] as const;
/** Buffers up to this many elements are all-reduced in one round (all-gather, then reduce locally). */
const ONE_ROUND_MAX = 65536;

function dtypeCode(buf: HostBuffer): number {
  return buf instanceof Float32Array ? DTYPE_F32 : DTYPE_I32;
}

function dtypeName(code: number): string {
  return code === DTYPE_F32 ? 'Float32Array' : 'Int32Array';
}

function isHostBuffer(v: unknown): v is HostBuffer {
  return v instanceof Float32Array || v instanceof Int32Array;
}

function emptyLike<T extends HostBuffer>(buf: T, n: number): T {
  return (buf instanceof Float32Array ? new Float32Array(n) : new Int32Array(n)) as T;
}

function rankList(ranks: readonly number[]): string {
  return ranks.length === 1 ? `rank ${ranks[0]}` : `ranks ${ranks.join(', ')}`;
}

/** Receives one message per rank in `srcs` for `phase`, in any order, calling `onMessage` for each. */
function* recvAll(
  io: StepIO,
  srcs: readonly number[],
  phase: number,
  onMessage: (src: number, msg: WireMessage) => void,
): Generator<readonly number[], void, void> {
  let pending = srcs;
  for (;;) {
    pending = pending.filter((src) => {
      const msg = io.take(src, phase);
      if (msg === undefined) return true;
      onMessage(src, msg);
      return false;
    });
    if (pending.length === 0) return;
    yield pending;
  }
}

function others(io: StepIO): number[] {
  const out: number[] = [];
  for (let r = 0; r < io.worldSize; r++) if (r !== io.rank) out.push(r);
  return out;
}

/**
 * Reduces `parts` (indexed by rank) element by element in rank order, rounding to the buffer's type
 * after every step: the same order on every rank gives the same bits. Writes into `out` when given
 * (which may be one of the parts: each element is read before it is written).
 */
function reduceInRankOrder<T extends HostBuffer>(
  parts: readonly T[],
  op: ReduceOp,
  worldSize: number,
  out?: T,
): T {
  const first = parts[0]!;
  const n = first.length;
  const acc = out ?? emptyLike(first, n);
  const R = parts.length;
  if (R === 1) {
    if (acc !== first) acc.set(first);
    return acc;
  }
  if (R === 2 && op !== 'max') {
    // The common two-rank case in one tight loop: (a + b), or (a + b) / 2.
    const b = parts[1]!;
    if (op === 'mean') for (let i = 0; i < n; i++) acc[i] = (first[i]! + b[i]!) / worldSize;
    else for (let i = 0; i < n; i++) acc[i] = first[i]! + b[i]!;
    return acc;
  }
  const f32 = acc instanceof Float32Array;
  for (let i = 0; i < n; i++) {
    let v = first[i]!;
    for (let r = 1; r < R; r++) {
      const x = parts[r]![i]!;
      if (op === 'max') {
        if (x > v || Number.isNaN(x)) v = x;
      } else v = f32 ? Math.fround(v + x) : (v + x) | 0;
    }
    acc[i] = op === 'mean' ? v / worldSize : v;
  }
  return acc;
}

function chunkBounds(n: number, parts: number, j: number): [number, number] {
  return [Math.floor((j * n) / parts), Math.floor(((j + 1) * n) / parts)];
}

function checkSameCall(
  fn: CollectiveName,
  io: StepIO,
  src: number,
  msg: WireMessage,
  mine: readonly number[],
  names: readonly string[],
): void {
  for (let i = 0; i < mine.length; i++) {
    if (msg.meta[i] === mine[i]) continue;
    const name = names[i]!;
    const show = (v: number | undefined): string =>
      name === 'dtype' ? dtypeName(v ?? -1) : name === 'op' ? String(REDUCE_NAMES[v ?? -1]) : String(v);
    throw new SwitchyardError(
      name === 'dtype' ? 'DTYPE_MISMATCH' : 'INVALID_ARGUMENT',
      `${fn}() needs the same ${name === 'length' ? 'buffer length' : name} on every rank: rank ${io.rank} passed ${show(mine[i])}, rank ${src} passed ${show(msg.meta[i])}`,
      { details: { fn, field: name, rank: io.rank, peer: src, mine: mine[i], theirs: msg.meta[i] } },
    );
  }
}

function* allReduceSteps<T extends HostBuffer>(io: StepIO, buf: T, op: ReduceOp, inPlace: boolean): Steps<T> {
  const R = io.worldSize;
  const n = buf.length;
  const meta = [n, REDUCE_CODES[op], dtypeCode(buf)];
  const names = ['length', 'op', 'dtype'];
  if (R === 1) return reduceInRankOrder([buf], op, 1, inPlace ? buf : undefined);
  const peers = others(io);
  if (R === 2 || n <= ONE_ROUND_MAX) {
    // One round: every rank sends its whole buffer to every other rank and reduces locally.
    for (const dst of peers) io.send(dst, 0, buf, meta);
    const parts: T[] = [];
    parts[io.rank] = buf;
    yield* recvAll(io, peers, 0, (src, msg) => {
      checkSameCall('allReduce', io, src, msg, meta, names);
      parts[src] = msg.data as T;
    });
    return reduceInRankOrder(parts, op, R, inPlace ? buf : undefined);
  }
  // Two rounds: reduce-scatter (rank j reduces chunk j), then all-gather of the reduced chunks.
  for (const dst of peers) {
    const [lo, hi] = chunkBounds(n, R, dst);
    io.send(dst, 0, buf.subarray(lo, hi), meta);
  }
  const [myLo, myHi] = chunkBounds(n, R, io.rank);
  const parts: T[] = [];
  parts[io.rank] = buf.subarray(myLo, myHi) as T;
  yield* recvAll(io, peers, 0, (src, msg) => {
    checkSameCall('allReduce', io, src, msg, meta, names);
    parts[src] = msg.data as T;
  });
  const mine = reduceInRankOrder(parts, op, R);
  for (const dst of peers) io.send(dst, 1, mine, meta);
  const out = inPlace ? buf : emptyLike(buf, n);
  out.set(mine, myLo);
  yield* recvAll(io, peers, 1, (src, msg) => {
    const [lo, hi] = chunkBounds(n, R, src);
    if (msg.data.length !== hi - lo) throw new SwitchyardError('STATE_INVALID', 'allReduce(): corrupt chunk');
    out.set(msg.data, lo);
  });
  return out;
}

function* allGatherSteps<T extends HostBuffer>(io: StepIO, buf: T): Steps<T[]> {
  const meta = [dtypeCode(buf)];
  const peers = others(io);
  for (const dst of peers) io.send(dst, 0, buf, meta);
  const out: T[] = [];
  out[io.rank] = buf.slice() as T;
  yield* recvAll(io, peers, 0, (src, msg) => {
    checkSameCall('allGather', io, src, msg, meta, ['dtype']);
    out[src] = msg.data as T;
  });
  return out;
}

function* allToAllVSteps<T extends HostBuffer>(io: StepIO, send: readonly T[]): Steps<T[]> {
  const meta = [dtypeCode(send[0]!)];
  const peers = others(io);
  for (const dst of peers) io.send(dst, 0, send[dst]!, meta);
  const out: T[] = [];
  out[io.rank] = send[io.rank]!.slice() as T;
  yield* recvAll(io, peers, 0, (src, msg) => {
    checkSameCall('allToAllV', io, src, msg, meta, ['dtype']);
    out[src] = msg.data as T;
  });
  return out;
}

function* broadcastSteps<T extends HostBuffer>(io: StepIO, buf: T, root: number): Steps<T> {
  const meta = [buf.length, root, dtypeCode(buf)];
  const names = ['length', 'root', 'dtype'];
  if (io.rank === root) {
    for (const dst of others(io)) io.send(dst, 0, buf, meta);
    return buf.slice() as T;
  }
  let out: T | undefined;
  yield* recvAll(io, [root], 0, (src, msg) => {
    checkSameCall('broadcast', io, src, msg, meta, names);
    out = msg.data as T;
  });
  return out!;
}

function* barrierSteps(io: StepIO): Steps<void> {
  const peers = others(io);
  const empty = new Int32Array(0);
  for (const dst of peers) io.send(dst, 0, empty);
  yield* recvAll(io, peers, 0, () => {});
}

/** One collective in flight on one rank. */
export class PendingCollective<R> {
  private finished = false;
  private value: R | undefined;

  constructor(
    private readonly engine: CollectiveEngine,
    private readonly gen: Steps<R>,
    readonly op: CollectiveName,
    readonly seq: number,
    private readonly timeoutMs: number,
    private readonly deadline: number,
  ) {}

  /** One non-blocking attempt to make progress; true once the collective has completed. */
  step(): boolean {
    if (this.finished) return true;
    const { engine } = this;
    const link = engine.link;
    // Peer states are read before polling: a message a peer sent before it stopped is then seen.
    const states: number[] = [];
    for (let r = 0; r < link.worldSize; r++) states.push(link.peerState(r));
    try {
      engine.pollInto();
      engine.checkMismatch(this.seq, this.op);
      const res = this.gen.next();
      if (res.done) {
        this.finished = true;
        this.value = res.value;
        engine.finish(this);
        return true;
      }
      const missing = res.value;
      const gone = missing.filter((r) => states[r] !== PEER_RUNNING);
      if (gone.length > 0)
        throw engine.peerGone(`${this.op} #${this.seq}`, gone, (r) => states[r]!, this.details());
      if (Date.now() >= this.deadline) {
        throw new SwitchyardError(
          'TIMEOUT',
          `${this.op} #${this.seq}${engine.where()} timed out after ${this.timeoutMs} ms waiting for ${engine.rankList(missing)}`,
          {
            details: {
              ...this.details(),
              missing: missing.map((r) => engine.who(r)),
              timeoutMs: this.timeoutMs,
            },
          },
        );
      }
      return false;
    } catch (e) {
      throw engine.fail(e, `${this.op} #${this.seq}`, this);
    }
  }

  /** Blocks (through the link) until the collective completes or fails; returns its result. */
  wait(): R {
    const link = this.engine.link;
    for (;;) {
      const token = link.waitToken();
      if (this.step()) return this.value as R;
      link.wait(token, Math.max(1, this.deadline - Date.now()));
    }
  }

  /** The result, after {@link PendingCollective.step} returned true. */
  result(): R {
    if (!this.finished)
      throw new SwitchyardError('STATE_INVALID', `${this.op} #${this.seq} has not completed`);
    return this.value as R;
  }

  private details(): Record<string, unknown> {
    return { op: this.op, seq: this.seq, rank: this.engine.who(this.engine.rank) };
  }
}

/**
 * Routes the messages of one link to the communicators sharing it (the world and its subgroups),
 * and holds what they share: the error that broke the link, if any.
 */
class Switchboard {
  /** The error that broke a communicator of this link; every communicator of the link then refuses calls. */
  brokenError: SwitchyardError | undefined;
  private readonly engines = new Map<string, CollectiveEngine>();
  /** Messages of subgroups this rank has not created yet. */
  private readonly early = new Map<string, WireMessage[]>();

  constructor(readonly link: Link) {}

  register(key: string, engine: CollectiveEngine): void {
    this.engines.set(key, engine);
    for (const msg of this.early.get(key) ?? []) engine.accept(msg);
    this.early.delete(key);
  }

  engine(key: string): CollectiveEngine | undefined {
    return this.engines.get(key);
  }

  /** Hands every arrived message to the communicator it belongs to. */
  poll(): void {
    this.link.poll((msg) => {
      const key = msg.group ?? '';
      const engine = this.engines.get(key);
      if (engine !== undefined) engine.accept(msg);
      else {
        const list = this.early.get(key) ?? [];
        list.push(msg);
        this.early.set(key, list);
      }
    });
  }
}

/** The link of a subgroup: group ranks mapped to world ranks over the world's link. */
class GroupLink implements Link {
  readonly rank: number;
  readonly worldSize: number;
  readonly transport: TransportKind;

  constructor(
    private readonly base: Link,
    private readonly ranks: readonly number[],
    private readonly key: string,
  ) {
    this.rank = ranks.indexOf(base.rank);
    this.worldSize = ranks.length;
    this.transport = base.transport;
  }

  send(dst: number, msg: WireMessage): void {
    this.base.send(this.ranks[dst]!, { ...msg, group: this.key });
  }

  /** Unused: the messages of every communicator of a link arrive through its {@link Switchboard}. */
  poll(): void {}

  peerState(rank: number): number {
    return this.base.peerState(this.ranks[rank]!);
  }

  peerReason(rank: number): string | undefined {
    return this.base.peerReason(this.ranks[rank]!);
  }

  waitToken(): number {
    return this.base.waitToken();
  }

  wait(token: number, ms: number): void {
    this.base.wait(token, ms);
  }

  abort(reason: string): void {
    this.base.abort(reason);
  }
}

/** What a subgroup's communicator shares with the world's. */
interface GroupOf {
  readonly board: Switchboard;
  /** The group's world ranks, ascending. */
  readonly worldRanks: readonly number[];
  readonly key: string;
}

/**
 * The {@link Communicator} over a {@link Link}: numbers collectives, keeps the mailbox, validates
 * arguments, and turns a missing peer into TIMEOUT or RANK_FAILED. Point-to-point messages and
 * subgroups ({@link CollectiveEngine.group}) share the link; a failure in any of them breaks them all.
 */
export class CollectiveEngine implements Communicator {
  readonly timeoutMs: number;
  private nextSeq = 0;
  private current: PendingCollective<unknown> | undefined;
  private readonly mailbox = new Map<string, WireMessage>();
  /** Point-to-point messages by `src:tag`, in arrival order. */
  private readonly inbox = new Map<string, WireMessage[]>();
  private mismatch: WireMessage | undefined;
  private readonly board: Switchboard;
  private readonly worldRanks: readonly number[] | undefined;

  constructor(
    readonly link: Link,
    timeoutMs: number,
    groupOf?: GroupOf,
  ) {
    this.timeoutMs = timeoutMs;
    this.board = groupOf?.board ?? new Switchboard(link);
    this.worldRanks = groupOf?.worldRanks;
    this.board.register(groupOf?.key ?? '', this);
  }

  get rank(): number {
    return this.link.rank;
  }

  get worldSize(): number {
    return this.link.worldSize;
  }

  get transport(): TransportKind {
    return this.link.transport;
  }

  get collectivesStarted(): number {
    return this.nextSeq;
  }

  /** The error that broke this communicator (or another one sharing its link), if any. */
  get brokenError(): SwitchyardError | undefined {
    return this.board.brokenError;
  }

  /** The world rank of rank `r` of this communicator. */
  who(r: number): number {
    return this.worldRanks === undefined ? r : this.worldRanks[r]!;
  }

  /** " on rank R" (world numbering), with the group for a subgroup. */
  where(): string {
    const group = this.worldRanks === undefined ? '' : ` of group [${this.worldRanks.join(', ')}]`;
    return `${group} on rank ${this.who(this.rank)}`;
  }

  /** "rank 3" or "ranks 1, 3" in world numbering. */
  rankList(ranks: readonly number[]): string {
    return rankList(ranks.map((r) => this.who(r)));
  }

  allReduce<T extends HostBuffer>(buf: T, op: ReduceOp = 'sum', options?: CollectiveOptions): T {
    return this.beginAllReduce(buf, op, options).wait();
  }

  allGather<T extends HostBuffer>(buf: T, options?: CollectiveOptions): T[] {
    return this.beginAllGather(buf, options).wait();
  }

  allToAllV<T extends HostBuffer>(send: readonly T[], options?: CollectiveOptions): T[] {
    return this.beginAllToAllV(send, options).wait();
  }

  broadcast<T extends HostBuffer>(buf: T, root: number, options?: CollectiveOptions): T {
    return this.beginBroadcast(buf, root, options).wait();
  }

  barrier(options?: CollectiveOptions): void {
    this.beginBarrier(options).wait();
  }

  send(dst: number, buf: HostBuffer, tag = 0): void {
    this.checkUsable('send');
    this.checkPeer('send', 'dst', dst);
    checkBuffer('send', 'buf', buf);
    checkTag('send', tag);
    this.link.send(dst, { src: this.rank, seq: tag, op: 'p2p', phase: 0, data: buf.slice(), meta: [] });
  }

  recv<T extends HostBuffer = HostBuffer>(src: number, tag = 0, options?: CollectiveOptions): T {
    this.checkUsable('recv');
    this.checkPeer('recv', 'src', src);
    checkTag('recv', tag);
    const timeoutMs = this.checkTimeout('recv', options);
    const deadline = Date.now() + timeoutMs;
    const what = `recv from rank ${this.who(src)} (tag ${tag})`;
    const link = this.link;
    for (;;) {
      const token = link.waitToken();
      // Read before polling: a message the peer sent before it stopped is then seen.
      const state = link.peerState(src);
      try {
        this.pollInto();
        const msg = this.takeP2P(src, tag);
        if (msg !== undefined) return msg.data as T;
        if (state !== PEER_RUNNING) {
          throw this.peerGone(what, [src], () => state, {
            op: 'recv',
            tag,
            rank: this.who(this.rank),
          });
        }
        if (Date.now() >= deadline) {
          throw new SwitchyardError('TIMEOUT', `${what}${this.where()} timed out after ${timeoutMs} ms`, {
            details: { op: 'recv', tag, rank: this.who(this.rank), missing: [this.who(src)], timeoutMs },
          });
        }
      } catch (e) {
        throw this.fail(e, what);
      }
      link.wait(token, Math.max(1, deadline - Date.now()));
    }
  }

  group(ranks: readonly number[]): Communicator {
    const fn = 'group';
    if (!Array.isArray(ranks) || ranks.length === 0) {
      throw invalidArgument(fn, 'ranks', 'a non-empty array of ranks', ranks);
    }
    ranks.forEach((r, i) => {
      if (!Number.isInteger(r) || r < 0 || r >= this.worldSize) {
        throw invalidArgument(fn, `ranks[${i}]`, `an integer in [0, ${this.worldSize - 1}]`, r);
      }
    });
    const sorted = [...ranks].sort((a, b) => a - b);
    if (sorted.some((r, i) => i > 0 && r === sorted[i - 1])) {
      throw invalidArgument(fn, 'ranks', 'distinct ranks', ranks.join(', '));
    }
    if (!sorted.includes(this.rank)) {
      throw invalidArgument(
        fn,
        'ranks',
        `a list that holds this rank (${this.who(this.rank)})`,
        ranks.join(', '),
      );
    }
    const worldRanks = sorted.map((r) => this.who(r));
    const key = worldRanks.join(',');
    if (
      key === (this.worldRanks ?? []).join(',') ||
      (this.worldRanks === undefined && sorted.length === this.worldSize)
    ) {
      return this;
    }
    const existing = this.board.engine(key);
    if (existing !== undefined) return existing;
    const base = this.board.link;
    return new CollectiveEngine(new GroupLink(base, worldRanks, key), this.timeoutMs, {
      board: this.board,
      worldRanks,
      key,
    });
  }

  beginAllReduce<T extends HostBuffer>(
    buf: T,
    op: ReduceOp = 'sum',
    options?: CollectiveOptions,
  ): PendingCollective<T> {
    checkBuffer('allReduce', 'buf', buf);
    if (op !== 'sum' && op !== 'mean' && op !== 'max')
      throw invalidArgument('allReduce', 'op', 'one of "sum", "mean", "max"', op);
    if (op === 'mean' && !(buf instanceof Float32Array))
      throw invalidArgument('allReduce', 'buf', 'a Float32Array for op "mean"', buf);
    return this.begin('allReduce', options, (io) => allReduceSteps(io, buf, op, options?.inPlace === true));
  }

  beginAllGather<T extends HostBuffer>(buf: T, options?: CollectiveOptions): PendingCollective<T[]> {
    checkBuffer('allGather', 'buf', buf);
    return this.begin('allGather', options, (io) => allGatherSteps(io, buf));
  }

  beginAllToAllV<T extends HostBuffer>(
    send: readonly T[],
    options?: CollectiveOptions,
  ): PendingCollective<T[]> {
    if (!Array.isArray(send) || send.length !== this.worldSize) {
      throw invalidArgument(
        'allToAllV',
        'send',
        `an array of ${this.worldSize} buffers (one per rank)`,
        Array.isArray(send) ? `an array of ${send.length}` : send,
      );
    }
    for (let j = 0; j < send.length; j++) checkBuffer('allToAllV', `send[${j}]`, send[j]);
    const code = dtypeCode(send[0]!);
    const other = send.findIndex((b) => dtypeCode(b) !== code);
    if (other >= 0) {
      throw invalidArgument('allToAllV', `send[${other}]`, `a ${dtypeName(code)} like send[0]`, send[other]);
    }
    return this.begin('allToAllV', options, (io) => allToAllVSteps(io, send));
  }

  beginBroadcast<T extends HostBuffer>(
    buf: T,
    root: number,
    options?: CollectiveOptions,
  ): PendingCollective<T> {
    checkBuffer('broadcast', 'buf', buf);
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize)
      throw invalidArgument('broadcast', 'root', `an integer in [0, ${this.worldSize - 1}]`, root);
    return this.begin('broadcast', options, (io) => broadcastSteps(io, buf, root));
  }

  beginBarrier(options?: CollectiveOptions): PendingCollective<void> {
    return this.begin('barrier', options, (io) => barrierSteps(io));
  }

  /** Moves arrived messages into the mailboxes of the communicators sharing the link. */
  pollInto(): void {
    this.board.poll();
  }

  /** Files one message of this communicator: point-to-point in the inbox, collectives in the mailbox. */
  accept(msg: WireMessage): void {
    if (msg.op === 'p2p') {
      const key = `${msg.src}:${msg.seq}`;
      const queue = this.inbox.get(key);
      if (queue === undefined) this.inbox.set(key, [msg]);
      else queue.push(msg);
      return;
    }
    const key = `${msg.src}:${msg.seq}:${msg.phase}`;
    if (this.mailbox.has(key)) {
      throw new SwitchyardError('STATE_INVALID', `duplicate message ${key}${this.where()}`);
    }
    this.mailbox.set(key, msg);
    if (this.current !== undefined && msg.seq === this.current.seq && msg.op !== this.current.op) {
      this.mismatch = msg;
    }
  }

  /** Throws when a peer runs a different collective under the same sequence number. */
  checkMismatch(seq: number, op: CollectiveName): void {
    const m = this.mismatch;
    if (m === undefined || m.seq !== seq) return;
    throw new SwitchyardError(
      'STATE_INVALID',
      `collective mismatch at collective #${seq}${this.worldRanks === undefined ? '' : ` of group [${this.worldRanks.join(', ')}]`}: rank ${this.who(this.rank)} called ${op}, rank ${this.who(m.src)} called ${m.op}; every rank must call the same collectives in the same order`,
      { details: { seq, rank: this.who(this.rank), op, peer: this.who(m.src), peerOp: m.op } },
    );
  }

  /** The RANK_FAILED error of `what` when the peers `gone` (this communicator's numbering) are not running. */
  peerGone(
    what: string,
    gone: readonly number[],
    stateOf: (r: number) => number,
    details: Record<string, unknown>,
  ): SwitchyardError {
    const why = gone
      .map((r) => {
        const reason = this.link.peerReason(r);
        const name = `rank ${this.who(r)}`;
        if (stateOf(r) === PEER_DONE)
          return `${name} finished its rank function without ${what.startsWith('recv') ? 'sending it' : 'joining this collective'}`;
        return `${name} failed${reason ? ` (${reason})` : ''}`;
      })
      .join('; ');
    return new SwitchyardError('RANK_FAILED', `${what}${this.where()} cannot complete: ${why}`, {
      details: { ...details, missing: gone.map((r) => this.who(r)) },
    });
  }

  /**
   * Records the error that ended `what` as the link's (every communicator of the link refuses calls
   * from now on) and tells the peers; returns the error to throw.
   */
  fail(e: unknown, what: string, pending?: PendingCollective<unknown>): SwitchyardError {
    if (pending !== undefined && this.current === pending) this.current = undefined;
    if (this.board.brokenError === undefined) {
      const err =
        e instanceof SwitchyardError
          ? e
          : new SwitchyardError('STATE_INVALID', `${what} failed: ${String(e)}`, { cause: e });
      this.board.brokenError = err;
      this.link.abort(err.message);
    }
    return this.board.brokenError;
  }

  finish(pending: PendingCollective<unknown>): void {
    if (this.current === pending) this.current = undefined;
  }

  private takeP2P(src: number, tag: number): WireMessage | undefined {
    const key = `${src}:${tag}`;
    const queue = this.inbox.get(key);
    const msg = queue?.shift();
    if (queue !== undefined && queue.length === 0) this.inbox.delete(key);
    return msg;
  }

  private checkUsable(op: string): void {
    const broken = this.board.brokenError;
    if (broken !== undefined) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `${op}() was called on rank ${this.who(this.rank)} after an earlier collective failed (${broken.message}); the communicator cannot be used again`,
        { cause: broken },
      );
    }
  }

  private checkPeer(op: string, arg: string, r: number): void {
    if (!Number.isInteger(r) || r < 0 || r >= this.worldSize || r === this.rank) {
      throw invalidArgument(
        op,
        arg,
        `another rank, an integer in [0, ${this.worldSize - 1}] other than ${this.rank}`,
        r,
      );
    }
  }

  private checkTimeout(op: string, options: CollectiveOptions | undefined): number {
    const timeoutMs = options?.timeoutMs ?? this.timeoutMs;
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0))
      throw invalidArgument(op, 'options.timeoutMs', 'a number > 0', timeoutMs);
    return timeoutMs;
  }

  private begin<R>(
    op: CollectiveName,
    options: CollectiveOptions | undefined,
    steps: (io: StepIO) => Steps<R>,
  ): PendingCollective<R> {
    this.checkUsable(op);
    if (this.current !== undefined) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `${op}() was called on rank ${this.who(this.rank)} while ${this.current.op} #${this.current.seq} is still in flight`,
      );
    }
    const timeoutMs = this.checkTimeout(op, options);
    const seq = this.nextSeq++;
    const io: StepIO = {
      rank: this.rank,
      worldSize: this.worldSize,
      send: (dst, phase, data, meta = []) => {
        this.link.send(dst, { src: this.rank, seq, op, phase, data: data.slice(), meta });
      },
      take: (src, phase) => {
        const key = `${src}:${seq}:${phase}`;
        const msg = this.mailbox.get(key);
        if (msg === undefined) return undefined;
        this.mailbox.delete(key);
        if (msg.op !== op) {
          this.mismatch = msg;
          this.checkMismatch(seq, op);
        }
        return msg;
      },
    };
    for (const msg of this.mailbox.values()) if (msg.seq === seq && msg.op !== op) this.mismatch = msg;
    const pending = new PendingCollective<R>(this, steps(io), op, seq, timeoutMs, Date.now() + timeoutMs);
    this.current = pending as PendingCollective<unknown>;
    return pending;
  }
}

function checkBuffer(fn: string, arg: string, v: unknown): asserts v is HostBuffer {
  if (!isHostBuffer(v)) throw invalidArgument(fn, arg, 'a Float32Array or an Int32Array', v);
}

function checkTag(fn: string, tag: unknown): void {
  if (!Number.isSafeInteger(tag) || (tag as number) < 0)
    throw invalidArgument(fn, 'tag', 'a non-negative safe integer', tag);
}
