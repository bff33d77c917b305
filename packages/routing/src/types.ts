/**
 * The types every router returns and every consumer (experts, balance, metrics) reads.
 *
 * Shape letters: T tokens, D model width, E routed experts, K slots per token.
 */
import type { Rng, Tensor2D } from '@switchyard/tensor';

/**
 * One routing decision for a batch of T tokens.
 *
 * Integer decisions (which experts, what was dropped) are made outside the gradient tape and come
 * both as int32 tensors and as host arrays, so dispatch needs no device read. Combine weights stay
 * on the tape: differentiable with respect to the router's weights and its input.
 *
 * For expert choice, K equals E: row t lists every expert and `keptMaskTK` marks the experts that
 * chose token t.
 */
export interface RoutingPlan {
  /** Router logits [T, E], float32, on the tape (router z-loss reads these). */
  readonly logitsTE: Tensor2D;
  /** Normalised scores [T, E] (softmax or sigmoid of the logits), float32, on the tape (aux losses read these). */
  readonly probsTE: Tensor2D;
  /** Selected experts [T, K], int32, no gradient. */
  readonly topkIdxTK: Tensor2D;
  /** Combine weights [T, K], float32, on the tape; exactly 0 where an assignment was dropped. */
  readonly topkWeightTK: Tensor2D;
  /** 1 where the (token, slot) assignment is kept, 0 where capacity dropped it; [T, K] float32. */
  readonly keptMaskTK: Tensor2D;
  /** Host copy of `topkIdxTK`, row-major [T * K]. */
  readonly expertIdx: Int32Array;
  /** Host copy of `keptMaskTK` (1 kept, 0 dropped), row-major [T * K]. */
  readonly kept: Uint8Array;
  /** c_i: top-K slots given to each expert before capacity dropping; sums to T * K (the f_i of balance losses). */
  readonly countsE: Int32Array;
  /** Assignments each expert keeps after capacity dropping. */
  readonly keptCountsE: Int32Array;
  /** Per-expert capacity C, or null when routing is dropless. */
  readonly capacity: number | null;
  readonly numTokens: number;
  readonly numExperts: number;
  readonly k: number;
  /** Dropped assignments / all assignments, in [0, 1]. */
  readonly dropRate: number;
  /** Which router produced the plan (its `type`). */
  readonly router: string;
  /**
   * Assignments the router chose not to use before capacity was applied (GShard's random routing
   * of the second expert). They are 0 in `keptMaskTK` but are not counted in `dropRate`.
   */
  readonly skipped?: number;
  /** True when this call routed uniformly at random (random-routing warm-up). */
  readonly randomRouted?: boolean;
  /** Capacity factor this call used (train or eval), or null for dropless. */
  readonly capacityFactor?: number | null;
  /** Hierarchical routing: group-prototype logits [T, G], float32, on the tape. */
  readonly groupLogitsTG?: Tensor2D;
  /** Hierarchical routing: softmax over the group prototypes [T, G], float32, on the tape. */
  readonly groupProbsTG?: Tensor2D;
  /** Hierarchical routing: host copy of the chosen groups per token, row-major [T * groupK]. */
  readonly groupIdx?: Int32Array;
  /** Expert choice: tokens that no expert chose (they pass only through the residual). */
  readonly unroutedTokens?: number;
  /**
   * Where the decisions were made (absent: `host`). A `device` plan's host fields (`expertIdx`,
   * `kept`, `countsE`, `keptCountsE`, `dropRate`, `skipped`) are read from its tensors on first
   * access (one read per plan); consumers that stay on the device use the tensors.
   */
  readonly decidedOn?: 'host' | 'device';
  /**
   * GShard on the device: 1 where the router used the (token, slot) assignment before capacity, 0
   * where random routing skipped the second expert; [T, K] float32, no gradient. Absent: all used.
   */
  readonly activeMaskTK?: Tensor2D;
}

/** Per-call options of {@link Router.route}. */
export interface RouteOptions {
  /** Training mode: enables jitter, random-routing warm-up, GShard's random second expert, train capacity. */
  readonly training: boolean;
  /** Optimizer step (for the random-routing warm-up). */
  readonly step?: number;
  /** Total optimizer steps of the run (for the random-routing warm-up fraction). */
  readonly totalSteps?: number;
  /** Randomness for jitter, noise and random routing; required when the router needs it in training. */
  readonly rng?: Rng;
  /** Selection-only bias, one value per expert (loss-free balancing). Never changes combine weights. */
  readonly selectionBiasE?: Float32Array;
  /** Token ids [T], used by the hash router. */
  readonly tokenIds?: Int32Array;
  /** Sequence length, when the T tokens are B sequences of S tokens laid out row-major (position drop policy, sequence losses). */
  readonly seqLen?: number;
}

/** A router: trainable weights plus a `route` function producing a {@link RoutingPlan}. */
export interface Router {
  /** The router kind, e.g. "topk", "switch", "gshard", "sigmoid", "expert-choice", "hierarchical", "hash". */
  readonly type: string;
  readonly numExperts: number;
  /** Slots per token (K); for expert choice, the expected number of experts per token. */
  readonly k: number;
  /** Model width D the router expects. */
  readonly dModel: number;
  /** Trainable variables by name (e.g. `weight` [D, E]). */
  readonly variables: Readonly<Record<string, import('@switchyard/tensor').tf.Variable>>;
  /** Routes a batch of token representations xTD [T, D]. */
  route(xTD: Tensor2D, options: RouteOptions): RoutingPlan;
  /** Parameters of the router. */
  numParams(): number;
  /** Multiply-adds per token spent in the router, times 2 (FLOPs per token). */
  flopsPerToken(): number;
  /** Releases the router's variables. */
  dispose(): void;
}
