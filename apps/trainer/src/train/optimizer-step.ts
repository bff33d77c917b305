/**
 * The end of a training step: gradient sync over data-parallel ranks, the global-norm clip and the
 * AdamW update, in one of two placements.
 *
 * - `host`: AdamW in one JavaScript pass over host memory (wasm and cpu tensors live there). With R
 *   ranks the optimizer is sharded (ZeRO stage 1): gradients are reduce-scattered, each rank clips
 *   and updates its 1/R of the parameters with the moments it alone keeps, and the updated ranges
 *   are all-gathered into every replica.
 * - `backend`: AdamW as tensor ops on the backend (the place for a GPU), after a bucketed gradient
 *   all-reduce; every rank runs the whole update.
 *
 * Both compute the same update and save the same checkpoint tensors (`m/<name>`, `v/<name>`).
 */
import {
  allGatherFlat,
  allGatherVariables,
  allReduceGradients,
  type Communicator,
  type FlatLayout,
  flatLayout,
  flatRange,
  readFlat,
  reduceScatterGradients,
  writeFlat,
} from '@switchyard/parallel';
import { SwitchyardError, tf } from '@switchyard/tensor';
import {
  AdamW,
  type AdamWConfig,
  type ClipResult,
  clipScale,
  gradientClip,
  HostAdamW,
  momentTensors,
  type NormSpan,
} from './adamw';

/**
 * What the optimizer step needs of expert-parallel training (slots of experts spread over ranks,
 * some experts with several copies): which gradients are slots', their reduction over the copies
 * of each expert, and this rank's share of their squared norm.
 */
export interface ExpertGradients {
  /** True for the names of expert-slot variables. */
  owns(name: string): boolean;
  /** Replaces, in the map, the slots' gradients with what every copy applies. A collective. */
  reduce(grads: Map<string, tf.Tensor>): void;
  /** This rank's share of the squared norm of the slots' gradients; the shares of all ranks sum to it. */
  squaredNormShare(grads: ReadonlyMap<string, tf.Tensor>): number;
}

/** Where the optimizer runs: `host` (JavaScript, sharded over ranks) or `backend` (tensor ops). */
export type OptimizerPlacement = 'host' | 'backend';

/** What one {@link OptimizerStep.apply} did. */
export interface AppliedStep {
  /** Global gradient L2 norm before clipping (NaN or Infinity when a gradient is not finite). */
  readonly norm: number;
  /** Variables whose gradient holds NaN or Infinity; when not empty, nothing was updated. */
  readonly nonFinite: readonly string[];
  /** Milliseconds in collectives (gradient reduction, parameter gather). */
  readonly syncMs: number;
  /** Milliseconds measuring the norm. */
  readonly clipMs: number;
  /** Milliseconds in the update itself. */
  readonly optimizerMs: number;
}

/**
 * What `auto` means: `backend`, on any number of ranks. On one rank the backend's vectorised tensor
 * ops run AdamW faster than the JavaScript loop. On 2 wasm ranks the sharded `host` step spends less
 * time in its own phases, yet whole steps ran faster with AdamW on every rank in the trainer bench's
 * alternating runs (it prints `sharded host AdamW / AdamW on every rank`). Sharding is therefore
 * chosen explicitly, for its memory: each rank keeps the moments of 1/R of the parameters.
 *
 * @example
 * ```ts
 * resolvePlacement('auto'); // 'backend'
 * resolvePlacement('host'); // 'host'
 * ```
 */
export function resolvePlacement(setting: 'auto' | OptimizerPlacement): OptimizerPlacement {
  return setting === 'auto' ? 'backend' : setting;
}

/**
 * Gradient sync, clip and AdamW for every rank of a data-parallel job (one rank: no collectives).
 * Every rank constructs it with the same variables in the same order and calls every method.
 *
 * When to use: once per optimizer step, with the step's accumulated gradients.
 *
 * @example
 * ```ts
 * const opt = new OptimizerStep(comm, model.namedVariables(), adamConfig, 'host', 1.0);
 * const done = opt.apply(grads, lr); // disposes grads
 * ```
 */
export class OptimizerStep {
  private readonly host?: {
    layout: FlatLayout;
    adam: HostAdamW;
    /** Step buffers, reused: this range's gradient and parameters, and (R > 1) the gathered layout. */
    gradN: Float32Array;
    paramsN: Float32Array;
    allN?: Float32Array;
  };
  private readonly backend?: AdamW;

  constructor(
    private readonly comm: Communicator,
    private readonly named: ReadonlyMap<string, tf.Variable>,
    cfg: AdamWConfig,
    readonly placement: OptimizerPlacement,
    private readonly clipNorm: number,
    /** When `named` is one pipeline stage's share of the model: how the clipping norm spans the stages. */
    private readonly span: NormSpan = {},
    /** Expert-parallel slots among `named` (backend placement only), or undefined. */
    private readonly experts?: ExpertGradients,
  ) {
    if (placement === 'host') {
      if (experts !== undefined)
        throw new SwitchyardError(
          'INVALID_ARGUMENT',
          'OptimizerStep: the host placement shards replicated weights only; expert-parallel slots need the backend placement',
        );
      const layout = flatLayout(named);
      const range = flatRange(layout, comm.rank, comm.worldSize);
      const n = range.end - range.start;
      this.host = {
        layout,
        adam: new HostAdamW(layout, range, cfg),
        gradN: new Float32Array(n),
        paramsN: new Float32Array(n),
        ...(comm.worldSize > 1 ? { allN: new Float32Array(layout.total) } : {}),
      };
    } else {
      this.backend = new AdamW(named, cfg);
    }
  }

  /** Updates applied so far. */
  get stepCount(): number {
    return this.host ? this.host.adam.stepCount : this.backend!.stepCount;
  }

  /**
   * Syncs `grads` (keyed by the names of `named`; disposed here), measures the global norm, and,
   * when every gradient is finite, applies AdamW with learning rate `lr` and the clipping factor.
   */
  apply(grads: Map<string, tf.Tensor>, lr: number): AppliedStep {
    return this.host ? this.applyHost(grads, lr) : this.applyBackend(grads, lr);
  }

  private applyHost(grads: Map<string, tf.Tensor>, lr: number): AppliedStep {
    const { layout, adam, gradN, paramsN, allN } = this.host!;
    const { comm } = this;
    const R = comm.worldSize;
    const t0 = performance.now();
    try {
      reduceScatterGradients(comm, grads, layout, {}, gradN);
    } finally {
      tf.dispose([...grads.values()]);
    }
    const t1 = performance.now();
    let sumSq = this.span.share ? this.weightedSumOfSquares(gradN) : sumOfSquares(gradN);
    if (R > 1) sumSq = comm.allReduce(Float32Array.of(sumSq), 'sum')[0]!;
    if (this.span.reduce) sumSq = this.span.reduce(sumSq);
    const norm = Math.sqrt(sumSq);
    const t2 = performance.now();
    if (!Number.isFinite(norm)) {
      const nonFinite = this.nonFiniteHost(gradN);
      return { norm, nonFinite, syncMs: R > 1 ? t1 - t0 : 0, clipMs: t2 - t1, optimizerMs: 0 };
    }
    readFlat(layout, adam.range, paramsN);
    adam.step(gradN, paramsN, lr, clipScale(norm, this.clipNorm));
    const t3 = performance.now();
    if (R > 1) allGatherVariables(comm, layout, paramsN, {}, allN);
    else writeFlat(layout, paramsN);
    const t4 = performance.now();
    // On one rank nothing is exchanged: packing the gradients and writing the parameters back are
    // the update's own host traffic.
    const exchangeMs = t1 - t0 + (t4 - t3);
    return {
      norm,
      nonFinite: [],
      syncMs: R > 1 ? exchangeMs : 0,
      clipMs: t2 - t1,
      optimizerMs: t3 - t2 + (R > 1 ? 0 : exchangeMs),
    };
  }

  /** The sum of squares of this rank's range, each variable weighted by its `span.share`. */
  private weightedSumOfSquares(gradN: Float32Array): number {
    const { layout, adam } = this.host!;
    const { start, end } = adam.range;
    let total = 0;
    for (const { key, offset, size } of layout.entries) {
      const lo = Math.max(start, offset);
      const hi = Math.min(end, offset + size);
      if (lo < hi) total += this.span.share!(key) * sumOfSquares(gradN.subarray(lo - start, hi - start));
    }
    return total;
  }

  /** Names of the variables with a non-finite gradient value on any rank (a collective when R > 1). */
  private nonFiniteHost(gradN: Float32Array): string[] {
    const { layout, adam } = this.host!;
    const { start, end } = adam.range;
    const flags = new Int32Array(layout.entries.length);
    layout.entries.forEach(({ offset, size }, j) => {
      const lo = Math.max(start, offset);
      const hi = Math.min(end, offset + size);
      for (let i = lo; i < hi; i++) {
        if (!Number.isFinite(gradN[i - start]!)) {
          flags[j] = 1;
          break;
        }
      }
    });
    const all = this.comm.worldSize > 1 ? this.comm.allReduce(flags, 'max') : flags;
    return layout.entries.filter((_, j) => all[j] === 1).map((e) => e.key);
  }

  private applyBackend(grads: Map<string, tf.Tensor>, lr: number): AppliedStep {
    const t0 = performance.now();
    let synced = grads;
    if (this.comm.worldSize > 1) {
      try {
        this.experts?.reduce(grads);
        synced = allReduceGradients(this.comm, grads, this.named);
      } finally {
        tf.dispose([...grads.values()]);
      }
    }
    const t1 = performance.now();
    const syncMs = this.comm.worldSize > 1 ? t1 - t0 : 0; // one rank exchanges nothing
    try {
      const clip = this.experts ? this.expertClip(synced) : gradientClip(synced, this.clipNorm, this.span);
      const t2 = performance.now();
      if (clip.nonFinite.length > 0) {
        return {
          norm: clip.norm,
          nonFinite: clip.nonFinite,
          syncMs,
          clipMs: t2 - t1,
          optimizerMs: 0,
        };
      }
      this.backend!.step(synced, lr, clip.scale);
      return {
        norm: clip.norm,
        nonFinite: [],
        syncMs,
        clipMs: t2 - t1,
        optimizerMs: performance.now() - t2,
      };
    } finally {
      tf.dispose([...synced.values()]);
    }
  }

  /**
   * The clip of gradients some of which are expert slots: the replicated gradients' squared norm
   * (the same on every rank) plus the slots' shares summed over ranks, and the slots named as
   * non-finite on any rank. A collective.
   */
  private expertClip(synced: ReadonlyMap<string, tf.Tensor>): ClipResult {
    const experts = this.experts!;
    const replicated = new Map([...synced].filter(([name]) => !experts.owns(name)));
    const slots = new Map([...synced].filter(([name]) => experts.owns(name)));
    const local = gradientClip(replicated, 0);
    const slotNames = [...slots.keys()];
    const bad = new Set(gradientClip(slots, 0).nonFinite);
    // [share, one flag per slot variable], summed over ranks
    const buf = new Float32Array(1 + slotNames.length);
    buf[0] = experts.squaredNormShare(slots);
    slotNames.forEach((name, i) => {
      buf[1 + i] = bad.has(name) ? 1 : 0;
    });
    this.comm.allReduce(buf, 'sum', { inPlace: true });
    const norm = Math.sqrt(local.norm * local.norm + buf[0]!);
    const nonFinite = [...local.nonFinite, ...slotNames.filter((_, i) => buf[1 + i]! > 0)];
    return { norm, nonFinite, scale: clipScale(norm, this.clipNorm) };
  }

  /** The AdamW moments of variable `name` (backend placement), e.g. to move them with the variable; undefined on the host placement. */
  moments(name: string): { readonly m: tf.Variable; readonly v: tf.Variable } | undefined {
    return this.backend?.moments(name);
  }

  /**
   * The moments as named tensors for a checkpoint (`m/<name>`, `v/<name>`). With the host placement
   * on several ranks this gathers every rank's range: a collective. Dispose them with
   * {@link OptimizerStep.releaseState}.
   */
  stateTensors(): Record<string, tf.Tensor> {
    if (this.backend) return this.backend.stateTensors();
    const { layout, adam } = this.host!;
    const gather = (part: Float32Array): Float32Array =>
      this.comm.worldSize > 1 ? allGatherFlat(this.comm, layout, part) : part;
    return momentTensors(layout, gather(adam.m), gather(adam.v));
  }

  /** Releases tensors from {@link OptimizerStep.stateTensors} (the backend placement's are its own). */
  releaseState(state: Record<string, tf.Tensor>): void {
    if (this.host) tf.dispose(Object.values(state));
  }

  /** Restores moments saved by {@link OptimizerStep.stateTensors} (from either placement) and the step count. */
  loadState(stepCount: number, tensors: Readonly<Record<string, tf.Tensor | Float32Array>>): void {
    if (this.host) this.host.adam.loadState(stepCount, tensors);
    else this.backend!.loadState(stepCount, tensors);
  }

  dispose(): void {
    this.backend?.dispose();
  }
}

/** The sum of squares of `x`, in double precision. */
function sumOfSquares(x: Float32Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return s;
}
