/**
 * Hardware presets for the cluster simulator: per GPU peak dense FLOP/s (BF16, FP8), HBM capacity,
 * and the alpha-beta cost of each link tier (NVLink inside a node, InfiniBand between nodes, WAN
 * between datacenters). All bandwidths are per GPU and per direction, in bytes/s; alphas in seconds.
 *
 * Sources (vendor datasheets; dense, i.e. without 2:4 sparsity):
 * - H100 SXM5: 989 TFLOP/s BF16, 1979 TFLOP/s FP8, 80 GB HBM3, NVLink 4 900 GB/s bidirectional
 *   (450 GB/s per direction), one ConnectX-7 400 Gb/s NIC per GPU in DGX H100 (50 GB/s).
 *   (NVIDIA H100 Tensor Core GPU datasheet; DGX H100 user guide.)
 * - H800 SXM5: the H100's tensor cores (989 / 1979 TFLOP/s), 80 GB; NVLink cut to 400 GB/s
 *   bidirectional; DeepSeek-V3's report (arXiv 2412.19437, section 3.2.2 and 3.4) uses NVLink
 *   160 GB/s and IB 50 GB/s per GPU (8 x 400 Gb/s CX7 per node); the simulator uses those.
 * - A100 SXM4 80 GB: 312 TFLOP/s BF16, no FP8 (FP8 falls back to the BF16 peak), NVLink 3 600 GB/s
 *   bidirectional (300 per direction), HDR 200 Gb/s per GPU (25 GB/s) in DGX A100.
 * - B200 (DGX B200): 2.25 PFLOP/s BF16 and 4.5 PFLOP/s FP8 dense (datasheet 72 PFLOP/s FP8 per 8-GPU
 *   system is sparse), 180 GB HBM3e (1,440 GB per system), NVLink 5 1.8 TB/s bidirectional (900 per
 *   direction), ConnectX-7 400 Gb/s per GPU (50 GB/s).
 * - WAN between datacenters (SPEC section 3): 1-10 Gb/s per GPU with millisecond latency; the presets
 *   use 10 Gb/s (1.25 GB/s) and 5 ms.
 * Alphas are software latencies of one collective step, not wire latencies: ~3 us over NVLink,
 * ~10 us over InfiniBand (DeepEP's normal kernels' fixed cost is of this order).
 */
import { checkInt, invalidArgument } from '../errors';

/** One link tier's alpha-beta cost: t = alpha + bytes / beta. */
export interface LinkTier {
  /** Fixed latency per transfer, seconds. */
  readonly alpha: number;
  /** Bandwidth per GPU per direction, bytes per second. */
  readonly beta: number;
}

/** A GPU model and its links. */
export interface HardwarePreset {
  /** Preset name (`h800`). */
  readonly name: string;
  /** Peak dense BF16 tensor FLOP/s per GPU. */
  readonly peakBf16: number;
  /** Peak dense FP8 tensor FLOP/s per GPU (the BF16 peak where the GPU has no FP8). */
  readonly peakFp8: number;
  /** HBM capacity per GPU, bytes. */
  readonly hbmBytes: number;
  /** GPUs per node (one NVLink domain). */
  readonly gpusPerNode: number;
  /** NVLink inside a node. */
  readonly nvlink: LinkTier;
  /** InfiniBand between nodes of one datacenter. */
  readonly ib: LinkTier;
  /** WAN between datacenters. */
  readonly wan: LinkTier;
  /**
   * Costs of a host (CPU) backend that a GPU's FLOP/s and links leave out: kernel dispatch,
   * memory-bound kernels, cores shared by the ranks (absent for the GPU presets; see
   * `machinePreset`).
   */
  readonly host?: HostCosts;
}

/** What a host backend adds to a GEMM-only cost model, measured on the machine (see `MachineProfile`). */
export interface HostCosts {
  /** Seconds of dispatch per kernel launched. */
  readonly kernelOverhead: number;
  /** Multiplier of compute time when more than one rank computes at once on the shared host (1: none). */
  readonly concurrencySlowdown: number;
  /**
   * Multiplier of kernel dispatch, memory-bound kernels and the optimizer update when more than one
   * rank runs at once (memory-bound work slows down more than GEMMs on shared cores); absent: the
   * GEMMs' `concurrencySlowdown`.
   */
  readonly memorySlowdown?: number;
  /** Kernels launched per layer per micro-batch, forward and backward (the model's total over its layers; embedding, loss and head included). */
  readonly kernelsPerLayer: { readonly forward: number; readonly backward: number };
  /** Seconds of memory-bound (non-GEMM) kernel work per token per layer, forward and backward (the same spreading). */
  readonly elementwisePerTokenLayer: { readonly forward: number; readonly backward: number };
  /** Kernels of one optimizer update (gradient clip + AdamW) per step and rank. */
  readonly optimizerKernels: number;
  /** Seconds of the optimizer update's memory-bound work per parameter it updates. */
  readonly optimizerPerParam: number;
}

const wan: LinkTier = { alpha: 5e-3, beta: 1.25e9 };

/** The built-in hardware presets (see the file header for sources). */
export const HARDWARE_PRESETS: Readonly<Record<'h800' | 'h100' | 'a100' | 'b200', HardwarePreset>> = {
  h800: {
    name: 'h800',
    peakBf16: 989e12,
    peakFp8: 1979e12,
    hbmBytes: 80e9,
    gpusPerNode: 8,
    nvlink: { alpha: 3e-6, beta: 160e9 },
    ib: { alpha: 10e-6, beta: 50e9 },
    wan,
  },
  h100: {
    name: 'h100',
    peakBf16: 989e12,
    peakFp8: 1979e12,
    hbmBytes: 80e9,
    gpusPerNode: 8,
    nvlink: { alpha: 3e-6, beta: 450e9 },
    ib: { alpha: 10e-6, beta: 50e9 },
    wan,
  },
  a100: {
    name: 'a100',
    peakBf16: 312e12,
    peakFp8: 312e12,
    hbmBytes: 80e9,
    gpusPerNode: 8,
    nvlink: { alpha: 3e-6, beta: 300e9 },
    ib: { alpha: 10e-6, beta: 25e9 },
    wan,
  },
  b200: {
    name: 'b200',
    peakBf16: 2250e12,
    peakFp8: 4500e12,
    hbmBytes: 180e9,
    gpusPerNode: 8,
    nvlink: { alpha: 3e-6, beta: 900e9 },
    ib: { alpha: 10e-6, beta: 50e9 },
    wan,
  },
};

/** A cluster: a hardware preset and how many GPUs. */
export interface ClusterSpec {
  readonly hardware: HardwarePreset;
  /** Total GPUs. */
  readonly gpus: number;
}

/**
 * Parses a cluster name `<preset>x<gpus>` (`h800x2048`).
 *
 * When to use: for the CLI's `--cluster` and anywhere a cluster is named by a string.
 *
 * @example
 * ```ts
 * parseCluster('h800x2048'); // { hardware: HARDWARE_PRESETS.h800, gpus: 2048 }
 * ```
 */
export function parseCluster(name: string): ClusterSpec {
  const fn = 'parseCluster';
  const match = /^([a-z0-9]+)x(\d+)$/i.exec(name);
  const presets = Object.keys(HARDWARE_PRESETS).join(', ');
  if (match === null) {
    throw invalidArgument(fn, 'cluster', `<preset>x<gpus> with preset one of ${presets}`, name);
  }
  const key = match[1]!.toLowerCase();
  const hardware = (HARDWARE_PRESETS as Record<string, HardwarePreset>)[key];
  if (hardware === undefined) throw invalidArgument(fn, 'cluster', `a preset among ${presets}`, key);
  const gpus = checkInt(fn, 'cluster GPUs', Number(match[2]), 1);
  return { hardware, gpus };
}

/**
 * Time of one transfer over a link: alpha + bytes / beta (0 for 0 bytes).
 *
 * When to use: to cost a point-to-point send or one phase of a collective.
 *
 * @example
 * ```ts
 * linkTime({ alpha: 10e-6, beta: 50e9 }, 50e6); // 0.00101 s
 * ```
 */
export function linkTime(link: LinkTier, bytes: number): number {
  return bytes > 0 ? link.alpha + bytes / link.beta : 0;
}
