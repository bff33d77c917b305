/**
 * AdamW (decoupled weight decay) over named variables, with moments the trainer can save and restore,
 * and the gradient utilities of an optimizer step: accumulation over micro-batches and clipping by
 * global norm.
 */
import { SwitchyardError, tf } from '@switchyard/tensor';

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
    const decay = cfg.decay ?? ((_name: string, v: tf.Variable) => v.rank >= 2);
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
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - beta1 ** this.stepCount;
    const bc2 = 1 - beta2 ** this.stepCount;
    // w -= lr * m^ / (sqrt(v^) + eps) + lr * wd * w, in 14 elementwise ops per variable:
    // m^ / (sqrt(v^) + eps) = m * (1 / bc1) / (sqrt(v) / sqrt(bc2) + eps).
    const mScale = (1 - beta1) * gradScale;
    const vScale = (1 - beta2) * gradScale * gradScale;
    const step = lr / bc1;
    const vNorm = 1 / Math.sqrt(bc2);
    tf.tidy(() => {
      for (const [name, w] of this.vars) {
        const g = grads.get(name);
        if (!g) continue;
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        const m1 = m.mul(beta1).add(g.mul(mScale));
        const v1 = v.mul(beta2).add(g.square().mul(vScale));
        m.assign(m1);
        v.assign(v1);
        const update = m1.mul(step).div(v1.sqrt().mul(vNorm).add(eps));
        const kept = weightDecay > 0 && this.decayed.has(name) ? w.mul(1 - lr * weightDecay) : w;
        w.assign(kept.sub(update));
      }
    });
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
        const saved = tensors[`${kind}/${name}`];
        if (saved === undefined) {
          throw new SwitchyardError('CHECKPOINT_INVALID', `optimizer state lacks ${kind}/${name}`);
        }
        const size = saved instanceof Float32Array ? saved.length : saved.size;
        if (size !== variable.size) {
          throw new SwitchyardError(
            'CHECKPOINT_INVALID',
            `optimizer state ${kind}/${name} has ${size} values, the model variable ${variable.size}`,
          );
        }
        tf.tidy(() =>
          variable.assign(
            tf.tensor(saved instanceof Float32Array ? saved : saved.dataSync(), variable.shape, 'float32'),
          ),
        );
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
export function gradientClip(grads: ReadonlyMap<string, tf.Tensor>, maxNorm: number): ClipResult {
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
    total += sq;
  });
  const norm = Math.sqrt(total);
  const scale = maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm ? maxNorm / (norm + 1e-6) : 1;
  return { norm, nonFinite, scale };
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
