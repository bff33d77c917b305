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

  /** Applies one update with learning rate `lr`; `grads` maps variable names to gradients (missing: zero). */
  step(grads: ReadonlyMap<string, tf.Tensor>, lr: number): void {
    this.stepCount += 1;
    const { beta1, beta2, eps, weightDecay } = this.cfg;
    const bc1 = 1 - beta1 ** this.stepCount;
    const bc2 = 1 - beta2 ** this.stepCount;
    tf.tidy(() => {
      for (const [name, w] of this.vars) {
        const g = grads.get(name);
        if (!g) continue;
        const m = this.m.get(name)!;
        const v = this.v.get(name)!;
        const m1 = m.mul(beta1).add(g.mul(1 - beta1));
        const v1 = v.mul(beta2).add(g.square().mul(1 - beta2));
        m.assign(m1);
        v.assign(v1);
        const update = m1.div(bc1).div(v1.div(bc2).sqrt().add(eps));
        let w1 = w.sub(update.mul(lr));
        if (weightDecay > 0 && this.decayed.has(name)) w1 = w1.sub(w.mul(lr * weightDecay));
        w.assign(w1);
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
 * Measures the global gradient norm and scales the gradients in place (replacing the map's tensors)
 * so the norm is at most `maxNorm`; `maxNorm` 0 disables clipping. Non-finite gradients are reported,
 * not scaled.
 *
 * When to use: after accumulating a step's gradients and before `AdamW.step`.
 *
 * @example
 * ```ts
 * const { norm } = clipByGlobalNorm(grads, 1.0);
 * ```
 */
export function clipByGlobalNorm(grads: Map<string, tf.Tensor>, maxNorm: number): ClipResult {
  const names = [...grads.keys()];
  // Per variable: sum of squares and a flag for NaN / Infinity (a sum can overflow while values are finite).
  const packed = tf.tidy(() =>
    tf.stack(
      names.flatMap((n) => {
        const g = grads.get(n)!;
        return [g.square().sum(), g.isFinite().logicalNot().any().cast('float32')];
      }),
    ),
  );
  const stats = packed.dataSync() as Float32Array;
  packed.dispose();
  let total = 0;
  const nonFinite: string[] = [];
  names.forEach((n, i) => {
    if (stats[2 * i + 1]! > 0) nonFinite.push(n);
    total += stats[2 * i]!;
  });
  const norm = Math.sqrt(total);
  let scale = 1;
  if (maxNorm > 0 && Number.isFinite(norm) && norm > maxNorm) {
    scale = maxNorm / (norm + 1e-6);
    for (const n of names) {
      const g = grads.get(n)!;
      grads.set(
        n,
        tf.tidy(() => g.mul(scale)),
      );
      g.dispose();
    }
  }
  return { norm, nonFinite, scale };
}
