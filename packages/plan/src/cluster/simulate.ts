/**
 * The cluster simulator: one training step of an MoE model on PP x EP x DP GPUs, from a model
 * shape, a hardware preset and a pipeline schedule.
 *
 * Letters: P pipeline ranks (pp), G EP group (ep), R data-parallel replicas of the experts (dp),
 * N micro-batches, T tokens per GPU per micro-batch, S stages, D model width.
 *
 * Layout: GPUs = pp·ep·dp. A pipeline rank is a group of ep·dp GPUs that holds the same stages;
 * attention, dense layers and shared experts are data-parallel over all ep·dp of them, routed
 * experts are split over ep GPUs and replicated dp times. Each GPU runs its own micro-batches of
 * T = (globalBatch / (N·ep·dp))·seq tokens.
 *
 * Symmetry (exact under uniform routing): every GPU of a pipeline rank does the same work and
 * sends the same bytes, and every DP replica runs the same pipeline; so the simulator replays one
 * GPU per pipeline rank (P ranks, whatever the GPU count) and scales bytes and FLOPs.
 *
 * Two levels of discrete events:
 * 1. per op (F, B, Bi, W, F&B) of a stage, the layers' tasks on one GPU's compute and
 *    communication streams (`runStreams`): attention -> dispatch -> experts -> combine per MoE
 *    layer, shared experts beside the dispatch; in an F&B pair the two micro-batches' chains
 *    interleave, so a layer costs ~max(compute, comm);
 * 2. the pipeline: the schedule replayed with those op durations per stage (`replayPipeline`, the
 *    rules of `validateSchedule`), stage-to-stage sends costed on their link.
 * Then ZeRO-1 gradient sync (exposed after the pipeline by default), memory and MFU.
 *
 * With pp = 1 (pure data parallelism) the pipeline is one stage: each micro-batch's F then B, in
 * turn, whatever the schedule. A preset with `host` costs (a CPU backend, see `machinePreset`) adds
 * per-kernel dispatch and memory-bound kernel time to every layer's compute, scales compute by the
 * shared-host slowdown when more than one rank runs, and adds the optimizer update to the step.
 */
import { checkInt, invalidArgument } from '../errors';
import { generateSchedule } from '../schedule/generate';
import { onePhaseSchedule } from '../schedule/onef1b';
import type { Schedule, ScheduleKind, ScheduleOp, StageWork } from '../schedule/types';
import { SCHEDULE_KINDS } from '../schedule/types';
import { validateSchedule } from '../schedule/validate';
import { a2aTime, expertA2aVolume, ringBytes } from './comm';
import type { ClusterSpec, LinkTier } from './hardware';
import { linkTime } from './hardware';
import type { ModelSpec } from './model';
import { headFlops, layerFlops, layerParams, paramCounts, trainingFlopsPerToken } from './model';
import { replayPipeline } from './pipeline';
import { runStreams, type StreamTask } from './streams';

/** Where GEMMs run: `fp8` puts `fp8Share` of the GEMM FLOPs (projections, FFNs, experts) on the FP8 peak. */
export type Precision = 'bf16' | 'fp8';

/** Inputs of {@link simulateCluster}. */
export interface SimulateOptions {
  /** The model shape. */
  readonly model: ModelSpec;
  /** Hardware and GPU count. */
  readonly cluster: ClusterSpec;
  /** Pipeline ranks P (>= 1; 1 is pure data parallelism: one stage, each micro-batch's F then B). */
  readonly pp: number;
  /** Expert-parallel group size G; divides the routed experts. */
  readonly ep: number;
  /** Data-parallel replicas R of the experts (attention is data-parallel over ep·dp); pp·ep·dp = GPUs. */
  readonly dp: number;
  /** N micro-batches per step. */
  readonly microBatches: number;
  /** The pipeline schedule. */
  readonly schedule: ScheduleKind;
  /** Chunks per rank for `interleaved` (default 2). */
  readonly chunks?: number;
  /** Sequence length (default 4096). */
  readonly seqLen?: number;
  /** Sequences per optimizer step over the whole cluster; a multiple of N·ep·dp. */
  readonly globalBatch: number;
  /** GEMM precision (default `bf16`). */
  readonly precision?: Precision;
  /** With `fp8`, the share of GEMM FLOPs in FP8 (default 1); attention's core, router and head stay BF16. */
  readonly fp8Share?: number;
  /** Achievable fraction of peak FLOP/s for every compute task (default 0.5). */
  readonly efficiency?: number;
  /** Overlap the two halves of an F&B op (default true; false runs them one after the other). */
  readonly overlap?: boolean;
  /** ZeRO-1 gradient reduce-scatter + parameter all-gather: `exposed` after the pipeline (default) or `hidden` behind it. */
  readonly dpSync?: 'exposed' | 'hidden';
  /** Datacenters the DP replicas are spread over (default 1); the gradient sync between them crosses the WAN. */
  readonly datacenters?: number;
  /** Optimizer-state bytes per parameter, sharded over its DP group (default 12: FP32 master, Adam m and v). */
  readonly optimizerBytesPerParam?: number;
  /**
   * Gradient sync over DP: `zero1` (default) reduce-scatters FP32 gradients and all-gathers BF16
   * parameters, each rank updating its shard; `all-reduce` all-reduces FP32 gradients and every rank
   * updates all its parameters (what switchyard-train does with the optimizer on the backend).
   */
  readonly dpCollective?: 'zero1' | 'all-reduce';
}

/** Per-micro-batch costs of one layer on one GPU, seconds. */
export interface LayerCost {
  readonly kind: 'dense' | 'moe';
  readonly forwardCompute: number;
  /** Dispatch + combine, forward. */
  readonly forwardComm: number;
  readonly backwardCompute: number;
  /** Dispatch + combine, backward. */
  readonly backwardComm: number;
  /** One layer of an F&B pair (forward of one micro-batch, backward of another), overlapped. */
  readonly overlappedPair: number;
  /** The same pair run one after the other. */
  readonly serialPair: number;
}

/** One stage's layers and op durations (seconds). */
export interface StageCost {
  readonly stage: number;
  readonly firstLayer: number;
  readonly layers: number;
  /** Holds the embedding (stage 0) or the head and MTP modules (last stage). */
  readonly extras: readonly string[];
  readonly F: number;
  readonly B: number;
  readonly W: number;
}

/** Memory of one GPU of a pipeline rank, bytes. */
export interface RankMemory {
  readonly rank: number;
  readonly weights: number;
  readonly gradients: number;
  readonly optimizer: number;
  readonly activations: number;
  readonly total: number;
  /** Peak micro-batch-stages held (validateSchedule's count). */
  readonly peakActivations: number;
}

/** The result of {@link simulateCluster}. */
export interface SimulationReport {
  readonly model: string;
  readonly hardware: string;
  readonly gpus: number;
  readonly pp: number;
  readonly ep: number;
  readonly dp: number;
  readonly schedule: ScheduleKind;
  readonly microBatches: number;
  /** Sequences per micro-batch per GPU. */
  readonly microBatchSequences: number;
  readonly seqLen: number;
  readonly globalBatch: number;
  readonly precision: Precision;
  readonly fp8Share: number;
  readonly efficiency: number;
  readonly overlap: boolean;
  /** Seconds per optimizer step: pipeline + exposed DP sync + optimizer update (host presets only). */
  readonly stepTime: number;
  /** The optimizer update per step on one rank, seconds (0 unless the preset has `host` costs). */
  readonly optimizerTime: number;
  /**
   * Compute terms of one step on one GPU (summed over its micro-batches; with pp > 1 the model's
   * total divided by pp), seconds: model FLOPs at the BF16 peak x efficiency, kernel dispatch and memory-bound
   * kernels (the last two 0 without `host` costs); all after the shared-host slowdown.
   */
  readonly computeTerms: { readonly gemm: number; readonly kernels: number; readonly elementwise: number };
  /** The pipeline replay's makespan. */
  readonly pipelineTime: number;
  /** Gradient sync time and the part of it left exposed. */
  readonly dpSync: { readonly time: number; readonly exposed: number };
  /** Per-rank idle time in the pipeline (makespan - busy), seconds: max and mean; fraction = mean / stepTime. */
  readonly bubble: { readonly max: number; readonly mean: number; readonly fraction: number };
  /**
   * Communication the compute stream waited for, seconds per step: EP all-to-all inside ops on the
   * rank where it is largest, DP sync; `epA2aTotal` is all EP all-to-all time of that rank (hidden
   * or not).
   */
  readonly exposedComm: {
    readonly epA2a: number;
    readonly epA2aTotal: number;
    readonly dp: number;
    /** epA2a / stepTime. */
    readonly epA2aShare: number;
  };
  readonly layers: readonly LayerCost[];
  readonly stages: readonly StageCost[];
  readonly memory: readonly RankMemory[];
  /** The largest total over ranks, and whether it fits the GPU's HBM. */
  readonly peakMemory: { readonly bytes: number; readonly fits: boolean; readonly hbm: number };
  /** Model FLOPs (attention and MTP included, no recomputation) / (step time · GPUs · BF16 peak). */
  readonly mfu: number;
  /** The same against the FP8 peak. */
  readonly mfuFp8: number;
  readonly tokensPerStep: number;
  readonly modelFlopsPerToken: number;
  readonly gpuHoursPerTrillionTokens: number;
  /** Bytes one GPU sends per step on each link tier. */
  readonly bytesPerGpu: { readonly nvlink: number; readonly ib: number; readonly wan: number };
  /** Total and activated parameters. */
  readonly params: { readonly total: number; readonly active: number };
  /** GPUs the simulation replayed (one per pipeline rank; see the file header). */
  readonly simulatedRanks: number;
}

// ---------------------------------------------------------------------------------------------------
// Options

interface Resolved {
  readonly o: SimulateOptions;
  readonly seq: number;
  readonly precision: Precision;
  readonly fp8Share: number;
  readonly efficiency: number;
  readonly overlap: boolean;
  readonly datacenters: number;
  readonly optBytes: number;
  readonly mbs: number;
  readonly tokens: number;
  readonly dpCollective: 'zero1' | 'all-reduce';
  /** GEMM time multiplier of the shared host (1 without `host` costs or on one GPU). */
  readonly slowdown: number;
  /** Multiplier of dispatch, memory-bound kernels and the optimizer on the shared host (the same cases). */
  readonly memorySlowdown: number;
}

function resolve(o: SimulateOptions): Resolved {
  const fn = 'simulateCluster';
  const m = o.model;
  const hw = o.cluster.hardware;
  const pp = checkInt(fn, 'pp', o.pp, 1);
  const ep = checkInt(fn, 'ep', o.ep, 1);
  const dp = checkInt(fn, 'dp', o.dp, 1);
  const N = checkInt(fn, 'microBatches', o.microBatches, 1);
  if (pp * ep * dp !== o.cluster.gpus) {
    throw invalidArgument(
      fn,
      'pp * ep * dp',
      `equal to the cluster's ${o.cluster.gpus} GPUs`,
      `${pp} * ${ep} * ${dp} = ${pp * ep * dp}`,
    );
  }
  if (m.experts % ep !== 0) {
    throw invalidArgument(fn, 'ep', `a divisor of the model's ${m.experts} routed experts`, ep);
  }
  const g = hw.gpusPerNode;
  if (ep > g ? ep % g !== 0 : g % ep !== 0) {
    throw invalidArgument(fn, 'ep', `a divisor or a multiple of the ${g} GPUs per node`, ep);
  }
  if (!(SCHEDULE_KINDS as readonly string[]).includes(o.schedule)) {
    throw invalidArgument(fn, 'schedule', `one of ${SCHEDULE_KINDS.join(', ')}`, o.schedule);
  }
  const seq = checkInt(fn, 'seqLen', o.seqLen ?? 4096, 1);
  const globalBatch = checkInt(fn, 'globalBatch', o.globalBatch, 1);
  if (globalBatch % (N * ep * dp) !== 0) {
    throw invalidArgument(
      fn,
      'globalBatch',
      `a multiple of microBatches * ep * dp = ${N * ep * dp} (each GPU runs N micro-batches of equal size)`,
      globalBatch,
    );
  }
  const precision = o.precision ?? 'bf16';
  if (precision !== 'bf16' && precision !== 'fp8')
    throw invalidArgument(fn, 'precision', 'bf16 or fp8', precision);
  const fp8Share = o.fp8Share ?? 1;
  if (!(fp8Share >= 0 && fp8Share <= 1))
    throw invalidArgument(fn, 'fp8Share', 'a number in [0, 1]', fp8Share);
  const efficiency = o.efficiency ?? 0.5;
  if (!(efficiency > 0 && efficiency <= 1))
    throw invalidArgument(fn, 'efficiency', 'a number in (0, 1]', efficiency);
  const datacenters = checkInt(fn, 'datacenters', o.datacenters ?? 1, 1);
  if (dp % datacenters !== 0)
    throw invalidArgument(fn, 'datacenters', `a divisor of dp (${dp})`, datacenters);
  const optBytes = o.optimizerBytesPerParam ?? 12;
  if (!(optBytes >= 0)) throw invalidArgument(fn, 'optimizerBytesPerParam', 'a number >= 0', optBytes);
  const dpCollective = o.dpCollective ?? 'zero1';
  if (dpCollective !== 'zero1' && dpCollective !== 'all-reduce')
    throw invalidArgument(fn, 'dpCollective', 'zero1 or all-reduce', dpCollective);
  const mbs = globalBatch / (N * ep * dp);
  return {
    o,
    seq,
    precision,
    fp8Share: precision === 'fp8' ? fp8Share : 0,
    efficiency,
    overlap: o.overlap ?? true,
    datacenters,
    optBytes,
    mbs,
    tokens: mbs * seq,
    dpCollective,
    slowdown: hw.host !== undefined && o.cluster.gpus > 1 ? hw.host.concurrencySlowdown : 1,
    memorySlowdown:
      hw.host !== undefined && o.cluster.gpus > 1
        ? (hw.host.memorySlowdown ?? hw.host.concurrencySlowdown)
        : 1,
  };
}

// ---------------------------------------------------------------------------------------------------
// Per-unit costs: a layer, or the head (with MTP projections) on the last stage

/** Seconds of one unit's parts for one micro-batch on one GPU. */
interface UnitCost {
  readonly kind: 'dense' | 'moe' | 'head';
  /** Attention (+ router) forward; for the head, the head GEMM. */
  readonly fA: number;
  /** Dense FFN or shared experts, forward. */
  readonly fM: number;
  /** Routed experts, forward. */
  readonly fE: number;
  /** Backward input-gradient parts (core attention backward = 2x its forward). */
  readonly bA: number;
  readonly bM: number;
  readonly bE: number;
  /** Weight-gradient parts. */
  readonly wA: number;
  readonly wM: number;
  readonly wE: number;
  /** All-to-all times: forward dispatch, forward combine, backward of combine, backward of dispatch. */
  readonly dispatch: number;
  readonly combine: number;
  readonly bCombine: number;
  readonly bDispatch: number;
  /** Bytes per GPU of the four all-to-alls together, per tier. */
  readonly a2aBytes: { readonly nvlink: number; readonly ib: number };
}

function unitCosts(r: Resolved): { dense: UnitCost; moe: UnitCost; head: UnitCost } {
  const { o, tokens: T } = r;
  const m = o.model;
  const hw = o.cluster.hardware;
  const gemm = (r.slowdown * (r.fp8Share / hw.peakFp8 + (1 - r.fp8Share) / hw.peakBf16)) / r.efficiency;
  const bf16 = r.slowdown / (hw.peakBf16 * r.efficiency);
  const host = hostLayerCost(r);
  const layer = (moe: boolean): UnitCost => {
    const f = layerFlops(m, moe, r.seq);
    const lin = f.attnLinear * gemm + f.router * bf16;
    const fA = T * (lin + f.core * bf16) + host.forward;
    const fM = T * f.mlp * gemm;
    const fE = T * f.experts * gemm;
    const shape = {
      tokens: T,
      hidden: m.hidden,
      ep: o.ep,
      gpusPerNode: hw.gpusPerNode,
      topK: m.topK,
      maxNodesPerToken: m.maxNodesPerToken,
    };
    // Dispatch in FP8 (1 byte + one FP32 scale per 128 values) when GEMMs are FP8, as DeepSeek-V3;
    // combine and both backward all-to-alls in BF16.
    const vDisp = expertA2aVolume({ ...shape, bytesPerElement: r.precision === 'fp8' ? 1 + 4 / 128 : 2 });
    const vBf16 = expertA2aVolume({ ...shape, bytesPerElement: 2 });
    const t16 = moe ? a2aTime(vBf16, hw) : 0;
    return {
      kind: moe ? 'moe' : 'dense',
      fA,
      fM,
      fE,
      bA: T * (lin + 2 * f.core * bf16) + host.backward,
      bM: fM,
      bE: fE,
      wA: T * lin,
      wM: fM,
      wE: fE,
      dispatch: moe ? a2aTime(vDisp, hw) : 0,
      combine: t16,
      bCombine: t16,
      bDispatch: t16,
      a2aBytes: moe
        ? { nvlink: vDisp.nvlink + 3 * vBf16.nvlink, ib: vDisp.ib + 3 * vBf16.ib }
        : { nvlink: 0, ib: 0 },
    };
  };
  const headT = T * headFlops(m) * bf16;
  const mtpProj = T * 2 * 2 * m.hidden * m.hidden * gemm;
  const zero = {
    fM: 0,
    fE: 0,
    bM: 0,
    bE: 0,
    wM: 0,
    wE: 0,
    dispatch: 0,
    combine: 0,
    bCombine: 0,
    bDispatch: 0,
  };
  const head: UnitCost = {
    ...zero,
    kind: 'head',
    fA: headT + m.mtpDepth * (headT + mtpProj),
    bA: headT + m.mtpDepth * (headT + mtpProj),
    wA: headT + m.mtpDepth * (headT + mtpProj),
    a2aBytes: { nvlink: 0, ib: 0 },
  };
  return { dense: layer(false), moe: layer(true), head };
}

/**
 * A host backend's per-layer, per-micro-batch time beyond GEMMs (0 without `host` costs): kernel
 * dispatch and memory-bound kernels, forward and backward (the backward's goes with the input
 * gradient), after the shared-host slowdown of memory-bound work.
 */
function hostLayerCost(r: Resolved): {
  forward: number;
  backward: number;
  kernels: number;
  elementwise: number;
} {
  const h = r.o.cluster.hardware.host;
  if (h === undefined) return { forward: 0, backward: 0, kernels: 0, elementwise: 0 };
  const k = (n: number) => r.memorySlowdown * n * h.kernelOverhead;
  const e = (secondsPerToken: number) => r.memorySlowdown * r.tokens * secondsPerToken;
  const { kernelsPerLayer: kl, elementwisePerTokenLayer: eb } = h;
  return {
    forward: k(kl.forward) + e(eb.forward),
    backward: k(kl.backward) + e(eb.backward),
    kernels: k(kl.forward + kl.backward),
    elementwise: e(eb.forward + eb.backward),
  };
}

// ---------------------------------------------------------------------------------------------------
// Stage tasks on the two streams

type Chain = 'F' | 'B' | 'Bi';

/** Appends one micro-batch's chain through `units` (forward order for F, reverse for B/Bi) to `tasks`. */
function addChain(tasks: StreamTask[], units: readonly UnitCost[], chain: Chain, tag: string): void {
  let join: number[] = [];
  const push = (stream: StreamTask['stream'], duration: number, deps: number[], label: string) => {
    tasks.push({ stream, duration, deps, label: `${tag}.${label}` });
    return tasks.length - 1;
  };
  const full = chain === 'B';
  const order = chain === 'F' ? units : [...units].reverse();
  order.forEach((u, i) => {
    if (chain === 'F') {
      const a = push('compute', u.fA, join, `attn[${i}]`);
      if (u.kind === 'head') join = [a];
      else if (u.kind === 'dense') join = [push('compute', u.fM, [a], `mlp[${i}]`)];
      else {
        const d = push('comm', u.dispatch, [a], `dispatch[${i}]`);
        const s = push('compute', u.fM, [a], `shared[${i}]`);
        const e = push('compute', u.fE, [d], `experts[${i}]`);
        const c = push('comm', u.combine, [e], `combine[${i}]`);
        join = [c, s];
      }
      return;
    }
    const bA = u.bA + (full ? u.wA : 0);
    const bM = u.bM + (full ? u.wM : 0);
    const bE = u.bE + (full ? u.wE : 0);
    if (u.kind === 'head') join = [push('compute', bA, join, `head[${i}]`)];
    else if (u.kind === 'dense') {
      const mlp = push('compute', bM, join, `mlp[${i}]`);
      join = [push('compute', bA, [mlp], `attn[${i}]`)];
    } else {
      const c = push('comm', u.bCombine, join, `combine[${i}]`);
      const s = push('compute', bM, join, `shared[${i}]`);
      const e = push('compute', bE, [c], `experts[${i}]`);
      const d = push('comm', u.bDispatch, [e], `dispatch[${i}]`);
      join = [push('compute', bA, [d, s], `attn[${i}]`)];
    }
  });
}

/** Compute and comm totals of an op, from its stream run. */
interface OpRun {
  readonly time: number;
  readonly compute: number;
  readonly comm: number;
}

function runOp(chains: readonly { units: readonly UnitCost[]; chain: Chain }[]): OpRun {
  const tasks: StreamTask[] = [];
  for (const [i, c] of chains.entries()) addChain(tasks, c.units, c.chain, `${c.chain}${i}`);
  const run = runStreams(tasks);
  return { time: run.makespan, compute: run.compute, comm: run.comm };
}

function weightGrad(units: readonly UnitCost[]): number {
  return units.reduce((sum, u) => sum + u.wA + u.wM + u.wE, 0);
}

// ---------------------------------------------------------------------------------------------------
// Stage partition

interface StagePlan {
  readonly firstLayer: number;
  readonly layers: number;
  readonly units: readonly UnitCost[];
  readonly extras: readonly string[];
}

/**
 * Splits L layers into S contiguous stages (each >= 1 layer): first the split that minimises the
 * largest stage's forward + backward time (dynamic programming), then boundary moves of one layer
 * while they lower the busiest rank's load (then the sum of squared rank loads), so that a rank
 * holding two stages (DualPipe: r and P-1-r) or v chunks is balanced as a whole. The last stage
 * also runs the head and the MTP modules, the first the embedding lookup.
 */
function partition(m: ModelSpec, schedule: Schedule, costs: ReturnType<typeof unitCosts>): StagePlan[] {
  const S = schedule.stages;
  const L = m.layers;
  if (S > L) {
    throw invalidArgument(
      'simulateCluster',
      'pp',
      `at most one stage per layer (${L} layers), got ${S} stages`,
      S,
    );
  }
  const unitOf = (i: number) => (i < m.denseLayers ? costs.dense : costs.moe);
  const work = (u: UnitCost) =>
    u.fA +
    u.fM +
    u.fE +
    u.bA +
    u.bM +
    u.bE +
    u.wA +
    u.wM +
    u.wE +
    u.dispatch +
    u.combine +
    u.bCombine +
    u.bDispatch;
  const tail = work(costs.head) + m.mtpDepth * work(costs.moe);
  const prefix = [0];
  for (let i = 0; i < L; i++) prefix.push(prefix[i]! + work(unitOf(i)));
  const cost = (a: number, b: number) => prefix[b]! - prefix[a]! + (b === L ? tail : 0);
  // best[s][j]: the least max-stage cost for layers [0, j) in s stages; cut[s][j]: where stage s-1 starts.
  const best = Array.from({ length: S + 1 }, () => new Array<number>(L + 1).fill(Number.POSITIVE_INFINITY));
  const cut = Array.from({ length: S + 1 }, () => new Array<number>(L + 1).fill(0));
  best[0]![0] = 0;
  for (let s = 1; s <= S; s++) {
    for (let j = s; j <= L - (S - s); j++) {
      for (let i = s - 1; i < j; i++) {
        const v = Math.max(best[s - 1]![i]!, cost(i, j));
        if (v < best[s]![j]! - 1e-15) {
          best[s]![j] = v;
          cut[s]![j] = i;
        }
      }
    }
  }
  const bounds = new Array<number>(S + 1).fill(L);
  for (let s = S; s >= 1; s--) bounds[s - 1] = cut[s]![bounds[s]!]!;
  // Rank loads: the stages each rank holds, over all phases.
  const homes = schedule.ops.map(() => new Set<number>());
  for (const ph of schedule.placement) {
    for (const [s, rank] of ph.entries()) homes[rank]!.add(s);
  }
  const score = (b: readonly number[]): [number, number] => {
    let max = 0;
    let squares = 0;
    for (const stages of homes) {
      let load = 0;
      for (const s of stages) load += cost(b[s]!, b[s + 1]!);
      max = Math.max(max, load);
      squares += load * load;
    }
    return [max, squares];
  };
  let current = score(bounds);
  for (let improved = true, rounds = 0; improved && rounds < 100 * S; rounds++) {
    improved = false;
    for (let i = 1; i < S; i++) {
      for (const d of [-1, 1]) {
        const at = bounds[i]! + d;
        if (at <= bounds[i - 1]! || at >= bounds[i + 1]!) continue;
        bounds[i] = at;
        const next = score(bounds);
        const better =
          next[0] < current[0] - 1e-12 || (next[0] <= current[0] + 1e-12 && next[1] < current[1] - 1e-12);
        if (better) {
          current = next;
          improved = true;
        } else bounds[i] = at - d;
      }
    }
  }
  return Array.from({ length: S }, (_, s) => {
    const i = bounds[s]!;
    const j = bounds[s + 1]!;
    const units: UnitCost[] = [];
    for (let l = i; l < j; l++) units.push(unitOf(l));
    const extras: string[] = [];
    if (s === 0) extras.push('embedding');
    if (s === S - 1) {
      for (let k = 0; k < m.mtpDepth; k++) units.push(costs.moe);
      units.push(costs.head);
      extras.push('head');
      if (m.mtpDepth > 0) extras.push(`${m.mtpDepth} MTP`);
    }
    return { firstLayer: i, layers: j - i, units, extras };
  });
}

// ---------------------------------------------------------------------------------------------------
// The simulation

/**
 * Simulates one optimizer step of an MoE model on a cluster: step time, bubble, exposed
 * communication, per-layer compute vs communication, memory per GPU, MFU, GPU-hours per trillion
 * tokens and bytes per link tier (see the file header for the model and its assumptions, and the
 * guide `docs/guide/plan-simulator.md`).
 *
 * When to use: to compare parallel layouts and schedules for a model and cluster before running
 * anything, or to check a paper's throughput claim against first principles.
 *
 * Throws PlanError INVALID_ARGUMENT naming the argument: pp·ep·dp must equal the GPUs, ep divides
 * the experts and is a divisor or multiple of the GPUs per node, stages <= layers, globalBatch a
 * multiple of N·ep·dp; and the schedule generator's own errors (DualPipe: N even and >= 2P).
 *
 * @example
 * ```ts
 * const report = simulateCluster({
 *   model: DEEPSEEK_V3, cluster: parseCluster('h800x2048'), pp: 16, ep: 64, dp: 2,
 *   microBatches: 120, schedule: 'dualpipe', globalBatch: 15360, precision: 'fp8',
 * });
 * report.gpuHoursPerTrillionTokens; // ~1.3e5 at efficiency 0.5
 * ```
 */
export function simulateCluster(options: SimulateOptions): SimulationReport {
  const r = resolve(options);
  const { o } = r;
  const m = o.model;
  const hw = o.cluster.hardware;
  const schedule =
    o.pp === 1
      ? singleStage(o.schedule, o.microBatches)
      : generateSchedule({
          kind: o.schedule,
          ranks: o.pp,
          microBatches: o.microBatches,
          ...(o.schedule === 'interleaved' ? { chunks: o.chunks ?? 2 } : {}),
        });
  const costs = unitCosts(r);
  const plans = partition(m, schedule, costs);

  // Level 1: op durations per stage (memoised; F&B pairs by their two stages).
  const memo = new Map<string, OpRun>();
  const opRun = (op: ScheduleOp): OpRun => {
    const key =
      op.kind === 'F&B'
        ? `FB:${op.forward.stage}:${op.backward.kind}:${op.backward.stage}`
        : `${op.kind}:${op.stage}`;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    const run = costOp(op, plans, r.overlap);
    memo.set(key, run);
    return run;
  };

  // Level 2: the pipeline. Stage-to-stage sends: T·D BF16 values, over NVLink when the whole
  // pipeline fits in a node, else InfiniBand.
  const crossNode = o.pp * o.ep * o.dp > hw.gpusPerNode;
  const ppLink: LinkTier = crossNode ? hw.ib : hw.nvlink;
  const ppBytes = r.tokens * m.hidden * 2;
  const validated = validateSchedule(schedule);
  const timelines = replayPipeline(schedule, (op) => opRun(op).time, linkTime(ppLink, ppBytes));
  const pipelineTime = Math.max(0, ...timelines.map((t) => t.at(-1)?.end ?? 0));

  // Per rank: busy time, exposed all-to-all, all-to-all total.
  const perRank = timelines.map((t) => {
    let busy = 0;
    let exposed = 0;
    let comm = 0;
    for (const x of t) {
      const run = opRun(x.op);
      busy += x.end - x.start;
      exposed += run.time - run.compute;
      comm += run.comm;
    }
    return { busy, exposed, comm };
  });
  const bubbles = perRank.map((p) => pipelineTime - p.busy);
  const bubbleMean = bubbles.reduce((a, b) => a + b, 0) / bubbles.length;

  const stagesOfRank = schedule.ops.map((_, rank) => {
    const set = new Set<number>();
    for (const ph of schedule.placement) {
      for (const [s, rk] of ph.entries()) if (rk === rank) set.add(s);
    }
    return [...set];
  });
  const dp = dpSync(r, plans, stagesOfRank);
  const dpExposed = (o.dpSync ?? 'exposed') === 'exposed' ? dp.time : 0;
  const optimizerTime = optimizerUpdate(r, plans, stagesOfRank);
  const stepTime = pipelineTime + dpExposed + optimizerTime;

  // The rank that waits longest on all-to-all (ranks differ in MoE layers: dense stages, head, MTP).
  const busiest = perRank.reduce((a, b) => (b.exposed > a.exposed ? b : a));
  const tokensPerStep = o.globalBatch * r.seq;
  const modelFlopsPerToken = trainingFlopsPerToken(m, r.seq);
  const flops = modelFlopsPerToken * tokensPerStep;
  const gpus = o.cluster.gpus;

  const memory = rankMemory(
    r,
    plans,
    stagesOfRank,
    schedule,
    validated.ranks.map((x) => x.peakActivations),
  );
  const peak = Math.max(...memory.map((x) => x.total));

  const bytes = linkBytes(r, plans, schedule, ppBytes, crossNode, dp);

  return {
    model: m.name,
    hardware: hw.name,
    gpus,
    pp: o.pp,
    ep: o.ep,
    dp: o.dp,
    schedule: o.schedule,
    microBatches: o.microBatches,
    microBatchSequences: r.mbs,
    seqLen: r.seq,
    globalBatch: o.globalBatch,
    precision: r.precision,
    fp8Share: r.fp8Share,
    efficiency: r.efficiency,
    overlap: r.overlap,
    stepTime,
    optimizerTime,
    computeTerms: computeTerms(r, m),
    pipelineTime,
    dpSync: { time: dp.time, exposed: dpExposed },
    bubble: { max: Math.max(...bubbles), mean: bubbleMean, fraction: bubbleMean / stepTime },
    exposedComm: {
      epA2a: busiest.exposed,
      epA2aTotal: busiest.comm,
      dp: dpExposed,
      epA2aShare: busiest.exposed / stepTime,
    },
    layers: layerBreakdown(costs),
    stages: plans.map((p, s) => ({
      stage: s,
      firstLayer: p.firstLayer,
      layers: p.layers,
      extras: p.extras,
      F: runOp([{ units: p.units, chain: 'F' }]).time,
      B: runOp([{ units: p.units, chain: 'B' }]).time,
      W: weightGrad(p.units),
    })),
    memory,
    peakMemory: { bytes: peak, fits: peak <= hw.hbmBytes, hbm: hw.hbmBytes },
    mfu: flops / (stepTime * gpus * hw.peakBf16),
    mfuFp8: flops / (stepTime * gpus * hw.peakFp8),
    tokensPerStep,
    modelFlopsPerToken,
    gpuHoursPerTrillionTokens: ((stepTime * gpus) / 3600) * (1e12 / tokensPerStep),
    bytesPerGpu: bytes,
    params: paramCounts(m),
    simulatedRanks: schedule.ranks,
  };
}

/** pp = 1: one stage on one rank, each micro-batch's forward then its backward. */
function singleStage(kind: ScheduleKind, microBatches: number): Schedule {
  const N = checkInt('simulateCluster', 'microBatches', microBatches, 1);
  const work = (k: 'F' | 'B', mb: number): StageWork => ({
    kind: k,
    microBatch: mb,
    stage: 0,
    chunk: 0,
    phase: 0,
  });
  const ops = Array.from({ length: N }, (_, mb) => [work('F', mb), work('B', mb)]).flat();
  return onePhaseSchedule(kind, 1, N, 1, [ops]);
}

/** See {@link SimulationReport.computeTerms}. */
function computeTerms(r: Resolved, m: ModelSpec): SimulationReport['computeTerms'] {
  const host = hostLayerCost(r);
  const N = r.o.microBatches;
  const perGpu = (x: number) => (N * x) / r.o.pp;
  const gemmSeconds =
    (r.tokens * trainingFlopsPerToken(m, r.seq) * r.slowdown) /
    (r.o.cluster.hardware.peakBf16 * r.efficiency);
  return {
    gemm: perGpu(gemmSeconds),
    kernels: perGpu(m.layers * host.kernels),
    elementwise: perGpu(m.layers * host.elementwise),
  };
}

/**
 * The optimizer update per step on the busiest rank (host presets only): its kernels' dispatch and
 * its memory-bound work per parameter it updates (every parameter it holds with
 * `all-reduce`, its 1/(ep·dp) or 1/dp shard with `zero1`), after the shared-host slowdown of
 * memory-bound work.
 */
function optimizerUpdate(
  r: Resolved,
  plans: readonly StagePlan[],
  stagesOfRank: readonly number[][],
): number {
  const h = r.o.cluster.hardware.host;
  if (h === undefined) return 0;
  const { ep, dp } = r.o;
  const sharded = r.dpCollective === 'zero1';
  let most = 0;
  for (const stages of stagesOfRank) {
    let params = 0;
    for (const s of stages) {
      const p = stageParams(r, plans[s]!, s, plans.length);
      params += sharded ? p.dense / (ep * dp) + p.experts / (ep * dp) : p.dense + p.experts / ep;
    }
    most = Math.max(most, params);
  }
  return r.memorySlowdown * (h.optimizerKernels * h.kernelOverhead + most * h.optimizerPerParam);
}

/** Cost of one schedule op from its stages' units (level 1). */
function costOp(op: ScheduleOp, plans: readonly StagePlan[], overlap: boolean): OpRun {
  const unitsOf = (w: StageWork) => plans[w.stage]!.units;
  if (op.kind === 'W') {
    const t = weightGrad(unitsOf(op));
    return { time: t, compute: t, comm: 0 };
  }
  if (op.kind !== 'F&B') return runOp([{ units: unitsOf(op), chain: op.kind }]);
  const f = { units: unitsOf(op.forward), chain: 'F' as const };
  const b = { units: unitsOf(op.backward), chain: op.backward.kind };
  if (overlap) return runOp([f, b]);
  const a = runOp([f]);
  const c = runOp([b]);
  return { time: a.time + c.time, compute: a.compute + c.compute, comm: a.comm + c.comm };
}

function layerBreakdown(costs: ReturnType<typeof unitCosts>): LayerCost[] {
  return (['dense', 'moe'] as const).map((kind) => {
    const u = costs[kind];
    const pair = runOp([
      { units: [u], chain: 'F' },
      { units: [u], chain: 'B' },
    ]);
    const f = runOp([{ units: [u], chain: 'F' }]);
    const b = runOp([{ units: [u], chain: 'B' }]);
    return {
      kind,
      forwardCompute: u.fA + u.fM + u.fE,
      forwardComm: u.dispatch + u.combine,
      backwardCompute: u.bA + u.bM + u.bE + u.wA + u.wM + u.wE,
      backwardComm: u.bCombine + u.bDispatch,
      overlappedPair: pair.time,
      serialPair: f.time + b.time,
    };
  });
}

// ---------------------------------------------------------------------------------------------------
// Parameters per stage, DP sync, memory, bytes

/** Parameters of one stage: replicated over ep·dp (non-expert) and split over ep (experts). */
function stageParams(r: Resolved, plan: StagePlan, stage: number, stages: number) {
  const m = r.o.model;
  const sum = (moe: boolean) => {
    const p = layerParams(m, moe);
    return { dense: p.attention + p.dense + p.router + p.shared + p.norms, experts: p.experts };
  };
  let dense = 0;
  let experts = 0;
  for (let l = plan.firstLayer; l < plan.firstLayer + plan.layers; l++) {
    const p = sum(l >= m.denseLayers);
    dense += p.dense;
    experts += p.experts;
  }
  if (stage === 0) dense += m.vocab * m.hidden;
  if (stage === stages - 1) {
    const moe = sum(true);
    dense += (m.tiedEmbeddings && stages === 1 ? 0 : m.vocab * m.hidden) + m.hidden;
    dense += m.mtpDepth * (moe.dense + 2 * m.hidden * m.hidden);
    experts += m.mtpDepth * moe.experts;
  }
  return { dense, experts };
}

function dpSync(r: Resolved, plans: readonly StagePlan[], stagesOfRank: readonly number[][]) {
  const { o } = r;
  const hw = o.cluster.hardware;
  const k = r.datacenters;
  let time = 0;
  let ib = 0;
  let nv = 0;
  let wan = 0;
  for (const stages of stagesOfRank) {
    let dense = 0;
    let experts = 0;
    for (const s of stages) {
      const p = stageParams(r, plans[s]!, s, plans.length);
      dense += p.dense;
      experts += p.experts / o.ep;
    }
    // Reduce-scatter of FP32 gradients (4 B) and all-gather of BF16 parameters (2 B), per group;
    // an all-reduce of FP32 gradients is a reduce-scatter and an all-gather of 4 B each.
    const bytesPerParam = r.dpCollective === 'all-reduce' ? 8 : 6;
    let t = 0;
    let rankIb = 0;
    let rankNv = 0;
    let rankWan = 0;
    for (const [params, group] of [
      [dense, o.ep * o.dp],
      [experts, o.dp],
    ] as const) {
      const inDc = group / k;
      const local = ringBytes(params * bytesPerParam, inDc);
      const link =
        inDc > hw.gpusPerNode || (group === o.dp && o.ep * o.dp > hw.gpusPerNode) ? hw.ib : hw.nvlink;
      t += local > 0 ? 2 * (inDc - 1) * link.alpha + local / link.beta : 0;
      if (link === hw.ib) rankIb += local;
      else rankNv += local;
      const cross = k > 1 ? ringBytes((params * bytesPerParam) / inDc, k) : 0;
      t += cross > 0 ? 2 * (k - 1) * hw.wan.alpha + cross / hw.wan.beta : 0;
      rankWan += cross;
    }
    if (t > time) {
      time = t;
      ib = rankIb;
      nv = rankNv;
      wan = rankWan;
    }
  }
  return { time, ib, nvlink: nv, wan };
}

/** Activation bytes one token leaves for backward in one layer (BF16, no recomputation; FP8 dispatch copies). */
function activationBytesPerToken(m: ModelSpec, moe: boolean, fp8: boolean): number {
  const D = m.hidden;
  const a = m.attention;
  const attn =
    a.kind === 'gqa'
      ? 2 * D + a.heads * a.headDim * 2 + 2 * a.kvHeads * a.headDim
      : 2 * D +
        2 * a.qLoraRank +
        (a.kvLoraRank + a.qkRopeHeadDim) +
        a.kvLoraRank +
        2 * a.heads * (a.qkNopeHeadDim + a.qkRopeHeadDim) +
        2 * a.heads * a.vHeadDim;
  if (!moe) return 2 * (attn + 2 * D + 3 * m.denseIntermediate);
  const K = m.topK;
  const experts = K * (3 * m.expertIntermediate + D) * 2 + K * D * (fp8 ? 1 : 2);
  return 2 * (attn + 2 * D + 3 * m.sharedIntermediate) + 4 * m.experts + experts;
}

function rankMemory(
  r: Resolved,
  plans: readonly StagePlan[],
  stagesOfRank: readonly number[][],
  schedule: Schedule,
  peakCounts: readonly number[],
): RankMemory[] {
  const { o } = r;
  const m = o.model;
  const fp8 = r.precision === 'fp8';
  const stageAct = plans.map((p, s) => {
    let bytes = 0;
    for (let l = p.firstLayer; l < p.firstLayer + p.layers; l++) {
      bytes += activationBytesPerToken(m, l >= m.denseLayers, fp8);
    }
    if (s === plans.length - 1) bytes += m.mtpDepth * activationBytesPerToken(m, true, fp8);
    return bytes * r.tokens;
  });
  return stagesOfRank.map((stages, rank) => {
    let weights = 0;
    let optimizer = 0;
    for (const s of stages) {
      const p = stageParams(r, plans[s]!, s, plans.length);
      weights += p.dense + p.experts / o.ep;
      optimizer += (p.dense * r.optBytes) / (o.ep * o.dp) + (p.experts / o.ep) * (r.optBytes / o.dp);
    }
    // Activations held, replaying the rank's order: + a stage's bytes at F, - at its backward.
    let held = 0;
    let activations = 0;
    for (const op of schedule.ops[rank]!) {
      const parts = op.kind === 'F&B' ? [op.forward, op.backward] : [op];
      for (const w of parts) {
        if (w.kind === 'F') held += stageAct[w.stage]!;
        else if (w.kind === 'B' || w.kind === 'Bi') held -= stageAct[w.stage]!;
        activations = Math.max(activations, held);
      }
    }
    const w = weights * 2;
    const g = weights * 4;
    return {
      rank,
      weights: w,
      gradients: g,
      optimizer,
      activations,
      total: w + g + optimizer + activations,
      peakActivations: peakCounts[rank]!,
    };
  });
}

function linkBytes(
  r: Resolved,
  plans: readonly StagePlan[],
  schedule: Schedule,
  ppBytes: number,
  crossNode: boolean,
  dp: { ib: number; nvlink: number; wan: number },
) {
  const a2a = unitCosts(r).moe.a2aBytes;
  const S = plans.length;
  const perPhase = [0, 1].map((ph) => schedule.phaseOf.filter((x) => x === ph).length);
  let best = { nvlink: 0, ib: 0, wan: 0 };
  for (let rank = 0; rank < schedule.ranks; rank++) {
    let nvlink = dp.nvlink;
    let ib = dp.ib;
    schedule.placement.forEach((stagesRank, ph) => {
      stagesRank.forEach((home, s) => {
        if (home !== rank) return;
        // Each micro-batch of this phase passes the stage once: 4 all-to-alls per MoE layer, an
        // activation to the next stage and a gradient to the previous one.
        const passes = perPhase[ph]!;
        const moeUnits = plans[s]!.units.filter((u) => u.kind === 'moe').length;
        nvlink += passes * moeUnits * a2a.nvlink;
        ib += passes * moeUnits * a2a.ib;
        const p2p = passes * ((s < S - 1 ? 1 : 0) + (s > 0 ? 1 : 0)) * ppBytes;
        if (crossNode) ib += p2p;
        else nvlink += p2p;
      });
    });
    if (nvlink + ib > best.nvlink + best.ib) best = { nvlink, ib, wan: dp.wan };
  }
  return best;
}
