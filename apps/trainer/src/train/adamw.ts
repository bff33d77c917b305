/**
 * AdamW (decoupled weight decay) over named variables, with moments the trainer can save and restore,
 * and the gradient utilities of an optimizer step: accumulation over micro-batches and clipping by
 * global norm.
 */
import type { FlatLayout, FlatRange } from '@switchyard/parallel';
import { adamWUpdate, SwitchyardError, tf } from '@switchyard/tensor';

/** Hyper-parameters of {@link AdamW}. */
export interface AdamWConfig {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  /** Decoupled weight decay, applied as `w -= lr * weightDecay * w` to decayed variables. */
  readonly weightDecay: number;
  /** Which variables get weight decay (default: rank >= 2, i.e. matrices and embeddings, not norms or biases). */
  readonly decay?: (name: string, v: tf.Variable) => boolean;
}

/**
 * AdamW with bias correction. Moments live in tensors named `m/<variable>` and `v/<variable>`.
 *
 * When to use: one `step(grads, lr)` per optimizer step; `state()` / `loadState()` for checkpoints.
 *
 * @example
 * ```ts
 * const opt = new AdamW(model.namedVariables(), { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
 * opt.step(grads, 1e-3);
 * ```
 */
export class AdamW {
  private readonly vars: ReadonlyMap<string, tf.Variable>;
  private readonly m = new Map<string, tf.Variable>();
  private readonly v = new Map<string, tf.Variable>();
  private readonly decayed = new Set<string>();
  private readonly cfg: AdamWConfig;
  /** Number of updates applied so far. */
  stepCount = 0;

  constructor(vars: ReadonlyMap<string, tf.Variable>, cfg: AdamWConfig) {
    this.vars = vars;
    this.cfg = cfg;
    const decay = cfg.decay ?? decayMatrices;
    for (const [name, variable] of vars) {
      this.m.set(name, zerosVariable(variable, `adamw/m/${name}/${uid()}`));
      this.v.set(name, zerosVariable(variable, `adamw/v/${name}/${uid()}`));
      if (decay(name, variable)) this.decayed.add(name);
    }
  }

  /**
   * Applies one update with learning rate `lr`; `grads` maps variable names to gradients (missing:
   * zero), each multiplied by `gradScale` first (the clipping factor from {@link gradientClip}).
   */
  step(grads: ReadonlyMap<string, tf.Tensor>, lr: number, gradScale = 1): void {
    this.stepCount += 1;
    const { beta1, beta2, eps, mScale, vScale, step, vNorm, keep } = adamCoefficients(
      this.cfg,
      this.stepCount,
      lr,
      gradScale,
    );
    // One fused update per variable (one pass over memory on wasm; see adamCoefficients).
    const c = { beta1, beta2, mScale, vScale, step, vNorm, eps, keep };
    tf.tidy(() => {
      for (const [name, w] of this.vars) {
        const g = grads.get(name);
        if (!g) continue;
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        const [w1, m1, v1] = adamWUpdate(w, m, v, g, c, this.decayed.has(name));
        m.assign(m1);
        v.assign(v1);
        w.assign(w1);
      }
    });
  }

  /** The moment variables of variable `name` (to move them along with it), or undefined for an unknown name. */
  moments(name: string): { readonly m: tf.Variable; readonly v: tf.Variable } | undefined {
    const m = this.m.get(name);
    const v = this.v.get(name);
    return m && v ? { m, v } : undefined;
  }

  /** The moments as named tensors (`m/<name>`, `v/<name>`); the caller must not dispose them. */
  stateTensors(): Record<string, tf.Tensor> {
    const out: Record<string, tf.Tensor> = {};
    for (const [name, t] of this.m) out[`m/${name}`] = t;
    for (const [name, t] of this.v) out[`v/${name}`] = t;
    return out;
  }

  /** Restores moments saved by {@link stateTensors} and the step count. */
  loadState(stepCount: number, tensors: Readonly<Record<string, tf.Tensor | Float32Array>>): void {
    for (const [kind, store] of [
      ['m', this.m],
      ['v', this.v],
    ] as const) {
      for (const [name, variable] of store) {
        const saved = savedMoment(tensors, `${kind}/${name}`, variable.size);
        tf.tidy(() => variable.assign(tf.tensor(saved, variable.shape, 'float32')));
      }
    }
    this.stepCount = stepCount;
  }

  dispose(): void {
    for (const t of this.m.values()) t.dispose();
    for (const t of this.v.values()) t.dispose();
    this.m.clear();
    this.v.clear();
  }
}

/**
 * The scalars of one AdamW update, so that both implementations compute
 * `w <- keep * w - step * m1 / (sqrt(v1) * vNorm + eps)` with `m1 = beta1 * m + mScale * g` and
 * `v1 = beta2 * v + vScale * g^2`: the bias-corrected `lr * m^ / (sqrt(v^) + eps)` with the clipping
 * factor folded into the moment updates and `keep = 1 - lr * weightDecay` (decoupled weight decay).
 */
function adamCoefficients(cfg: AdamWConfig, stepCount: number, lr: number, gradScale: number) {
  const { beta1, beta2, eps, weightDecay } = cfg;
  return {
    beta1,
    beta2,
    eps,
    mScale: (1 - beta1) * gradScale,
    vScale: (1 - beta2) * gradScale * gradScale,
    step: lr / (1 - beta1 ** stepCount),
    vNorm: 1 / Math.sqrt(1 - beta2 ** stepCount),
    keep: weightDecay > 0 ? 1 - lr * weightDecay : 1,
  };
}

/** The default decay rule: matrices and embeddings (rank >= 2), not norms or biases. */
const decayMatrices = (_name: string, v: tf.Variable): boolean => v.rank >= 2;

/**
 * AdamW on host memory over one contiguous range of a flat parameter layout (see `flatLayout` in
 * @switchyard/parallel): the same update as {@link AdamW}, computed in one JavaScript pass over
 * Float32Arrays. Under data parallelism each rank owns one range (ZeRO stage 1): it keeps the
 * moments of that range only and updates those parameters only; on one rank the range is everything.
 * A variable with no gradient counts as a zero gradient (its moments decay, its weights still move).
 *
 * When to use: for a data-parallel run on a backend whose tensors live in host memory (wasm, cpu)
 * when the optimizer's memory matters: each rank keeps 1/R of the moments (`train.optimizerOn: host`).
 * {@link AdamW}'s vectorised tensor ops are faster on one rank, and whole steps were faster with them
 * on 2 wasm ranks too.
 *
 * @example
 * ```ts
 * const layout = flatLayout(model.namedVariables());
 * const opt = new HostAdamW(layout, flatRange(layout, 0, 1), { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });
 * const paramsN = readFlat(layout);
 * opt.step(reduceScatterGradients(comm, grads, layout), paramsN, 1e-3);
 * writeFlat(layout, paramsN);
 * ```
 */
export class HostAdamW {
  /** First moments of the range. */
  readonly m: Float32Array;
  /** Second moments of the range. */
  readonly v: Float32Array;
  /** Pieces of the range, relative to its start, and whether their variable is decayed. */
  private readonly segments: { readonly lo: number; readonly hi: number; readonly decay: boolean }[] = [];
  /** Number of updates applied so far. */
  stepCount = 0;

  constructor(
    readonly layout: FlatLayout,
    readonly range: FlatRange,
    private readonly cfg: AdamWConfig,
  ) {
    const n = range.end - range.start;
    if (!Number.isInteger(n) || n < 0 || range.start < 0 || range.end > layout.total) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `HostAdamW: range [${range.start}, ${range.end}) is not inside the layout's ${layout.total} values`,
      );
    }
    this.m = new Float32Array(n);
    this.v = new Float32Array(n);
    const decay = cfg.decay ?? decayMatrices;
    for (const { key, variable, offset, size } of layout.entries) {
      const lo = Math.max(range.start, offset);
      const hi = Math.min(range.end, offset + size);
      if (lo < hi)
        this.segments.push({ lo: lo - range.start, hi: hi - range.start, decay: decay(key, variable) });
    }
  }

  /**
   * Applies one update with learning rate `lr` to `paramsN` (this range's parameters, updated in
   * place) from `gradN` (this range's gradient), each gradient multiplied by `gradScale` first.
   */
  step(gradN: Float32Array, paramsN: Float32Array, lr: number, gradScale = 1): void {
    const n = this.m.length;
    if (gradN.length !== n || paramsN.length !== n) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `HostAdamW.step: expected ${n} gradient and parameter values (the range [${this.range.start}, ${this.range.end})), got ${gradN.length} and ${paramsN.length}`,
      );
    }
    this.stepCount += 1;
    const { beta1, beta2, eps, mScale, vScale, step, vNorm, keep } = adamCoefficients(
      this.cfg,
      this.stepCount,
      lr,
      gradScale,
    );
    const { m, v } = this;
    for (const seg of this.segments) {
      const k = seg.decay ? keep : 1;
      for (let i = seg.lo; i < seg.hi; i++) {
        const g = gradN[i]!;
        const m1 = Math.fround(beta1 * m[i]! + mScale * g);
        const v1 = Math.fround(beta2 * v[i]! + vScale * g * g);
        m[i] = m1;
        v[i] = v1;
        paramsN[i] = k * paramsN[i]! - (step * m1) / (Math.sqrt(v1) * vNorm + eps);
      }
    }
  }

  /** Restores this range of moments saved as `m/<name>`, `v/<name>` (see {@link momentTensors}) and the step count. */
  loadState(stepCount: number, tensors: Readonly<Record<string, tf.Tensor | Float32Array>>): void {
    const { start, end } = this.range;
    for (const [kind, store] of [
      ['m', this.m],
      ['v', this.v],
    ] as const) {
      for (const { key, offset, size } of this.layout.entries) {
        const values = savedMoment(tensors, `${kind}/${key}`, size);
        const lo = Math.max(start, offset);
        const hi = Math.min(end, offset + size);
        if (lo < hi) store.set(values.subarray(lo - offset, hi - offset), lo - start);
      }
    }
    this.stepCount = stepCount;
  }
}

/**
 * Whole-layout moments (`mN`, `vN`: all `layout.total` values, e.g. gathered from every rank's
 * {@link HostAdamW}) as the named tensors {@link AdamW.stateTensors} saves, so checkpoints of both
 * optimizers are interchangeable. The caller disposes them.
 *
 * When to use: to checkpoint a {@link HostAdamW}.
 *
 * @example
 * ```ts
 * const state = momentTensors(layout, allGatherFlat(comm, layout, opt.m), allGatherFlat(comm, layout, opt.v));
 * ```
 */
export function momentTensors(
  layout: FlatLayout,
  mN: Float32Array,
  vN: Float32Array,
): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [kind, values] of [
    ['m', mN],
    ['v', vN],
  ] as const) {
    for (const { key, variable, offset, size } of layout.entries) {
      out[`${kind}/${key}`] = tf.tensor(values.subarray(offset, offset + size), variable.shape, 'float32');
    }
  }
  return out;
}

/** The values of moment `name` in saved optimizer state, checked to hold `size` values. */
function savedMoment(
  tensors: Readonly<Record<string, tf.Tensor | Float32Array>>,
  name: string,
  size: number,
): Float32Array {
  const saved = tensors[name];
  if (saved === undefined) throw new SwitchyardError('CHECKPOINT_INVALID', `optimizer state lacks ${name}`);
  const values = saved instanceof Float32Array ? saved : (saved.dataSync() as Float32Array);
  if (values.length !== size) {
    throw new SwitchyardError(
      'CHECKPOINT_INVALID',
      `optimizer state ${name} has ${values.length} values, the model variable ${size}`,
    );
  }
  return values;
}

/** A non-trainable zero variable shaped like `like` (the initial tensor is released). */
function zerosVariable(like: tf.Variable, name: string): tf.Variable {
  const init = tf.zerosLike(like);
  const v = tf.variable(init, false, name);
  init.dispose();
  return v;
}

let counter = 0;
function uid(): number {
  counter += 1;
  return counter;
}

/**
 * Sums gradients over the micro-batches of one optimizer step.
 *
 * When to use: add each micro-batch's gradients (already divided by the number of micro-batches),
 * then `take()` the sums at the end of the step (or `reset()` to drop them).
 *
 * @example
 * ```ts
 * const acc = new GradAccumulator();
 * acc.add(tf.variableGrads(lossFn).grads);
 * ```
 */
export class GradAccumulator {
  private readonly sums = new Map<string, tf.Tensor>();

  /** Adds gradients and disposes them. */
  add(grads: Readonly<Record<string, tf.Tensor>>): void {
    for (const [name, g] of Object.entries(grads)) {
      const prev = this.sums.get(name);
      if (prev) {
        this.sums.set(
          name,
          tf.tidy(() => prev.add(g)),
        );
        prev.dispose();
        g.dispose();
      } else {
        this.sums.set(name, g);
      }
    }
  }

  get grads(): ReadonlyMap<string, tf.Tensor> {
    return this.sums;
  }

  /** Hands the summed gradients to the caller (who disposes them) and starts empty. */
  take(): Map<string, tf.Tensor> {
    const out = new Map(this.sums);
    this.sums.clear();
    return out;
  }

  reset(): void {
    for (const t of this.sums.values()) t.dispose();
    this.sums.clear();
  }
}

/** Result of {@link clipByGlobalNorm}. */
export interface ClipResult {
  /** Global L2 norm of the gradients before clipping (may be NaN or Infinity). */
  readonly norm: number;
  /** Names of variables whose gradient holds NaN or Infinity, in iteration order. */
  readonly nonFinite: readonly string[];
  /** Scale applied to every gradient (1 when the norm is below the threshold). */
  readonly scale: number;
}

/**
 * How one rank's gradients enter a global norm that spans the variables of several ranks (pipeline
 * stages): each variable's squared norm is weighted, and the rank's sum is reduced over the ranks.
 */
export interface NormSpan {
  /** Weight of a variable's squared norm, by name: 1 / the number of ranks holding it, so a shared variable counts once. */
  readonly share?: (name: string) => number;
  /** Sums the weighted squared norms of every rank (a collective every rank calls once per step). */
  readonly reduce?: (sumSq: number) => number;
}

/**
 * The global L2 norm of `grads` and the clipping factor for `maxNorm`, without touching the gradients:
 * pass `scale` to {@link AdamW.step}, which folds it into the update at no extra cost. `maxNorm` 0
 * disables clipping; variables whose gradient holds NaN or Infinity are named in `nonFinite`.
 *
 * When to use: after accumulating a step's gradients and before `AdamW.step(grads, lr, scale)`.
 *
 * @example
 * ```ts
 * const clip = gradientClip(grads, 1.0);
 * if (clip.nonFinite.length === 0) opt.step(grads, lr, clip.scale);
 * ```
 */
export function gradientClip(
  grads: ReadonlyMap<string, tf.Tensor>,
  maxNorm: number,
  span: NormSpan = {},
): ClipResult {
  const names = [...grads.keys()];
  // One sum of squares per variable: two ops each. A non-finite sum means a NaN or Infinity in the
  // gradient, or (rarely) finite values whose squares overflow; only then is the gradient checked.
  const packed = tf.tidy(() => tf.stack(names.map((n) => grads.get(n)!.square().sum())));
  const sums = packed.dataSync() as Float32Array;
  packed.dispose();
  let total = 0;
  const nonFinite: string[] = [];
  names.forEach((n, i) => {
    const sq = sums[i]!;
    if (!Number.isFinite(sq)) {
      const finite = tf.tidy(() => grads.get(n)!.isFinite().all().dataSync()[0]);
      if (!finite) nonFinite.push(n);
    }
    total += span.share ? sq * span.share(n) : sq;
  });
  const norm = Math.sqrt(span.reduce ? span.reduce(total) : total);
  return { norm, nonFinite, scale: clipScale(norm, maxNorm) };
}

/**
 * The factor that brings gradients of global L2 norm `norm` down to `maxNorm`: 1 at or below it, and
 * 1 when `maxNorm` is 0 (no clipping) or the norm is not finite.
 *
 * @example
 * ```ts
 * clipScale(4, 1); // ~0.25
 * ```
 */
export function clipScale(norm: number, maxNorm: number): number {
  return maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
}

/**
 * Measures the global gradient norm and scales the gradients in place (replacing the map's tensors)
 * so the norm is at most `maxNorm`; `maxNorm` 0 disables clipping. Non-finite gradients are reported,
 * not scaled. {@link gradientClip} with `AdamW.step(grads, lr, scale)` does the same without the extra
 * multiplication per variable.
 *
 * When to use: when the scaled gradients themselves are needed (e.g. for another optimizer).
 *
 * @example
 * ```ts
 * const { norm } = clipByGlobalNorm(grads, 1.0);
 * ```
 */
export function clipByGlobalNorm(grads: Map<string, tf.Tensor>, maxNorm: number): ClipResult {
  const clip = gradientClip(grads, maxNorm);
  if (clip.scale !== 1) {
    for (const [n, g] of grads) {
      grads.set(
        n,
        tf.tidy(() => g.mul(clip.scale)),
      );
      g.dispose();
    }
  }
  return clip;
}
