/**
 * "This machine": a hardware preset from a short measured profile of a host backend (tfjs wasm on
 * CPU cores, ranks as worker threads), so that the cluster simulator can predict a data-parallel
 * training step of a small model where it actually runs.
 *
 * The profile is plain JSON (written by switchyard-train's `bench:profile`); every figure in it is
 * a measurement, none is fitted to a step time. What the preset keeps:
 * - GEMM rate at the model's shapes -> `peakBf16` = `peakFp8` (efficiency 1 in the simulation);
 * - per-kernel dispatch overhead, elementwise bytes/s of cheap (add) and transcendental (exp)
 *   kernels, the kernels and non-GEMM bytes of each class in one micro-batch's forward and backward
 *   (spread evenly over the model's layers) and in one optimizer update -> `host`;
 * - the slowdown of GEMMs when the ranks run at once on shared cores -> `host.concurrencySlowdown`,
 *   and of memory-bound kernels -> `host.memorySlowdown` (dispatch, elementwise, optimizer);
 * - the optimizer update timed as a primitive at the model's parameter shapes (when present) ->
 *   `host.optimizerPerParam` (dispatch included);
 * - rank-to-rank latency and bandwidth from two all-reduces -> both link tiers.
 */
import { checkInt, invalidArgument } from '../errors';
import { ringBytes } from './comm';
import type { HardwarePreset, LinkTier } from './hardware';

/** One timed all-reduce between the profile's ranks. */
export interface AllReduceSample {
  /** Bytes of the buffer each rank contributes. */
  readonly bytes: number;
  /** Median seconds of one all-reduce. */
  readonly seconds: number;
}

/** Bytes of memory-bound kernels by class: cheap (add, mul, copies...) and transcendental (exp, log, erf...). */
export interface ElementwiseBytes {
  readonly cheap: number;
  readonly transcendental: number;
}

/** A GEMM rate measured at one shape: [batch] x [m, k] x [k, n]. */
export interface GemmSample {
  readonly batch: number;
  readonly m: number;
  readonly k: number;
  readonly n: number;
  /** FLOP/s (2·batch·m·k·n per product). */
  readonly flopsPerSec: number;
  /** Operands read transposed, as the backward's products run (dX = dY·Wᵀ, dW = Xᵀ·dY); absent: neither. */
  readonly transposeA?: boolean;
  readonly transposeB?: boolean;
}

/** A measured profile of one machine and backend, as JSON. */
export interface MachineProfile {
  /** Name for the preset and reports (`node2core`). */
  readonly name: string;
  /** The tensor backend measured (`wasm`). */
  readonly backend: string;
  /** When it was measured, ISO 8601. */
  readonly measuredAt: string;
  /** Ranks (worker threads) that share the host, and that the transport figures are between. */
  readonly ranks: number;
  readonly matmul: {
    /** FLOP/s over the model's GEMM shapes together (total FLOPs / total time): the preset's peak. */
    readonly flopsPerSec: number;
    /** Each shape's rate. */
    readonly shapes: readonly GemmSample[];
    /** 1024 x 1024 x 1024, for reference. */
    readonly reference1024: number;
  };
  /** Seconds of dispatch per kernel (many tiny kernels, timed). */
  readonly kernelOverhead: number;
  /** Bytes/s that an elementwise kernel of each class reads and writes (add; exp). */
  readonly elementwiseBytesPerSec: ElementwiseBytes;
  /** The training workload counted on the real model (tf.profile of one micro-batch). */
  readonly workload: {
    /** Model the counts are of. */
    readonly model: string;
    /** Transformer layers of that model (the counts are spread over them). */
    readonly layers: number;
    /** Tokens of the profiled micro-batch. */
    readonly tokens: number;
    /** Kernels of the forward (loss included) of one micro-batch. */
    readonly kernelsForward: number;
    /** Kernels of its backward (forward + backward minus forward). */
    readonly kernelsBackward: number;
    /** Bytes read and written by the forward's kernels other than matrix products. */
    readonly elementwiseBytesForward: ElementwiseBytes;
    /** The same for the backward. */
    readonly elementwiseBytesBackward: ElementwiseBytes;
    /** Kernels of one optimizer update (gradient clip + AdamW) over all parameters. */
    readonly optimizerKernels: number;
    /** Bytes that update reads and writes per parameter. */
    readonly optimizerBytesPerParam: ElementwiseBytes;
  };
  /** Compute time of each of `ranks` ranks running matmuls at once / one rank alone (>= 1 on shared cores). */
  readonly concurrencySlowdown: number;
  /**
   * The same ratio for memory-bound kernels (>= 1); it scales dispatch, elementwise work and the
   * optimizer update. Absent: `concurrencySlowdown`.
   */
  readonly memorySlowdown?: number;
  /**
   * The optimizer update (gradient clip + AdamW) timed as a primitive over tensors of the model's
   * parameter shapes: seconds for `parameters` parameters, dispatch included. When present it
   * replaces the `optimizerKernels` / `optimizerBytesPerParam` estimate.
   */
  readonly optimizerUpdate?: { readonly parameters: number; readonly seconds: number };
  readonly transport: {
    /** Per-transfer latency, seconds (from the small all-reduce). */
    readonly latency: number;
    /** Per-rank bandwidth, bytes/s (from the large all-reduce). */
    readonly bandwidth: number;
    /** The all-reduces they come from. */
    readonly allReduce: readonly AllReduceSample[];
  };
}

/**
 * Latency and bandwidth from two all-reduces of `ranks` ranks, inverting the ring cost the
 * simulator charges: t = 2(R-1)·alpha + 2·bytes·(R-1)/R / beta. The smallest sample gives alpha,
 * the largest beta from the difference of the two.
 *
 * When to use: to turn a profile's timed all-reduces into {@link MachineProfile.transport}.
 *
 * @example
 * ```ts
 * linkFromAllReduce([{ bytes: 4, seconds: 2e-4 }, { bytes: 16e6, seconds: 0.0082 }], 2);
 * // { alpha: 1e-4, beta: 2e9 }
 * ```
 */
export function linkFromAllReduce(samples: readonly AllReduceSample[], ranks: number): LinkTier {
  const fn = 'linkFromAllReduce';
  const R = checkInt(fn, 'ranks', ranks, 2);
  if (samples.length < 2) throw invalidArgument(fn, 'samples', 'at least two all-reduces', samples.length);
  const sorted = [...samples].sort((a, b) => a.bytes - b.bytes);
  const small = sorted[0]!;
  const large = sorted.at(-1)!;
  const dt = large.seconds - small.seconds;
  if (!(large.bytes > small.bytes) || !(dt > 0)) {
    throw invalidArgument(fn, 'samples', 'a larger all-reduce that takes longer than a smaller one', sorted);
  }
  const alpha = small.seconds / (2 * (R - 1));
  const beta = (2 * ringBytes(large.bytes - small.bytes, R)) / dt;
  return { alpha, beta };
}

/**
 * The hardware preset of a measured machine: one "GPU" per rank, `ranks` of them per node, both
 * link tiers the measured transport, and `host` costs (kernel dispatch, elementwise kernels, the
 * shared-core slowdown, the optimizer update). Simulate it with efficiency 1: the GEMM rate is
 * already the achieved one.
 *
 * When to use: to simulate a data-parallel run on the machine the profile was taken on
 * (`simulateCluster({ cluster: { hardware: machinePreset(profile), gpus: 2 }, pp: 1, ... })`).
 *
 * @example
 * ```ts
 * const hw = machinePreset(profile);
 * hw.peakBf16 === profile.matmul.flopsPerSec; // true
 * ```
 */
export function machinePreset(profile: MachineProfile): HardwarePreset {
  const fn = 'machinePreset';
  const p = profile;
  const positive = (arg: string, v: number) => {
    if (!(typeof v === 'number' && Number.isFinite(v) && v > 0))
      throw invalidArgument(fn, arg, 'a number > 0', v);
  };
  const atLeast0 = (arg: string, v: number) => {
    if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0))
      throw invalidArgument(fn, arg, 'a number >= 0', v);
  };
  const ranks = checkInt(fn, 'profile.ranks', p.ranks, 1);
  positive('profile.matmul.flopsPerSec', p.matmul.flopsPerSec);
  atLeast0('profile.kernelOverhead', p.kernelOverhead);
  positive('profile.elementwiseBytesPerSec.cheap', p.elementwiseBytesPerSec.cheap);
  positive('profile.elementwiseBytesPerSec.transcendental', p.elementwiseBytesPerSec.transcendental);
  positive('profile.transport.bandwidth', p.transport.bandwidth);
  atLeast0('profile.transport.latency', p.transport.latency);
  if (!(p.concurrencySlowdown >= 1)) {
    throw invalidArgument(fn, 'profile.concurrencySlowdown', 'a number >= 1', p.concurrencySlowdown);
  }
  if (p.memorySlowdown !== undefined && !(p.memorySlowdown >= 1)) {
    throw invalidArgument(fn, 'profile.memorySlowdown', 'a number >= 1', p.memorySlowdown);
  }
  const u = p.optimizerUpdate;
  if (u !== undefined) {
    positive('profile.optimizerUpdate.parameters', u.parameters);
    atLeast0('profile.optimizerUpdate.seconds', u.seconds);
  }
  const w = p.workload;
  const L = checkInt(fn, 'profile.workload.layers', w.layers, 1);
  const T = checkInt(fn, 'profile.workload.tokens', w.tokens, 1);
  atLeast0('profile.workload.kernelsForward', w.kernelsForward);
  atLeast0('profile.workload.kernelsBackward', w.kernelsBackward);
  atLeast0('profile.workload.optimizerKernels', w.optimizerKernels);
  /** Seconds of `bytes` at the profile's rate of each class. */
  const seconds = (arg: string, bytes: ElementwiseBytes) => {
    atLeast0(`profile.workload.${arg}.cheap`, bytes.cheap);
    atLeast0(`profile.workload.${arg}.transcendental`, bytes.transcendental);
    return (
      bytes.cheap / p.elementwiseBytesPerSec.cheap +
      bytes.transcendental / p.elementwiseBytesPerSec.transcendental
    );
  };
  const link: LinkTier = { alpha: p.transport.latency, beta: p.transport.bandwidth };
  return {
    name: p.name,
    peakBf16: p.matmul.flopsPerSec,
    peakFp8: p.matmul.flopsPerSec,
    // Host memory is not the limit at these model sizes; report it as unbounded.
    hbmBytes: Number.POSITIVE_INFINITY,
    gpusPerNode: ranks,
    nvlink: link,
    ib: link,
    wan: link,
    host: {
      kernelOverhead: p.kernelOverhead,
      concurrencySlowdown: p.concurrencySlowdown,
      ...(p.memorySlowdown !== undefined ? { memorySlowdown: p.memorySlowdown } : {}),
      kernelsPerLayer: { forward: w.kernelsForward / L, backward: w.kernelsBackward / L },
      elementwisePerTokenLayer: {
        forward: seconds('elementwiseBytesForward', w.elementwiseBytesForward) / (L * T),
        backward: seconds('elementwiseBytesBackward', w.elementwiseBytesBackward) / (L * T),
      },
      // A timed update already holds its dispatch: no separate kernel term then.
      optimizerKernels: u !== undefined ? 0 : w.optimizerKernels,
      optimizerPerParam:
        u !== undefined
          ? u.seconds / u.parameters
          : seconds('optimizerBytesPerParam', w.optimizerBytesPerParam),
    },
  };
}
