/**
 * Redundant experts: an expert-parallel bank whose ranks hold physical expert slots, as an EPLB
 * placement (`rebalanceExperts` of @switchyard/plan) lays them out. Slot s holds a copy of logical
 * expert `physToLog[s]`; a busy expert can have several copies (replicas) on different ranks, and
 * the assignments routed to it are split evenly among them. Every copy of an expert keeps the same
 * weights: after the backward pass {@link ReplicatedExpertBank.reduceGradients} gives every copy the
 * gradient of all the tokens of its expert, so the same optimizer update keeps them identical and the
 * model computes what a single rank with E experts computes. {@link ReplicatedExpertBank.migrate}
 * moves weights (and optimizer state shaped like them) to a new placement between steps.
 *
 * Shape letters: T local tokens, D model width, F expert hidden width, E logical experts, K slots
 * per token, P ranks of the expert-parallel group, Q physical slots of the group, J = Q / P slots per
 * rank, X values of one expert weight (D F), N values of one expert over all its weights.
 */
import {
  type BankOutput,
  buildDispatch,
  type ComputeMode,
  checkBankInput,
  type DispatchPlan,
  type ExpertBank,
  type ExpertWeightName,
  RoutedExperts,
  resolveComputeMode,
} from '@switchyard/experts';
import type { RoutingPlan } from '@switchyard/routing';
import { invalidArgument, SwitchyardError, type Tensor, type Tensor2D, tf } from '@switchyard/tensor';
import type { Communicator } from '../comm/types';
import {
  checkCommunicator,
  checkFullBank,
  DistributedExpertBank,
  forwardOverRanks,
  shardVariables,
} from '../strategies/expert';

/** Bank variables shaped like the bank's own (`w1`, `w3`, `w2`), e.g. an optimizer's moments of them. */
export type SlotFollowers = Readonly<Record<string, tf.Variable>>;

/** What one {@link ReplicatedExpertBank.migrate} did on this rank. */
export interface MigrationStats {
  /** Slots of this rank whose expert changed. */
  readonly slotsChanged: number;
  /** Float32 values this rank sent to other ranks (weights and followers). */
  readonly valuesSent: number;
  /** Float32 values this rank received. */
  readonly valuesReceived: number;
}

/** Slots of each expert (ascending) and the ranks holding each, from a physical-to-logical map. */
interface SlotIndex {
  readonly physToLog: Int32Array;
  /** [E][] slots holding expert e, ascending. */
  readonly slotsOf: readonly Int32Array[];
  /** [E][] ranks holding expert e, ascending, without repeats. */
  readonly ranksOf: readonly Int32Array[];
}

function indexPlacement(
  fn: string,
  arg: string,
  physToLog: readonly number[] | Int32Array,
  E: number,
  P: number,
): SlotIndex {
  const Q = physToLog?.length ?? 0;
  if (!(Array.isArray(physToLog) || physToLog instanceof Int32Array) || Q === 0 || Q % P !== 0) {
    throw invalidArgument(
      fn,
      arg,
      `a slot-to-expert map whose length is a multiple of the ${P} ranks`,
      Array.isArray(physToLog) ? `${Q} slots` : physToLog,
    );
  }
  const J = Q / P;
  const slots: number[][] = Array.from({ length: E }, () => []);
  const ranks: number[][] = Array.from({ length: E }, () => []);
  for (let s = 0; s < Q; s++) {
    const e = physToLog[s]!;
    if (!Number.isInteger(e) || e < 0 || e >= E)
      throw invalidArgument(fn, `${arg}[${s}]`, `an expert in [0, ${E - 1}]`, e);
    slots[e]!.push(s);
    const r = Math.floor(s / J);
    if (ranks[e]!.at(-1) !== r) ranks[e]!.push(r);
  }
  const missing = slots.findIndex((l) => l.length === 0);
  if (missing >= 0)
    throw invalidArgument(fn, arg, `a map giving every expert a slot (expert ${missing} has none)`, [
      ...physToLog,
    ]);
  return {
    physToLog: Int32Array.from(physToLog),
    slotsOf: slots.map((l) => Int32Array.from(l)),
    ranksOf: ranks.map((l) => Int32Array.from(l)),
  };
}

/** The values of the experts of `list` (N each, from `values`) end to end, in list order. */
function packExperts(list: readonly number[], N: number, values: (e: number) => Float32Array): Float32Array {
  const buf = new Float32Array(list.length * N);
  for (const [i, e] of list.entries()) buf.set(values(e), i * N);
  return buf;
}

/** The inverse of {@link packExperts} for a buffer rank `src` sent: expert -> its N values. */
function unpackExperts(
  fn: string,
  src: number,
  buf: Float32Array,
  list: readonly number[],
  N: number,
): Map<number, Float32Array> {
  if (buf.length !== list.length * N) {
    throw new SwitchyardError(
      'STATE_INVALID',
      `${fn}: rank ${src} sent ${buf.length} values, expected ${list.length * N} (${list.length} experts)`,
    );
  }
  return new Map(list.map((e, i) => [e, buf.subarray(i * N, (i + 1) * N)]));
}

/**
 * An expert bank over the physical slots of an expert-parallel group: with Q slots and P ranks,
 * rank p holds slots `[p J, (p + 1) J)` (J = Q / P) as stacked variables `w1` [J, D, F], `w3`,
 * `w2` [J, F, D], marked as shards. Slot s is a copy of expert `physToLog[s]`; an expert with c
 * copies gets its assignments split into c even runs, rotated by rank so every copy sees the same
 * share. With Q = E and the identity map it is plain expert parallelism.
 *
 * Gradients: after the backward pass call {@link ReplicatedExpertBank.reduceGradients} (every copy
 * then holds the gradient of all its expert's tokens, summed over the group and over `replicaComm`,
 * the ranks holding the same slots in the other groups); `allReduceGradients` then scales the shards
 * by 1/R like any expert shard. The optimizer's identical update keeps the copies identical.
 *
 * When to use: expert parallelism with redundant experts placed by EPLB, to even out the rows each
 * rank computes when routing is skewed; move to a new placement with {@link ReplicatedExpertBank.migrate}.
 *
 * @example
 * ```ts
 * const load = [[90, 10, 10, 10]]; // tokens per expert observed so far
 * const { physToLog } = rebalanceExperts(load, { replicas: 6, groups: 1, nodes: 1, gpus: 2 });
 * const bank = new ReplicatedExpertBank(layer.experts, ctx.comm, physToLog[0]!); // expert 0 gets 3 copies
 * layer.setExperts(bank).dispose();
 * ```
 */
export class ReplicatedExpertBank extends DistributedExpertBank {
  /** Ranks of the expert-parallel group. */
  readonly comm: Communicator;
  /** Ranks holding the same slots in the other expert-parallel groups (data-parallel copies of this rank's slots). */
  readonly replicaComm: Communicator | undefined;
  /** Q: physical slots of the group. */
  readonly numSlots: number;
  /** J: slots on each rank. */
  readonly slotsPerRank: number;
  /** Rows this rank has computed since the bank was built (or {@link ReplicatedExpertBank.resetRowCount}). */
  rowsComputed = 0;
  private index: SlotIndex;

  /**
   * Copies this rank's slots out of `experts`, a bank holding all E experts as stacked weights (the
   * layer's local experts, or a gathered bank); `experts` is left as it was. Every rank of `comm`
   * passes the same `physToLog`.
   */
  constructor(
    experts: ExpertBank,
    comm: Communicator,
    physToLog: readonly number[] | Int32Array,
    options: { readonly replicaComm?: Communicator } = {},
  ) {
    const fn = 'ReplicatedExpertBank';
    checkCommunicator(fn, 'comm', comm);
    const rc = options.replicaComm;
    if (rc !== undefined) checkCommunicator(fn, 'options.replicaComm', rc);
    checkFullBank(fn, experts);
    const P = comm.worldSize;
    const index = indexPlacement(fn, 'physToLog', physToLog, experts.numExperts, P);
    const J = index.physToLog.length / P;
    // this rank's slots of the stacked weights: w1 [J, D, F], w3 (SwiGLU), w2 [J, F, D]
    const vars = shardVariables(
      experts,
      Array.from(index.physToLog.slice(comm.rank * J, (comm.rank + 1) * J)),
    );
    super(experts, vars);
    this.comm = comm;
    this.replicaComm = rc !== undefined && rc.worldSize > 1 ? rc : undefined;
    this.numSlots = index.physToLog.length;
    this.slotsPerRank = J;
    this.index = index;
  }

  /** The slot-to-expert map in force (a copy). */
  get physToLog(): number[] {
    return Array.from(this.index.physToLog);
  }

  /** Copies of each expert in the group, [E]. */
  get replicaCounts(): number[] {
    return this.index.slotsOf.map((s) => s.length);
  }

  /** Restarts {@link ReplicatedExpertBank.rowsComputed} at 0. */
  resetRowCount(): void {
    this.rowsComputed = 0;
  }

  /**
   * The routed output of this rank's tokens, each assignment computed on the rank holding the copy
   * of its expert it was given to. A collective: every rank of the group calls it (and
   * differentiates it) together.
   */
  forwardWithDispatch(
    xTD: Tensor2D,
    plan: RoutingPlan,
    d: DispatchPlan,
    computeMode: ComputeMode,
  ): BankOutput {
    const fn = 'ReplicatedExpertBank.forward';
    this.assertLive('ReplicatedExpertBank', 'forward');
    checkBankInput(fn, this, xTD, plan, d);
    const slotIdx = this.slotOfAssignments(plan, d);
    const bySlot = buildDispatch({
      numTokens: plan.numTokens,
      numExperts: this.numSlots,
      k: plan.k,
      expertIdx: slotIdx,
      kept: plan.kept,
      capacity: null,
    });
    const mode = resolveComputeMode(computeMode, null);
    const { yTD, rowsComputed } = forwardOverRanks(
      fn,
      this.comm,
      xTD,
      plan.topkWeightTK,
      bySlot,
      this.slotsPerRank,
      this,
      mode,
    );
    this.rowsComputed += rowsComputed;
    return { yTD, computeMode: mode };
  }

  /**
   * The slot of every kept assignment [T K]: an expert's c copies take its assignments of this
   * rank (in token order) in c even runs, run q going to copy (q + rank) mod c.
   */
  private slotOfAssignments(plan: RoutingPlan, d: DispatchPlan): Int32Array {
    const { expertIdx, kept } = plan;
    const { slotsOf } = this.index;
    const rank = this.comm.rank;
    const seenE = new Int32Array(this.numExperts);
    const slotIdx = new Int32Array(expertIdx.length);
    for (let a = 0; a < expertIdx.length; a++) {
      if (!kept[a]) continue;
      const e = expertIdx[a]!;
      const slots = slotsOf[e]!;
      const c = slots.length;
      if (c === 1) {
        slotIdx[a] = slots[0]!;
        continue;
      }
      const q = Math.floor((seenE[e]! * c) / d.countsE[e]!);
      seenE[e]! += 1;
      slotIdx[a] = slots[(q + rank) % c]!;
    }
    return slotIdx;
  }

  /**
   * All E experts in one local bank, each from its first copy (a copy: this bank is left as it was).
   * A collective over the group.
   *
   * When to use: to save a checkpoint in the single-device layout (`withFullExperts` does it for a
   * whole model), or to leave expert parallelism.
   *
   * @example
   * ```ts
   * const full = bank.gather(); // RoutedExperts with w1 [E, D, F]
   * ```
   */
  gather(): RoutedExperts {
    this.assertLive('ReplicatedExpertBank', 'gather');
    const full: Partial<Record<ExpertWeightName, tf.Tensor3D>> = {};
    for (const [name, v] of Object.entries(this.variables) as [ExpertWeightName, tf.Variable][]) {
      full[name] = this.gatherLogical(v.dataSync() as Float32Array, v.shape as [number, number, number]);
    }
    try {
      return new RoutedExperts(
        { numExperts: this.numExperts, dModel: this.dModel, dFF: this.dFF, activation: this.activation },
        { w1EDF: full.w1!, w2EFD: full.w2!, ...(full.w3 ? { w3EDF: full.w3 } : {}) },
      );
    } finally {
      tf.dispose(Object.values(full));
    }
  }

  /**
   * Per-expert values [E, a, b] from this rank's per-slot values [J, a, b] of a tensor shaped like a
   * bank variable (a weight, or an optimizer moment of it): each expert from its first copy. A
   * collective over the group.
   *
   * When to use: to save optimizer state of the slots in the single-device layout.
   *
   * @example
   * ```ts
   * const mEDF = bank.gatherLogical(momentOfW1.dataSync() as Float32Array, momentOfW1.shape); // [E, D, F]
   * ```
   */
  gatherLogical(slotValues: Float32Array, shape: readonly number[]): tf.Tensor3D {
    const [J, a, b] = shape as [number, number, number];
    const X = a * b;
    if (J !== this.slotsPerRank || slotValues.length !== J * X) {
      throw invalidArgument(
        'ReplicatedExpertBank.gatherLogical',
        'slotValues',
        `${this.slotsPerRank} slots of ${a} x ${b} values`,
        `${slotValues.length} values for shape [${shape.join(', ')}]`,
      );
    }
    const parts = this.comm.allGather(slotValues);
    const out = new Float32Array(this.numExperts * X);
    this.index.slotsOf.forEach((slots, e) => {
      const s = slots[0]!;
      const part = parts[Math.floor(s / J)]!;
      const j = s % J;
      out.set(part.subarray(j * X, (j + 1) * X), e * X);
    });
    return tf.tensor3d(out, [this.numExperts, a, b], 'float32');
  }

  /**
   * This rank's slots [J, a, b] of per-expert values [E, a, b] (weights or optimizer moments in the
   * single-device layout). Local: no collective.
   *
   * When to use: to load optimizer state saved in the single-device layout into the slots.
   *
   * @example
   * ```ts
   * const mJDF = bank.slotsOf(savedMomentEDF); // the moments of this rank's slots
   * ```
   */
  slotsOf(logical: Tensor | Float32Array, shape?: readonly number[]): tf.Tensor3D {
    const values = logical instanceof Float32Array ? logical : (logical.dataSync() as Float32Array);
    const [E, a, b] = (shape ?? (logical as Tensor).shape) as [number, number, number];
    if (E !== this.numExperts || values.length !== E * a * b) {
      throw invalidArgument(
        'ReplicatedExpertBank.slotsOf',
        'logical',
        `values for ${this.numExperts} experts`,
        `${values.length} values, shape [${(shape ?? []).join(', ')}]`,
      );
    }
    const J = this.slotsPerRank;
    const X = a * b;
    const out = new Float32Array(J * X);
    const first = this.comm.rank * J;
    for (let j = 0; j < J; j++) {
      const e = this.index.physToLog[first + j]!;
      out.set(values.subarray(e * X, (e + 1) * X), j * X);
    }
    return tf.tensor3d(out, [J, a, b], 'float32');
  }

  /**
   * The gradients of this rank's slots after the backward pass (`grads` keyed by the bank's variable
   * names; a missing one counts as zeros), replaced by what every copy of an expert must apply: the
   * sum, over every rank holding a copy (in this group, then over `replicaComm`), of the gradient
   * its copies received. Every copy of an expert then holds the same values, bit for bit. Returns new
   * tensors for every bank variable; `grads` is left as it is. A collective over the group and over
   * `replicaComm` (every rank calls it, whatever its gradients).
   *
   * When to use: on every rank after each backward pass (or after accumulating a step's
   * micro-batches), before `allReduceGradients` and the optimizer.
   *
   * @example
   * ```ts
   * const reduced = bank.reduceGradients({ w1: grads[bank.variables.w1.name], w2: ..., w3: ... });
   * ```
   */
  reduceGradients(grads: Readonly<Record<string, Tensor | undefined>>): Record<string, tf.Tensor> {
    this.assertLive('ReplicatedExpertBank', 'reduceGradients');
    const names = Object.keys(this.variables);
    const J = this.slotsPerRank;
    const sizes = names.map((n) => this.variables[n]!.size / J);
    const N = sizes.reduce((x, y) => x + y, 0);
    // [J, N]: each local slot's gradient, all its weights one after the other
    const gJN = new Float32Array(J * N);
    let off = 0;
    names.forEach((name, w) => {
      const g = grads[name];
      const X = sizes[w]!;
      if (g !== undefined) {
        if (g.size !== J * X)
          throw invalidArgument(
            'ReplicatedExpertBank.reduceGradients',
            `grads.${name}`,
            `${J * X} values`,
            g.size,
          );
        const data = g.dataSync() as Float32Array;
        for (let j = 0; j < J; j++) gJN.set(data.subarray(j * X, (j + 1) * X), j * N + off);
      }
      off += X;
    });
    if (this.index.slotsOf.some((s) => s.length > 1)) this.sumOverCopies(gJN, N);
    if (this.replicaComm) this.replicaComm.allReduce(gJN, 'sum', { inPlace: true });
    const out: Record<string, tf.Tensor> = {};
    off = 0;
    names.forEach((name, w) => {
      const X = sizes[w]!;
      const data = new Float32Array(J * X);
      for (let j = 0; j < J; j++) data.set(gJN.subarray(j * N + off, j * N + off + X), j * X);
      out[name] = tf.tensor(data, this.variables[name]!.shape, 'float32');
      off += X;
    });
    return out;
  }

  /**
   * In place: each local slot's row of `gJN` becomes the sum over the group's ranks (in rank order)
   * of the sum of their copies of the slot's expert (in slot order).
   */
  private sumOverCopies(gJN: Float32Array, N: number): void {
    const P = this.comm.worldSize;
    const J = this.slotsPerRank;
    const me = this.comm.rank;
    const first = me * J;
    const { physToLog, ranksOf } = this.index;
    // this rank's partial sum of each expert it holds, in ascending expert order
    const partials = new Map<number, Float32Array>();
    for (let j = 0; j < J; j++) {
      const e = physToLog[first + j]!;
      const row = gJN.subarray(j * N, (j + 1) * N);
      const acc = partials.get(e);
      if (acc === undefined) partials.set(e, Float32Array.from(row));
      else for (let i = 0; i < N; i++) acc[i] = acc[i]! + row[i]!;
    }
    const shared = [...partials.keys()].filter((e) => ranksOf[e]!.length > 1).sort((x, y) => x - y);
    // to rank p: the partials of the experts both ranks hold, ascending
    const common = (p: number) => shared.filter((e) => ranksOf[e]!.includes(p));
    const send = Array.from({ length: P }, (_, p) =>
      p === me ? new Float32Array(0) : packExperts(common(p), N, (e) => partials.get(e)!),
    );
    const recv = this.comm.allToAllV(send);
    const totals = new Map<number, Float32Array>();
    for (const e of shared) totals.set(e, new Float32Array(N));
    for (let p = 0; p < P; p++) {
      // in rank order, this rank's own partial at its place
      const got =
        p === me
          ? partials
          : unpackExperts('ReplicatedExpertBank.reduceGradients', p, recv[p]!, common(p), N);
      for (const e of p === me ? shared : common(p)) {
        const src = got.get(e)!;
        const acc = totals.get(e)!;
        for (let k = 0; k < N; k++) acc[k] = acc[k]! + src[k]!;
      }
    }
    // every local copy gets its expert's total (held here only: the local partial)
    for (let j = 0; j < J; j++) {
      const e = physToLog[first + j]!;
      gJN.set(totals.get(e) ?? partials.get(e)!, j * N);
    }
  }

  /**
   * This rank's share of the squared L2 norm of the experts' gradients: the sum of squares of the
   * slots that hold an expert's first copy, on the ranks whose `replicaComm` rank is 0. Summed over
   * all ranks (after {@link ReplicatedExpertBank.reduceGradients}) it is the squared norm of the E
   * experts' gradients, each counted once.
   *
   * When to use: for gradient clipping by global norm under replicas.
   *
   * @example
   * ```ts
   * const share = bank.squaredNormShare(reduced); // then all-reduce the shares of every bank
   * ```
   */
  squaredNormShare(grads: Readonly<Record<string, Tensor | undefined>>): number {
    if ((this.replicaComm?.rank ?? 0) !== 0) return 0;
    const J = this.slotsPerRank;
    const first = this.comm.rank * J;
    const primary: number[] = [];
    for (let j = 0; j < J; j++) {
      const s = first + j;
      if (this.index.slotsOf[this.index.physToLog[s]!]![0] === s) primary.push(j);
    }
    if (primary.length === 0) return 0;
    let total = 0;
    for (const name of Object.keys(this.variables)) {
      const g = grads[name];
      if (g === undefined) continue;
      const sq = tf.tidy(() => {
        const rows = tf.gather(g, primary);
        return tf.sum(tf.square(rows)).dataSync()[0]!;
      });
      total += sq;
    }
    return total;
  }

  /**
   * Moves this bank to the slot-to-expert map `physToLog` (every rank of the group passes the same):
   * each slot gets the weights of its new expert, copied from a local copy when this rank already
   * holds one, else sent by a rank of the group that does. `followers` (variables shaped like the
   * bank's own, keyed `w1`, `w3`, `w2`: an optimizer's moments of them) move the same way. Every
   * copy of an expert must hold the same values (as {@link ReplicatedExpertBank.reduceGradients}
   * keeps them). Variables keep their identity: only their values change. A collective over the group.
   *
   * When to use: between optimizer steps, after EPLB (`rebalanceExperts`) chose a placement from
   * new loads.
   *
   * @example
   * ```ts
   * const { physToLog } = rebalanceExperts(loadLE, { replicas: bank.numSlots, groups: 1, nodes: 1, gpus: P });
   * bank.migrate(physToLog[l]!, [{ w1: m1, w3: m3, w2: m2 }, { w1: v1, w3: v3, w2: v2 }]);
   * ```
   */
  migrate(
    physToLog: readonly number[] | Int32Array,
    followers: readonly SlotFollowers[] = [],
  ): MigrationStats {
    const fn = 'ReplicatedExpertBank.migrate';
    this.assertLive('ReplicatedExpertBank', 'migrate');
    const P = this.comm.worldSize;
    const J = this.slotsPerRank;
    const next = indexPlacement(fn, 'physToLog', physToLog, this.numExperts, P);
    if (next.physToLog.length !== this.numSlots) {
      throw invalidArgument(
        fn,
        'physToLog',
        `a map of the bank's ${this.numSlots} slots`,
        next.physToLog.length,
      );
    }
    const names = Object.keys(this.variables);
    const fields: tf.Variable[] = [];
    for (const set of [this.variables, ...followers]) {
      for (const name of names) {
        const v = set[name];
        if (!(v instanceof tf.Variable) || v.shape.join() !== this.variables[name]!.shape.join()) {
          throw invalidArgument(
            fn,
            `followers (${name})`,
            `variables shaped like the bank's ${name} [${this.variables[name]!.shape.join(', ')}]`,
            v,
          );
        }
        fields.push(v);
      }
    }
    const sizes = fields.map((v) => v.size / J);
    const N = sizes.reduce((x, y) => x + y, 0);
    const old = this.index;
    const me = this.comm.rank;
    const first = me * J;
    // read from the backend only when this rank sends or changes a slot
    let read: Float32Array[] | undefined;
    const oldData = (): Float32Array[] => {
      read ??= fields.map((v) => v.dataSync() as Float32Array);
      return read;
    };
    // the expert e's values on this rank, from its first local copy
    const localValues = (e: number): Float32Array => {
      const s = old.slotsOf[e]!.find((x) => Math.floor(x / J) === me)!;
      const j = s - first;
      const out = new Float32Array(N);
      let off = 0;
      fields.forEach((_, f) => {
        const X = sizes[f]!;
        out.set(oldData()[f]!.subarray(j * X, (j + 1) * X), off);
        off += X;
      });
      return out;
    };
    // what rank q needs from rank p: the experts of q's new slots q does not hold, sourced from one
    // of their holders chosen by q, in ascending expert order
    const needs = (p: number, q: number): number[] => {
      const out = new Set<number>();
      for (let j = 0; j < J; j++) {
        const e = next.physToLog[q * J + j]!;
        const holders = old.ranksOf[e]!;
        if (holders.includes(q)) continue;
        if (holders[q % holders.length] === p) out.add(e);
      }
      return [...out].sort((x, y) => x - y);
    };
    const send = Array.from({ length: P }, (_, q) =>
      q === me ? new Float32Array(0) : packExperts(needs(me, q), N, localValues),
    );
    const recv = P > 1 ? this.comm.allToAllV(send) : [new Float32Array(0)];
    const arrived = new Map<number, Float32Array>();
    for (let p = 0; p < P; p++) {
      if (p === me) continue;
      for (const [e, values] of unpackExperts(fn, p, recv[p]!, needs(p, me), N)) arrived.set(e, values);
    }
    let slotsChanged = 0;
    for (let j = 0; j < J; j++) if (old.physToLog[first + j] !== next.physToLog[first + j]) slotsChanged += 1;
    const newData = slotsChanged === 0 ? [] : fields.map((_, f) => new Float32Array(J * sizes[f]!));
    for (let j = 0; j < J && slotsChanged > 0; j++) {
      const e = next.physToLog[first + j]!;
      const values = arrived.get(e) ?? localValues(e);
      let off = 0;
      fields.forEach((_, f) => {
        const X = sizes[f]!;
        newData[f]!.set(values.subarray(off, off + X), j * X);
        off += X;
      });
    }
    if (slotsChanged > 0) {
      fields.forEach((v, f) => {
        tf.tidy(() => v.assign(tf.tensor(newData[f]!, v.shape, 'float32')));
      });
    }
    this.index = next;
    return {
      slotsChanged,
      valuesSent: send.reduce((s, b) => s + b.length, 0),
      valuesReceived: recv.reduce((s, b) => s + b.length, 0),
    };
  }
}
