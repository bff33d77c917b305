/**
 * HybridEP: expert parallelism across datacenters where, per iteration and per (datacenter,
 * expert), either the datacenter's tokens travel to the expert (plain EP) or the expert travels to
 * the datacenter (its weights out, its gradients back), chosen by a two-stream cost model.
 *
 * Source: arXiv 2510.19470 ("HybridEP: Scaling Expert Parallelism to Cross-Datacenter Scenario via
 * Hybrid Expert/Data Transmission"). Only its abstract was available when this was written: the
 * ideas (move experts instead of tokens where that is cheaper; a stream-based model that picks the
 * ratio of expert to token transmission; domain-based partitioning onto the topology; parameter-
 * efficient migration) are the paper's, every formula and rule below is this package's own model.
 *
 * Letters: C datacenters (DCs), S DCs per domain, g GPUs per DC, L MoE layers, E experts, K top-k,
 * D hidden size, F expert hidden size, T tokens per DC per iteration, n(d, e) = assignments
 * (token, expert) of DC d to expert e in one layer (T K p_e for a routing distribution p).
 *
 * Domain-based partitioning (GPU < node < DC < domain): the C DCs form C / S domains of S
 * consecutive DCs. A domain holds one copy of every expert (its EP group: tokens and migrations
 * stay inside it; domains are data-parallel replicas of each other, their gradient sync is left
 * out here as it is the same for every strategy). Inside a domain each DC holds u = ceil(E / S)
 * expert slots ("homes"): round-robin for plain EP (a load-blind EPLB), EPLB's global policy on the
 * domain's load for `eplb` and `hybrid`. Inside a DC, {@link hybridEpDatacenterPlacement} places
 * the experts it runs (homes and migrated ones) on its nodes and GPUs with EPLB.
 *
 * Transfers (every link per DC and direction, alpha-beta: alpha + bytes / beta):
 * - a token assignment to an expert the DC does not run crosses the WAN 4 times per iteration:
 *   dispatch and combine forward, their backward (D x activation bytes each; no per-DC
 *   deduplication of a token's experts). Holders of an expert (EPLB may replicate) share its
 *   remote tokens evenly;
 * - migrating expert e to DC d sends its weights before the layer's forward and its gradients
 *   back after the layer's backward, point to point from the expert's holders (each sends 1 / c
 *   of it when e has c holders). Per (d, e) and iteration the two cost the same when
 *   4 n D a = W + G, i.e. n = P / (2 D) at equal byte widths (P = 3 D F parameters per expert).
 * - inside a DC, tokens reach the GPU of their expert over InfiniBand / NVLink (the simulator's
 *   hierarchical all-to-all over the DC's g GPUs); this pipelines with the WAN phase.
 *
 * Stream model: the WAN of each DC is one stream. Token phases sit on the critical path between
 * attention and experts, while migrations are background transfers that overlap compute (they can
 * start at the beginning of the iteration and must only be there before the layer's experts run;
 * gradients go back while the backward pass goes on). All-to-alls are bulk-synchronous, so a layer
 * costs about
 *   4 x (alpha + max over DCs of max(out_d, in_d) / B) + max(max_d compute_d, max_d migration_d)
 * where out_d / in_d are the token bytes DC d sends / receives per phase, compute_d its forward and
 * backward work (backward = 2 x forward: attention for its T tokens, experts for every assignment
 * it serves) and migration_d the time of its weight and gradient phases (as receiver and as holder).
 *
 * Planner (per layer and domain): the (DC, expert) pairs where the DC does not hold the expert, in
 * order of tokens saved (n(d, e), compared in float32 when DCs route differently; ties: the
 * holders' experts in turn, so that migrations relieve every holder alike), and the prefix of that
 * order whose estimate above is lowest, the empty prefix included, so a plan never estimates worse
 * than sending tokens (searched every S pairs, then pair by pair within S of the best). The prefix length is the
 * ratio of expert to token transmission the stream model picks: migrate while the tokens a pair
 * saves are worth more than the link time its transfer adds beyond what compute hides.
 *
 * Simulation (bulk-synchronous): every all-to-all ends when the busiest DC's link does, and every
 * compute phase when the busiest DC's does; the resulting per-layer tasks (attention, dispatch,
 * experts, combine, and their backward; migrations as low-priority background transfers that the
 * experts wait for) run on one compute and one WAN stream (`runStreams`) over the L layers. The
 * step time is the MoE layers' part of an iteration: embedding, head, optimizer and the gradient
 * sync between domains are the same for every strategy and left out.
 *
 * Parameter-efficient migration: weights and gradients in BF16 (2 + 2 bytes per parameter), FP8
 * weights (E4M3 plus one FP32 scale per 128 values: 1.03125 bytes) with BF16 gradients, or a
 * low-rank expert W_i = W_shared + U_i V_i^T per matrix (rank r, a shared basis per group of G
 * experts: SPEC §4's compressed experts): the migration sends U_i, V_i (3 r (D + F) parameters)
 * and, once per (DC, group, layer) with any migrated member, the group's basis (3 D F); gradients
 * back in the same shapes, all BF16. For a whole group that is the SPEC's compression ratio
 * G / (1 + G r (1/D + 1/F)). The low-rank mode moves the exact expert only for a model trained
 * with compressed experts (the expert is its low-rank form).
 */
import { a2aTime, expertA2aVolume } from '../cluster/comm';
import type { HardwarePreset, LinkTier } from '../cluster/hardware';
import type { ModelSpec } from '../cluster/model';
import { layerFlops } from '../cluster/model';
import { runStreams, type StreamTask } from '../cluster/streams';
import { checkInt, invalidArgument } from '../errors';
import { checkLoad, type ExpertPlacement, rebalanceExperts } from './eplb';

const FN = 'planHybridEp';

/** How a migrated expert is encoded on the wire (see the file header). */
export type MigrationEncoding =
  | { readonly kind: 'bf16' }
  | { readonly kind: 'fp8' }
  | { readonly kind: 'low-rank'; readonly rank: number; readonly groupSize: number };

/** Which placement and transfer strategy {@link planHybridEp} plans. */
export type CrossDcStrategy = 'ep' | 'eplb' | 'hybrid';

/** Inputs of {@link planHybridEp} besides the loads. */
export interface HybridEpOptions {
  /** The model: D, F, K, E (must match the loads) and the attention for compute time. */
  readonly model: ModelSpec;
  /** GPU peak FLOP/s and the in-DC links (NVLink, InfiniBand). */
  readonly hardware: HardwarePreset;
  /** C datacenters. */
  readonly datacenters: number;
  /** The WAN link of one DC, per direction: alpha seconds, beta bytes/s (the DC's whole uplink). */
  readonly wan: LinkTier;
  /** T: tokens each DC processes per iteration (all its micro-batches). */
  readonly tokensPerDatacenter: number;
  /** g: GPUs per DC (default the hardware's GPUs per node: one node per DC). */
  readonly gpusPerDatacenter?: number;
  /** S: DCs per domain; divides C (default the largest divisor of C that is <= E). */
  readonly domainSize?: number;
  /** `ep` (round-robin homes, tokens always travel), `eplb` (EPLB homes, tokens travel), `hybrid` (default). */
  readonly strategy?: CrossDcStrategy;
  /** How migrated experts travel (default `{ kind: 'bf16' }`). */
  readonly migration?: MigrationEncoding;
  /** Bytes per activation element of token transfers (default 2, BF16). */
  readonly activationBytes?: number;
  /** Sequence length, for attention FLOPs (default 4096). */
  readonly seqLen?: number;
  /** Achievable fraction of peak FLOP/s (default 0.5). */
  readonly efficiency?: number;
  /**
   * [L][C][E] per-DC loads when DCs route differently (each row normalised to a distribution);
   * default: every DC routes with `load`.
   */
  readonly datacenterLoad?: number[][][];
}

/** Bytes of one expert's migration under an encoding. */
export interface MigrationBytes {
  /** Weights sent to the DC, per expert. */
  readonly weights: number;
  /** Gradients sent back, per expert. */
  readonly gradients: number;
  /** Low-rank only: the group's shared basis, once per (DC, group, layer) each way; 0 otherwise. */
  readonly basis: number;
  /** The same expert's weights in BF16 (3 D F x 2 bytes), for comparison. */
  readonly bf16Weights: number;
}

/**
 * Bytes one migrated expert costs under an encoding (see the file header): BF16 weights and
 * gradients, FP8 weights (1.03125 bytes per parameter with the scales) and BF16 gradients, or a
 * low-rank delta (3 r (D + F) parameters each way, BF16) plus the group's shared basis once.
 *
 * When to use: to size parameter-efficient migration, or to check the break-even tokens per
 * (DC, expert): (weights + gradients) / (4 D activation bytes).
 *
 * @example
 * ```ts
 * migrationBytes(DEEPSEEK_V3, { kind: 'bf16' }).weights; // 3 * 7168 * 2048 * 2 = 88_080_384
 * migrationBytes(DEEPSEEK_V3, { kind: 'low-rank', rank: 16, groupSize: 8 }).weights; // 884_736
 * ```
 */
export function migrationBytes(
  model: Pick<ModelSpec, 'hidden' | 'expertIntermediate'>,
  encoding: MigrationEncoding,
): MigrationBytes {
  const fn = 'migrationBytes';
  const D = checkInt(fn, 'model.hidden', model.hidden, 1);
  const F = checkInt(fn, 'model.expertIntermediate', model.expertIntermediate, 1);
  const params = 3 * D * F;
  const bf16Weights = params * 2;
  if (typeof encoding !== 'object' || encoding === null) {
    throw invalidArgument(fn, 'encoding', "{ kind: 'bf16' | 'fp8' | 'low-rank', ... }", encoding);
  }
  switch (encoding.kind) {
    case 'bf16':
      return { weights: bf16Weights, gradients: bf16Weights, basis: 0, bf16Weights };
    case 'fp8':
      return { weights: params * (1 + 4 / 128), gradients: bf16Weights, basis: 0, bf16Weights };
    case 'low-rank': {
      const r = checkInt(fn, 'encoding.rank', encoding.rank, 1, Math.min(D, F));
      checkInt(fn, 'encoding.groupSize', encoding.groupSize, 1);
      const delta = 3 * r * (D + F) * 2;
      return { weights: delta, gradients: delta, basis: bf16Weights, bf16Weights };
    }
    default:
      throw invalidArgument(
        fn,
        'encoding.kind',
        "'bf16', 'fp8' or 'low-rank'",
        (encoding as { kind: unknown }).kind,
      );
  }
}

/** Per-layer results of a plan (bytes and times of one iteration; times of the busiest DC). */
export interface HybridEpLayer {
  /** (DC, expert) pairs that migrate. */
  readonly migrations: number;
  /** Token bytes all DCs send over the WAN, 4 phases. */
  readonly tokenBytes: number;
  /** Migration bytes all DCs send over the WAN (weights and gradients, bases included). */
  readonly migrationBytes: number;
  /** migrationBytes / (migrationBytes + tokenBytes): the ratio of expert to token transmission (0 if nothing moves). */
  readonly expertShare: number;
  /** One token phase (dispatch; combine and the backward ones cost the same), seconds. */
  readonly tokenPhase: number;
  /** Weight and gradient migration phases, seconds (0 without migrations). */
  readonly weightPhase: number;
  readonly gradientPhase: number;
  /** Attention (and shared experts) forward, and routed experts forward, seconds. */
  readonly attentionForward: number;
  readonly expertsForward: number;
}

/** A cross-datacenter EP plan and its simulated iteration. */
export interface HybridEpPlan {
  readonly strategy: CrossDcStrategy;
  readonly datacenters: number;
  readonly domainSize: number;
  readonly gpusPerDatacenter: number;
  /** Per domain (C / S of them), the experts' homes over its S DCs (a DC is a "GPU" of the placement). */
  readonly homes: readonly ExpertPlacement[];
  /** [L] C x E flags: 1 where DC d runs expert e by migration this iteration (index d * E + e). */
  readonly migrated: readonly Uint8Array[];
  readonly migration: MigrationEncoding;
  readonly migrationBytes: MigrationBytes;
  /** Tokens per (DC, expert) at which migrating breaks even (weights + gradients = 4 token phases). */
  readonly breakEvenTokens: number;
  readonly layers: readonly HybridEpLayer[];
  /** Seconds of the MoE layers' part of one iteration (see the file header). */
  readonly stepTime: number;
  /** Compute on the critical path (sum of compute tasks) and communication the compute waited on. */
  readonly computeTime: number;
  readonly exposedComm: number;
  /** Bytes over the WAN per iteration, all DCs: tokens and migrations. */
  readonly wanBytes: { readonly tokens: number; readonly migration: number };
}

interface Resolved {
  readonly load: number[][];
  readonly E: number;
  readonly L: number;
  readonly C: number;
  readonly S: number;
  readonly g: number;
  readonly T: number;
  readonly K: number;
  readonly strategy: CrossDcStrategy;
  readonly migration: MigrationEncoding;
  readonly bytes: MigrationBytes;
  readonly groupSize: number;
  /** Bytes of one token copy over the WAN. */
  readonly tokenBytes: number;
  readonly wan: LinkTier;
  /** Seconds of attention (+ router, shared experts) forward for the DC's T tokens, per layer. */
  readonly attention: number;
  /** Seconds of one routed-expert assignment, forward, on one DC. */
  readonly perAssignment: number;
  /** One in-DC all-to-all phase, seconds. */
  readonly intra: number;
  readonly datacenterLoad: number[][][] | undefined;
  readonly hardware: HardwarePreset;
  readonly model: ModelSpec;
}

function largestDivisorAtMost(c: number, limit: number): number {
  for (let s = Math.min(c, limit); s > 1; s--) if (c % s === 0) return s;
  return 1;
}

function resolve(load: number[][], o: HybridEpOptions): Resolved {
  const E = checkLoad(FN, load);
  if (typeof o !== 'object' || o === null) {
    throw invalidArgument(
      FN,
      'options',
      'an object { model, hardware, datacenters, wan, tokensPerDatacenter, ... }',
      o,
    );
  }
  const m = o.model;
  if (typeof m !== 'object' || m === null || m.experts !== E) {
    throw invalidArgument(FN, 'options.model.experts', `the experts of load (${E})`, m?.experts);
  }
  const K = checkInt(FN, 'options.model.topK', m.topK, 1, E);
  const C = checkInt(FN, 'options.datacenters', o.datacenters, 1);
  const S = checkInt(FN, 'options.domainSize', o.domainSize ?? largestDivisorAtMost(C, E), 1, C);
  if (C % S !== 0)
    throw invalidArgument(FN, 'options.domainSize', `a divisor of options.datacenters (${C})`, S);
  const hw = o.hardware;
  if (typeof hw !== 'object' || hw === null || !(hw.peakBf16 > 0)) {
    throw invalidArgument(FN, 'options.hardware', 'a HardwarePreset (HARDWARE_PRESETS.h800, ...)', hw);
  }
  const g = checkInt(FN, 'options.gpusPerDatacenter', o.gpusPerDatacenter ?? hw.gpusPerNode, 1);
  const T = o.tokensPerDatacenter;
  if (!(T > 0 && Number.isFinite(T))) {
    throw invalidArgument(FN, 'options.tokensPerDatacenter', 'a finite number > 0', T);
  }
  const wan = o.wan;
  if (typeof wan !== 'object' || wan === null || !(wan.beta > 0) || !(wan.alpha >= 0)) {
    throw invalidArgument(FN, 'options.wan', '{ alpha: seconds >= 0, beta: bytes/s > 0 }', wan);
  }
  const strategy = o.strategy ?? 'hybrid';
  if (strategy !== 'ep' && strategy !== 'eplb' && strategy !== 'hybrid') {
    throw invalidArgument(FN, 'options.strategy', "'ep', 'eplb' or 'hybrid'", strategy);
  }
  const migration = o.migration ?? { kind: 'bf16' };
  const bytes = migrationBytes(m, migration);
  const groupSize = migration.kind === 'low-rank' ? migration.groupSize : 1;
  if (E % groupSize !== 0) {
    throw invalidArgument(FN, 'options.migration.groupSize', `a divisor of the experts (${E})`, groupSize);
  }
  const a = o.activationBytes ?? 2;
  if (!(a > 0)) throw invalidArgument(FN, 'options.activationBytes', 'a number > 0', a);
  const seq = checkInt(FN, 'options.seqLen', o.seqLen ?? 4096, 1);
  const eff = o.efficiency ?? 0.5;
  if (!(eff > 0 && eff <= 1)) throw invalidArgument(FN, 'options.efficiency', 'a number in (0, 1]', eff);
  const dl = o.datacenterLoad;
  if (dl !== undefined) {
    if (!Array.isArray(dl) || dl.length !== load.length) {
      throw invalidArgument(FN, 'options.datacenterLoad', `[L][C][E] with L = ${load.length}`, dl?.length);
    }
    dl.forEach((rows, l) => {
      if (!Array.isArray(rows) || rows.length !== C) {
        throw invalidArgument(
          FN,
          `options.datacenterLoad[${l}].length`,
          `${C} (the datacenters)`,
          rows?.length,
        );
      }
      checkLoad(FN, rows);
      if (rows[0]!.length !== E) {
        throw invalidArgument(
          FN,
          `options.datacenterLoad[${l}][0].length`,
          `${E} (the experts of load)`,
          rows[0]!.length,
        );
      }
    });
  }
  const flops = layerFlops(m, true, seq);
  const rate = g * hw.peakBf16 * eff;
  const intraVolume = expertA2aVolume({
    tokens: T / g,
    hidden: m.hidden,
    bytesPerElement: a,
    ep: g,
    gpusPerNode: Math.min(g, hw.gpusPerNode),
    topK: K,
    maxNodesPerToken: 0,
  });
  return {
    load,
    E,
    L: load.length,
    C,
    S,
    g,
    T,
    K,
    strategy,
    migration,
    bytes,
    groupSize,
    tokenBytes: m.hidden * a,
    wan,
    attention: (T * (flops.attnLinear + flops.core + flops.router + flops.mlp)) / rate,
    perAssignment: flops.experts / K / rate,
    intra: a2aTime(intraVolume, hw),
    datacenterLoad: dl,
    hardware: hw,
    model: m,
  };
}

/** [S][E] assignments of each DC of a domain to each expert in layer l. */
function domainAssignments(r: Resolved, l: number, domain: number): Float64Array[] {
  const toCounts = (row: readonly number[]) => {
    const total = row.reduce((x, y) => x + y, 0);
    const out = new Float64Array(r.E);
    for (let e = 0; e < r.E; e++) out[e] = total > 0 ? (r.T * r.K * row[e]!) / total : (r.T * r.K) / r.E;
    return out;
  };
  if (r.datacenterLoad === undefined) {
    const shared = toCounts(r.load[l]!);
    return Array.from({ length: r.S }, () => shared);
  }
  return Array.from({ length: r.S }, (_, j) => toCounts(r.datacenterLoad![l]![domain * r.S + j]!));
}

/** Homes of every domain: EPLB over the domain's DCs (load-blind for plain EP). */
function domainHomes(r: Resolved): ExpertPlacement[] {
  const slots = Math.ceil(r.E / r.S);
  const o = { replicas: slots * r.S, groups: 1, nodes: 1, gpus: r.S };
  if (r.strategy === 'ep') {
    const home = rebalanceExperts(
      r.load.map((row) => row.map(() => 1)),
      o,
    );
    return Array.from({ length: r.C / r.S }, () => home);
  }
  return Array.from({ length: r.C / r.S }, (_, k) => {
    if (r.datacenterLoad === undefined) return k === 0 ? rebalanceExperts(r.load, o) : undefined;
    const summed = r.load.map((_, l) => {
      const rows = domainAssignments(r, l, k);
      return Array.from({ length: r.E }, (_, e) => rows.reduce((s, row) => s + row[e]!, 0));
    });
    return rebalanceExperts(summed, o);
  }).map((p, _, all) => p ?? all[0]!);
}

/** One layer of one domain under planning: holders, assignments, per-DC figures and migrations. */
class DomainLayer {
  readonly S: number;
  readonly E: number;
  /** [S * E] 1 where DC j holds expert e. */
  readonly holds: Uint8Array;
  /** [E] the DCs that hold each expert. */
  readonly holdersOf: number[][];
  /** [S * E] 1 where DC j runs e by migration. */
  readonly migrated: Uint8Array;
  /** Per DC figures (see {@link DcFigures}), kept up to date as pairs migrate. */
  private readonly figs: DcFigures[];
  /** [S * groups] migrated members of each group at each DC (the basis travels while > 0). */
  private readonly basisCount: Int32Array;
  /** [groups] the DCs holding a member of each group: they share sending its basis. */
  private readonly groupHolders: number[][];
  /** [S * groups] bases of each group DC h sends (recount's figure). */
  private readonly basisShare: Float64Array;
  private readonly groups: number;

  constructor(
    readonly r: Resolved,
    readonly nSE: readonly Float64Array[],
    home: readonly number[],
  ) {
    const S = r.S;
    const E = r.E;
    this.S = S;
    this.E = E;
    this.holds = new Uint8Array(S * E);
    this.holdersOf = Array.from({ length: E }, () => []);
    const u = home.length / S;
    home.forEach((e, slot) => {
      const j = Math.floor(slot / u);
      if (this.holds[j * E + e] === 0) {
        this.holds[j * E + e] = 1;
        this.holdersOf[e]!.push(j);
      }
    });
    this.migrated = new Uint8Array(S * E);
    this.groups = Math.ceil(E / r.groupSize);
    this.basisCount = new Int32Array(S * this.groups);
    this.basisShare = new Float64Array(S * this.groups);
    this.groupHolders = Array.from({ length: this.groups }, (_, g) => {
      const set = new Set<number>();
      for (let e = g * r.groupSize; e < Math.min(E, (g + 1) * r.groupSize); e++) {
        for (const h of this.holdersOf[e]!) set.add(h);
      }
      return [...set].sort((x, y) => x - y);
    });
    this.figs = Array.from({ length: S }, () => ({
      tokOut: 0,
      tokIn: 0,
      served: 0,
      wIn: 0,
      wOut: 0,
      gIn: 0,
      gOut: 0,
    }));
    this.recount();
  }

  /**
   * Recomputes every DC's figures from the migration flags (exact, free of the rounding that
   * incremental updates accumulate). A group's basis is sent by the holders of its first expert.
   */
  recount(): void {
    const { S, E, r } = this;
    const b = r.bytes;
    this.basisCount.fill(0);
    const remoteE = new Float64Array(E);
    const receiversE = new Float64Array(E);
    for (let j = 0; j < S; j++) {
      for (let e = 0; e < E; e++) {
        if (this.holds[j * E + e]) continue;
        if (this.migrated[j * E + e]) {
          receiversE[e]! += 1;
          this.basisCount[j * this.groups + Math.floor(e / r.groupSize)]! += 1;
        } else remoteE[e]! += this.nSE[j]![e]!;
      }
    }
    // Bases sent per group (one per receiving DC), shared by the DCs that hold a member of the group.
    const basesG = new Float64Array(this.groups);
    for (let i = 0; i < S * this.groups; i++) if (this.basisCount[i]! > 0) basesG[i % this.groups]! += 1;
    for (let g = 0; g < this.groups; g++) {
      const senders = this.groupHolders[g]!;
      for (const h of senders) {
        this.basisShare[h * this.groups + g] = basesG[g]! / senders.length;
      }
    }
    for (let j = 0; j < S; j++) {
      const f: DcFigures = { tokOut: 0, tokIn: 0, served: 0, wIn: 0, wOut: 0, gIn: 0, gOut: 0 };
      const n = this.nSE[j]!;
      for (let e = 0; e < E; e++) {
        if (this.holds[j * E + e]) {
          const c = this.holdersOf[e]!.length;
          f.tokIn += remoteE[e]! / c;
          f.served += n[e]! + remoteE[e]! / c;
          f.wOut += (receiversE[e]! * b.weights) / c;
          f.gIn += (receiversE[e]! * b.gradients) / c;
        } else if (this.migrated[j * E + e]) {
          f.served += n[e]!;
          f.wIn += b.weights;
          f.gOut += b.gradients;
        } else f.tokOut += n[e]!;
      }
      for (let g = 0; g < this.groups; g++) {
        if (this.basisCount[j * this.groups + g]! > 0) {
          f.wIn += b.basis;
          f.gOut += b.basis;
        }
        const sent = this.basisShare[j * this.groups + g]! * b.basis;
        f.wOut += sent;
        f.gIn += sent;
      }
      this.figs[j] = f;
    }
  }

  /** DC j's figures. */
  figure(j: number): DcFigures {
    return this.figs[j]!;
  }

  /**
   * The bulk-synchronous layer time the planner minimises: 4 token phases of the busiest link,
   * then the slowest DC's compute or its migrations (which overlap compute), whichever is longer.
   */
  estimate(): number {
    const { r } = this;
    let assignments = 0;
    let served = 0;
    let migration = 0;
    for (const f of this.figs) {
      assignments = Math.max(assignments, f.tokOut, f.tokIn);
      served = Math.max(served, f.served);
      migration = Math.max(migration, migrationTime(r, f));
    }
    const bytes = assignments * r.tokenBytes;
    const phase = Math.max(bytes > 0 ? r.wan.alpha + bytes / r.wan.beta : 0, r.intra);
    const compute = 3 * (r.attention + served * r.perAssignment);
    return 4 * phase + Math.max(compute, migration);
  }

  /** DC j runs expert e by migration from now on (it must not hold it); figures updated incrementally. */
  migrate(j: number, e: number): void {
    const { r, E } = this;
    const b = r.bytes;
    const n = this.nSE[j]![e]!;
    this.migrated[j * E + e] = 1;
    const f = this.figs[j]!;
    f.tokOut -= n;
    f.served += n;
    f.wIn += b.weights;
    f.gOut += b.gradients;
    const holders = this.holdersOf[e]!;
    const c = holders.length;
    for (const h of holders) {
      const fh = this.figs[h]!;
      fh.tokIn -= n / c;
      fh.served -= n / c;
      fh.wOut += b.weights / c;
      fh.gIn += b.gradients / c;
    }
    if (b.basis > 0) {
      // The group's basis travels with its first migrated member, from the group's holders.
      const group = Math.floor(e / r.groupSize);
      const k = j * this.groups + group;
      if (this.basisCount[k] === 0) {
        f.wIn += b.basis;
        f.gOut += b.basis;
        const senders = this.groupHolders[group]!;
        for (const h of senders) {
          this.figs[h]!.wOut += b.basis / senders.length;
          this.figs[h]!.gIn += b.basis / senders.length;
        }
      }
      this.basisCount[k]! += 1;
    }
  }

  /**
   * The planner (see the file header): (DC, expert) pairs in order of tokens saved (ties: an
   * expert's holders in turn, so that migrations relieve every holder alike), and the prefix of
   * that order whose estimate is lowest, none included.
   */
  plan(): void {
    const { S, E } = this;
    // Rank of each expert on its first holder: experts that are the k-th of their DC go in turn.
    const rankE = new Int32Array(E);
    const seen = new Int32Array(S);
    for (let e = 0; e < E; e++) {
      const h = this.holdersOf[e]![0]!;
      rankE[e] = seen[h]!;
      seen[h]! += 1;
    }
    // Experts in tie order (rank on their first holder, that holder, index); then the pairs, expert
    // by expert, DC by DC; then a stable sort by tokens saved (needless when every DC routes alike:
    // sorting the experts is enough).
    const shared = this.nSE.every((row) => row === this.nSE[0]);
    const first = this.nSE[0]!;
    const experts = Array.from({ length: E }, (_, e) => e).sort(
      (e, f) =>
        (shared ? first[f]! - first[e]! : 0) ||
        rankE[e]! - rankE[f]! ||
        this.holdersOf[e]![0]! - this.holdersOf[f]![0]! ||
        e - f,
    );
    let pairs: number[] = [];
    for (const e of experts) {
      for (let j = 0; j < S; j++) if (!this.holds[j * E + e] && this.nSE[j]![e]! > 0) pairs.push(j * E + e);
    }
    if (!shared) {
      const nSE = this.nSE;
      pairs = sortByTokens(pairs, (p) => nSE[(p / E) | 0]![p % E]!);
    }
    // Coarse pass: the estimate every S pairs (a full scan of the DCs); then pair by pair within
    // S pairs of the best coarse prefix.
    const stride = Math.max(1, S);
    let best = 0;
    let bestTime = this.estimate();
    pairs.forEach((p, k) => {
      this.migrate(Math.floor(p / E), p % E);
      if ((k + 1) % stride !== 0 && k + 1 !== pairs.length) return;
      const t = this.estimate();
      if (t < bestTime) {
        bestTime = t;
        best = k + 1;
      }
    });
    const lo = Math.max(0, best - stride);
    const hi = Math.min(pairs.length, best + stride);
    this.migrated.fill(0);
    for (let k = 0; k < lo; k++) this.migrated[pairs[k]!] = 1;
    this.recount();
    for (let k = lo; k < hi; k++) {
      this.migrate(Math.floor(pairs[k]! / E), pairs[k]! % E);
      const t = this.estimate();
      if (t < bestTime) {
        bestTime = t;
        best = k + 1;
      }
    }
    // Keep the best prefix, and count its figures afresh.
    this.migrated.fill(0);
    for (let k = 0; k < best; k++) this.migrated[pairs[k]!] = 1;
    this.recount();
  }
}

/**
 * `items` in descending order of `key` (>= 0) compared in float32, ties in their given order: a
 * stable LSD radix sort on the float32 bits (which order like the numbers for non-negative
 * floats), O(n) where a comparison sort of the (DC, expert) pairs was the planner's main cost.
 */
function sortByTokens(items: readonly number[], key: (item: number) => number): number[] {
  const n = items.length;
  const bits = new Uint32Array(n);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let i = 0; i < n; i++) {
    f32[0] = key(items[i]!);
    bits[i] = 0xffffffff - u32[0]!; // descending
  }
  let order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  let next = new Uint32Array(n);
  const count = new Uint32Array(257);
  for (let shift = 0; shift < 32; shift += 8) {
    count.fill(0);
    for (let i = 0; i < n; i++) count[((bits[order[i]!]! >>> shift) & 0xff) + 1]! += 1;
    for (let b = 0; b < 256; b++) count[b + 1]! += count[b]!;
    for (let i = 0; i < n; i++) {
      const o = order[i]!;
      next[count[(bits[o]! >>> shift) & 0xff]!++] = o;
    }
    [order, next] = [next, order];
  }
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[i] = items[order[i]!]!;
  return out;
}

/** Per-DC figures of one layer: token assignments per phase, assignments served, migration bytes. */
interface DcFigures {
  /** Assignments the DC sends to experts elsewhere (per token phase). */
  tokOut: number;
  /** Assignments it receives for the experts it holds. */
  tokIn: number;
  /** Assignments its experts process (its own and others'). */
  served: number;
  /** Migration bytes: weights in / out, gradients in / out. */
  wIn: number;
  wOut: number;
  gIn: number;
  gOut: number;
}

function tokenPhase(r: Resolved, out: number, into: number): number {
  const bytes = Math.max(out, into) * r.tokenBytes;
  const wan = bytes > 0 ? r.wan.alpha + bytes / r.wan.beta : 0;
  return Math.max(wan, r.intra);
}

function migrationTime(r: Resolved, f: DcFigures): number {
  const w = Math.max(f.wIn, f.wOut);
  const g = Math.max(f.gIn, f.gOut);
  return (w > 0 ? r.wan.alpha + w / r.wan.beta : 0) + (g > 0 ? r.wan.alpha + g / r.wan.beta : 0);
}

/**
 * Plans expert parallelism across datacenters: the experts' homes per domain and, with the
 * `hybrid` strategy, which (DC, expert) pairs migrate the expert instead of sending tokens, layer
 * by layer; then simulates one iteration's MoE layers (see the file header for the model, its
 * planner and its assumptions). `ep` and `eplb` plan the same cluster with tokens only, for
 * comparison.
 *
 * When to use: to estimate what cross-datacenter MoE training costs at a given WAN bandwidth and
 * how much moving experts instead of tokens saves, from a model shape and per-layer expert loads
 * (a training run's counts or a synthetic distribution).
 *
 * @example
 * ```ts
 * const load = Array.from({ length: 4 }, () => Array.from({ length: 256 }, (_, e) => 1 / (e + 1)));
 * const options = {
 *   model: DEEPSEEK_V3, hardware: HARDWARE_PRESETS.h800, datacenters: 16,
 *   wan: { alpha: 5e-3, beta: 1.25e9 }, tokensPerDatacenter: 65536,
 * };
 * const ep = planHybridEp(load, { ...options, strategy: 'ep' });
 * const hybrid = planHybridEp(load, options);
 * ep.stepTime / hybrid.stepTime; // > 1: the hottest experts travel instead of their tokens
 * ```
 */
export function planHybridEp(load: number[][], options: HybridEpOptions): HybridEpPlan {
  const r = resolve(load, options);
  const homes = domainHomes(r);
  const domains = r.C / r.S;
  const migrated = Array.from({ length: r.L }, () => new Uint8Array(r.C * r.E));
  /** [L] per domain, per DC figures after planning. */
  const figuresL: DcFigures[][] = [];
  const tokensOnly: DcFigures[][] = [];
  for (let l = 0; l < r.L; l++) {
    const all: DcFigures[] = [];
    const none: DcFigures[] = [];
    let previous: DomainLayer | undefined;
    for (let k = 0; k < domains; k++) {
      // Domains with the same homes and loads plan alike: plan the first, copy it to the others.
      const layer =
        previous !== undefined && r.datacenterLoad === undefined && homes[k] === homes[k - 1]
          ? previous
          : new DomainLayer(r, domainAssignments(r, l, k), homes[k]!.physToLog[l]!);
      if (layer !== previous && r.strategy === 'hybrid') {
        for (let j = 0; j < r.S; j++) none.push({ ...layer.figure(j) });
        layer.plan();
      } else if (r.strategy === 'hybrid') {
        none.push(...none.slice(0, r.S));
      }
      previous = layer;
      migrated[l]!.set(layer.migrated, k * r.S * r.E);
      for (let j = 0; j < r.S; j++) all.push(layer.figure(j));
    }
    figuresL.push(all);
    tokensOnly.push(none);
  }
  const planned = simulate(r, homes, migrated, figuresL);
  if (r.strategy !== 'hybrid') return planned;
  // The planner's estimate is per layer; the simulation also sees migrations and token phases
  // contend for the link across layers. Keep sending tokens where that simulates faster.
  const fallback = simulate(
    r,
    homes,
    migrated.map((m) => new Uint8Array(m.length)),
    tokensOnly,
  );
  return planned.stepTime <= fallback.stepTime ? planned : fallback;
}

/** The bulk-synchronous two-stream simulation of one iteration (see the file header). */
function simulate(
  r: Resolved,
  homes: ExpertPlacement[],
  migrated: Uint8Array[],
  figuresL: DcFigures[][],
): HybridEpPlan {
  const tasks: StreamTask[] = [];
  const push = (
    stream: StreamTask['stream'],
    duration: number,
    deps: number[],
    label: string,
    priority = 0,
  ) => {
    tasks.push({ stream, duration, deps, label, priority });
    return tasks.length - 1;
  };
  let tokenBytesAll = 0;
  let migrationBytesAll = 0;
  const layers: HybridEpLayer[] = figuresL.map((figs, l) => {
    let phase = 0;
    let served = 0;
    let weights = 0;
    let grads = 0;
    let tokens = 0;
    let moved = 0;
    for (const f of figs) {
      phase = Math.max(phase, tokenPhase(r, f.tokOut, f.tokIn));
      served = Math.max(served, f.served);
      const w = Math.max(f.wIn, f.wOut);
      const g = Math.max(f.gIn, f.gOut);
      weights = Math.max(weights, w > 0 ? r.wan.alpha + w / r.wan.beta : 0);
      grads = Math.max(grads, g > 0 ? r.wan.alpha + g / r.wan.beta : 0);
      tokens += 4 * f.tokOut * r.tokenBytes;
      moved += f.wIn + f.gOut;
    }
    let migrations = 0;
    for (const x of migrated[l]!) migrations += x;
    tokenBytesAll += tokens;
    migrationBytesAll += moved;
    return {
      migrations,
      tokenBytes: tokens,
      migrationBytes: moved,
      expertShare: moved + tokens > 0 ? moved / (moved + tokens) : 0,
      tokenPhase: phase,
      weightPhase: weights,
      gradientPhase: grads,
      attentionForward: r.attention,
      expertsForward: served * r.perAssignment,
    };
  });
  // Forward through the layers, then backward in reverse. Migrations are background transfers cut
  // in chunks of at most a quarter of a layer's attention, so that a chunk started in a gap delays
  // a token phase by at most that (the stream does not preempt).
  const chunked = (time: number) =>
    Math.min(1024, Math.max(1, Math.ceil(time / Math.max(r.attention / 4, 1e-9))));
  const weightTasks = layers.map((x, l) => {
    const k = x.weightPhase > 0 ? chunked(x.weightPhase) : 0;
    return Array.from({ length: k }, (_, i) => push('comm', x.weightPhase / k, [], `weights[${l}].${i}`, 1));
  });
  let join: number[] = [];
  const expertsBackward: number[] = [];
  layers.forEach((x, l) => {
    const a = push('compute', x.attentionForward, join, `F.attn[${l}]`);
    const d = push('comm', x.tokenPhase, [a], `F.dispatch[${l}]`);
    const e = push('compute', x.expertsForward, [d, ...weightTasks[l]!], `F.experts[${l}]`);
    join = [push('comm', x.tokenPhase, [e], `F.combine[${l}]`)];
  });
  for (let l = layers.length - 1; l >= 0; l--) {
    const x = layers[l]!;
    const c = push('comm', x.tokenPhase, join, `B.combine[${l}]`);
    const e = push('compute', 2 * x.expertsForward, [c], `B.experts[${l}]`);
    expertsBackward[l] = e;
    const d = push('comm', x.tokenPhase, [e], `B.dispatch[${l}]`);
    join = [push('compute', 2 * x.attentionForward, [d], `B.attn[${l}]`)];
  }
  layers.forEach((x, l) => {
    const k = x.gradientPhase > 0 ? chunked(x.gradientPhase) : 0;
    for (let i = 0; i < k; i++) {
      push('comm', x.gradientPhase / k, [expertsBackward[l]!], `gradients[${l}].${i}`, 1);
    }
  });
  const run = runStreams(tasks);
  return {
    strategy: r.strategy,
    datacenters: r.C,
    domainSize: r.S,
    gpusPerDatacenter: r.g,
    homes,
    migrated,
    migration: r.migration,
    migrationBytes: r.bytes,
    breakEvenTokens: (r.bytes.weights + r.bytes.gradients) / (4 * r.tokenBytes),
    layers,
    stepTime: run.makespan,
    computeTime: run.compute,
    exposedComm: run.exposedComm,
    wanBytes: { tokens: tokenBytesAll, migration: migrationBytesAll },
  };
}

/** The experts one DC runs in each layer of a plan, and their placement on its GPUs. */
export interface DatacenterPlacement {
  /** [L] the experts the DC runs: its homes, then the experts migrated to it (ascending). */
  readonly experts: number[][];
  /** [L] their assignments this iteration (its own tokens, and the others' for its homes). */
  readonly load: number[][];
  /**
   * Per layer, EPLB's placement of those experts on the DC's GPUs: a one-layer placement whose
   * expert i is `experts[l][i]` (global policy; spare slots replicate the busiest).
   */
  readonly placements: ExpertPlacement[];
}

/**
 * The GPU level of a plan's domain-based partitioning: which experts datacenter `dc` runs in each
 * layer (the experts it holds, and those migrated to it) and where they go on its GPUs, by
 * deepseek-ai/EPLB (global policy) with the assignments each expert serves there as load, as many
 * slots as experts rounded up to a multiple of the GPUs.
 *
 * When to use: after {@link planHybridEp}, to load a DC's experts for the planned iteration; the
 * same `load` and `options` as the plan.
 *
 * @example
 * ```ts
 * const plan = planHybridEp(load, options);
 * const dc0 = hybridEpDatacenterPlacement(plan, load, options, 0);
 * dc0.experts[0]; // the experts DC 0 runs in layer 0
 * dc0.placements[0].physToLog[0]; // their slots on its GPUs (indices into dc0.experts[0])
 * ```
 */
export function hybridEpDatacenterPlacement(
  plan: HybridEpPlan,
  load: number[][],
  options: HybridEpOptions,
  dc: number,
): DatacenterPlacement {
  const fn = 'hybridEpDatacenterPlacement';
  const r = resolve(load, { ...options, strategy: plan.strategy, domainSize: plan.domainSize });
  checkInt(fn, 'dc', dc, 0, r.C - 1);
  const domain = Math.floor(dc / r.S);
  const j = dc % r.S;
  const home = plan.homes[domain]!;
  const g = r.g;
  const experts: number[][] = [];
  const loads: number[][] = [];
  const placements = load.map((_, l) => {
    const layer = new DomainLayer(r, domainAssignments(r, l, domain), home.physToLog[l]!);
    const flags = plan.migrated[l]!.subarray(domain * r.S * r.E, (domain + 1) * r.S * r.E);
    layer.migrated.set(flags);
    layer.recount();
    const n = layer.nSE[j]!;
    const homesE = layer.holdersOf.flatMap((holders, e) => (holders.includes(j) ? [e] : []));
    const migratedE = Array.from({ length: r.E }, (_, e) => e).filter((e) => flags[j * r.E + e] === 1);
    const resident = [...homesE, ...migratedE];
    // Assignments served: own tokens, plus the others' unmigrated ones shared by the holders.
    const remote = new Float64Array(r.E);
    for (let d = 0; d < r.S; d++) {
      for (let e = 0; e < r.E; e++) {
        if (!layer.holds[d * r.E + e] && !flags[d * r.E + e]) remote[e]! += layer.nSE[d]![e]!;
      }
    }
    const served = resident.map((e, i) =>
      i < homesE.length ? n[e]! + remote[e]! / layer.holdersOf[e]!.length : n[e]!,
    );
    experts.push(resident);
    loads.push(served);
    const replicas = g * Math.ceil(resident.length / g);
    return rebalanceExperts([served], { replicas, groups: 1, nodes: 1, gpus: g });
  });
  return { experts, load: loads, placements };
}
