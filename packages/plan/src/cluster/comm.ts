/**
 * Communication volumes and times: expert-parallel all-to-all (flat and hierarchical with
 * node-limited routing), ring reduce-scatter / all-gather. Uniform routing throughout: each of a
 * token's K experts is an independent uniform pick (with replacement, which the formulas share with
 * the SPEC's flat-EP formula).
 *
 * Letters: T tokens per GPU, D model width, s bytes per element, G GPUs in the EP group, g GPUs per
 * node, n nodes of the EP group (G = n g), M nodes a token may reach (node-limited routing), K top-k.
 */
import type { HardwarePreset } from './hardware';
import { linkTime } from './hardware';

/** Bytes one GPU sends in one all-to-all, per link tier. */
export interface A2aVolume {
  /** Bytes over NVLink (inside a node). */
  readonly nvlink: number;
  /** Bytes over InfiniBand (between nodes). */
  readonly ib: number;
}

/**
 * The SPEC's flat-EP volume: bytes one GPU sends in one dispatch over G GPUs under uniform routing,
 * T·D·s·(G-1)·(1-(1-1/G)^K): each token goes once to every other GPU that holds one of its experts.
 *
 * When to use: EP inside one node, or as the no-hierarchy reference.
 *
 * @example
 * ```ts
 * flatA2aBytes(4096, 7168, 2, 8, 8); // 4096 * 7168 * 2 * 7 * (1 - (7/8) ** 8)
 * ```
 */
export function flatA2aBytes(
  tokens: number,
  hidden: number,
  bytes: number,
  gpus: number,
  topK: number,
): number {
  if (gpus <= 1) return 0;
  return tokens * hidden * bytes * (gpus - 1) * (1 - (1 - 1 / gpus) ** topK);
}

/** Inputs of {@link expertA2aVolume}. */
export interface A2aShape {
  /** T: tokens per GPU. */
  readonly tokens: number;
  /** D. */
  readonly hidden: number;
  /** s: bytes per element (1 for FP8 dispatch, 2 for BF16). */
  readonly bytesPerElement: number;
  /** G: GPUs in the EP group. */
  readonly ep: number;
  /** g: GPUs per node. */
  readonly gpusPerNode: number;
  /** K. */
  readonly topK: number;
  /** M: node limit (0 or >= n: unlimited). */
  readonly maxNodesPerToken: number;
}

/**
 * Bytes one GPU sends in one all-to-all (a dispatch; a combine moves the same counts back) with
 * hierarchical routing: a token crosses InfiniBand once per remote node that holds one of its
 * experts (to the GPU of the same local index), then NVLink forwards it to each further GPU.
 *
 * With node-limited routing the token's experts lie on M uniformly chosen nodes, so it reaches
 * M·(1-(1-1/M)^K) distinct nodes, of which a fraction (n-1)/n are remote: IB bytes = T·D·s·that.
 * It reaches Mg·(1-(1-1/(Mg))^K) distinct GPUs, each by NVLink unless it is the landing GPU
 * (probability 1/g): NVLink bytes = T·D·s·Mg·(1-(1-1/(Mg))^K)·(g-1)/g. With one node this is the
 * flat formula over g GPUs.
 *
 * When to use: the simulator's EP cost per MoE layer; alone, to size an EP layout.
 *
 * @example
 * ```ts
 * // DeepSeek-V3: 64 GPUs on 8 nodes, top-8 limited to 4 nodes: ~3.15 remote nodes per token.
 * expertA2aVolume({ tokens: 1, hidden: 1, bytesPerElement: 1, ep: 64, gpusPerNode: 8, topK: 8,
 *   maxNodesPerToken: 4 }).ib; // 4 * (1 - 0.75 ** 8) * 7 / 8
 * ```
 */
export function expertA2aVolume(shape: A2aShape): A2aVolume {
  const { tokens, hidden, bytesPerElement, ep, topK } = shape;
  const g = Math.min(ep, shape.gpusPerNode);
  const n = Math.ceil(ep / g);
  const perToken = tokens * hidden * bytesPerElement;
  if (ep <= 1) return { nvlink: 0, ib: 0 };
  if (n === 1) return { nvlink: flatA2aBytes(tokens, hidden, bytesPerElement, g, topK), ib: 0 };
  const M = shape.maxNodesPerToken > 0 ? Math.min(shape.maxNodesPerToken, n) : n;
  const nodesHit = M * (1 - (1 - 1 / M) ** topK);
  const gpusHit = M * g * (1 - (1 - 1 / (M * g)) ** topK);
  return { ib: perToken * nodesHit * ((n - 1) / n), nvlink: perToken * gpusHit * ((g - 1) / g) };
}

/**
 * Time of one hierarchical all-to-all: max(V_ib/beta_ib, V_nvlink/beta_nvlink) + alpha (the two
 * phases pipeline, as DeepEP's kernels do; alpha of the slowest tier used).
 *
 * When to use: to cost an {@link A2aVolume}.
 *
 * @example
 * ```ts
 * a2aTime({ nvlink: 160e6, ib: 50e6 }, HARDWARE_PRESETS.h800); // 1e-3 + 10e-6
 * ```
 */
export function a2aTime(volume: A2aVolume, hw: HardwarePreset): number {
  if (volume.ib > 0) return hw.ib.alpha + Math.max(volume.ib / hw.ib.beta, volume.nvlink / hw.nvlink.beta);
  return linkTime(hw.nvlink, volume.nvlink);
}

/**
 * Bytes one GPU sends in a ring reduce-scatter (or all-gather) of `bytes` over `group` GPUs:
 * (n-1)/n · bytes.
 *
 * When to use: ZeRO-1 gradient reduce-scatter and parameter all-gather.
 *
 * @example
 * ```ts
 * ringBytes(1000, 4); // 750
 * ```
 */
export function ringBytes(bytes: number, group: number): number {
  return group <= 1 ? 0 : (bytes * (group - 1)) / group;
}
