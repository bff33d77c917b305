/**
 * Auxiliary-loss-free balancing (Wang et al. 2024; DeepSeek-V3): a per-layer, per-expert bias added
 * to the scores for expert selection only. After each optimizer step, with counts pooled over the
 * whole step (all micro-batches, all ranks): b_i += u * sign(mean(c) - c_i). The bias gets no gradient
 * and never changes combine weights.
 *
 * Shape letters: L MoE layers, E routed experts.
 */
import { checkInt, invalidArgument, SwitchyardError } from '@switchyard/tensor';
import type { AllReduceFn } from './global';
import { checkCountsE, checkKey, isPromiseLike, type MaybePromise } from './internal/common';
import { maxVio } from './metrics';

/** Bias update rate as a function of the optimizer step (0-based). */
export type UpdateRateSchedule = (step: number) => number;

/** Settings of {@link LossFreeBalancer}. */
export interface LossFreeBalancerConfig {
  /** MoE layers L, each with its own bias vector. */
  readonly numLayers: number;
  /** Routed experts E per layer. */
  readonly numExperts: number;
  /** Update rate u: a constant or a schedule of the optimizer step (DeepSeek-V3: 1e-3, then 0 for the last tokens). */
  readonly updateRate: number | UpdateRateSchedule;
  /** Sums the step's pooled counts (one L*E vector) over data-parallel ranks; the identity in one process. */
  readonly allReduce: AllReduceFn;
}

/** Defaults of {@link LossFreeBalancer}: u = 1e-3, one process. */
export const defaultLossFreeBalancerConfig: Omit<LossFreeBalancerConfig, 'numLayers' | 'numExperts'> = {
  updateRate: 1e-3,
  allReduce: (valuesE) => valuesE,
};

/** What one {@link LossFreeBalancer.step} did. */
export interface LossFreeStepResult {
  /** The optimizer step the update belongs to (0-based). */
  readonly step: number;
  /** The update rate u applied. */
  readonly rate: number;
  /** MaxVio of each layer's counts pooled over the step (NaN for a layer that saw no tokens). */
  readonly maxVioByLayer: readonly number[];
}

/** JSON-serialisable state of a {@link LossFreeBalancer}, for checkpoints. */
export interface LossFreeBalancerState {
  readonly version: 1;
  readonly numLayers: number;
  readonly numExperts: number;
  /** Optimizer steps taken. */
  readonly step: number;
  /** Bias vectors [L][E]. */
  readonly biases: readonly (readonly number[])[];
  /** Counts observed since the last step [L][E] (all zero between steps). */
  readonly pendingCounts: readonly (readonly number[])[];
}

/**
 * Piecewise-constant schedule: `values[0]` before `boundaries[0]`, `values[i]` for steps in
 * `[boundaries[i-1], boundaries[i])`, the last value after the last boundary.
 *
 * When to use: a loss-free update rate that drops to 0 late in training, as DeepSeek-V3 did.
 *
 * @example
 * ```ts
 * const u = piecewiseConstant([9000], [1e-3, 0]); // 1e-3 for steps 0..8999, then 0
 * const balancer = new LossFreeBalancer({ numLayers: 4, numExperts: 16, updateRate: u });
 * ```
 */
export function piecewiseConstant(
  boundaries: readonly number[],
  values: readonly number[],
): UpdateRateSchedule {
  const fn = 'piecewiseConstant';
  if (!Array.isArray(boundaries)) throw invalidArgument(fn, 'boundaries', 'an array of steps', boundaries);
  if (!Array.isArray(values) || values.length !== boundaries.length + 1) {
    throw invalidArgument(
      fn,
      'values',
      `an array of boundaries.length + 1 = ${boundaries.length + 1} numbers`,
      values,
    );
  }
  boundaries.forEach((b, i) => {
    checkInt(fn, `boundaries[${i}]`, b, { min: i === 0 ? 0 : boundaries[i - 1]! + 1 });
  });
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw invalidArgument(fn, `values[${i}]`, 'a finite number >= 0', v);
    }
  });
  const bs = boundaries.slice();
  const vs = values.slice();
  return (step) => {
    let i = 0;
    while (i < bs.length && step >= bs[i]!) i++;
    return vs[i]!;
  };
}

/**
 * The loss-free bias controller. Owns one bias vector per MoE layer; the router reads it through
 * {@link LossFreeBalancer.bias} (RouteOptions.selectionBiasE). {@link LossFreeBalancer.observe} pools
 * each micro-batch's counts; {@link LossFreeBalancer.step}, called once after each optimizer step,
 * all-reduces the pooled counts, applies `b_i += u * sign(mean(c) - c_i)` and clears the pool.
 *
 * Recomputation never double-counts: pass the micro-batch id as `key` to `observe`; a second observe
 * of the same (layer, key) in one step (an activation-checkpointing recompute) is ignored.
 *
 * When to use: balancing sigmoid (or softmax) routers without an auxiliary loss's interference
 * gradient; combine with a small {@link sequenceAuxLoss} if single sequences must not collapse.
 *
 * @example
 * ```ts
 * const lf = new LossFreeBalancer({ numLayers: 2, numExperts: 8, updateRate: 1e-3 });
 * for (const [m, micro] of microBatches.entries()) {
 *   const plan = router.route(micro.xTD, { training: true, selectionBiasE: lf.bias(0) });
 *   lf.observe(0, plan.countsE, m);
 * }
 * optimizer.step();
 * lf.step();
 * saveJson('balance.json', lf.state());
 * ```
 */
export class LossFreeBalancer {
  readonly config: LossFreeBalancerConfig;
  private readonly biasLE: Float32Array[];
  private readonly countsLE: Float64Array[];
  private readonly seen = new Set<string>();
  private steps = 0;
  private pending = false;

  constructor(
    config: Partial<LossFreeBalancerConfig> & Pick<LossFreeBalancerConfig, 'numLayers' | 'numExperts'>,
  ) {
    const fn = 'LossFreeBalancer';
    const c = { ...defaultLossFreeBalancerConfig, ...config };
    checkInt(fn, 'config.numLayers', c.numLayers, { min: 1 });
    checkInt(fn, 'config.numExperts', c.numExperts, { min: 1 });
    if (typeof c.updateRate === 'number') {
      if (!Number.isFinite(c.updateRate) || c.updateRate < 0) {
        throw invalidArgument(
          fn,
          'config.updateRate',
          'a finite number >= 0 or a schedule function',
          c.updateRate,
        );
      }
    } else if (typeof c.updateRate !== 'function') {
      throw invalidArgument(
        fn,
        'config.updateRate',
        'a finite number >= 0 or a schedule function',
        c.updateRate,
      );
    }
    if (typeof c.allReduce !== 'function')
      throw invalidArgument(fn, 'config.allReduce', 'a function', c.allReduce);
    this.config = c;
    this.biasLE = Array.from({ length: c.numLayers }, () => new Float32Array(c.numExperts));
    this.countsLE = Array.from({ length: c.numLayers }, () => new Float64Array(c.numExperts));
  }

  /** Optimizer steps taken so far. */
  get stepCount(): number {
    return this.steps;
  }

  private checkLayer(fn: string, layer: number): number {
    return checkInt(fn, 'layer', layer, { min: 0, max: this.config.numLayers - 1 });
  }

  /** The bias vector of `layer` (a copy), for RouteOptions.selectionBiasE. */
  bias(layer: number): Float32Array {
    return this.biasLE[this.checkLayer('LossFreeBalancer.bias', layer)]!.slice();
  }

  /** Counts observed for `layer` since the last step (a copy). */
  pendingCountsE(layer: number): Float64Array {
    return this.countsLE[this.checkLayer('LossFreeBalancer.pendingCountsE', layer)]!.slice();
  }

  /** The update rate u at optimizer step `step` (default: the next update's step). */
  rate(step: number = this.steps): number {
    const u =
      typeof this.config.updateRate === 'number' ? this.config.updateRate : this.config.updateRate(step);
    if (typeof u !== 'number' || !Number.isFinite(u) || u < 0) {
      throw invalidArgument(
        'LossFreeBalancer.rate',
        `the updateRate schedule at step ${step}`,
        'a finite number >= 0',
        u,
      );
    }
    return u;
  }

  /**
   * Adds one micro-batch's counts (c_i before dropping) of `layer` to the step's pool. With `key`,
   * a repeated (layer, key) in the same step is ignored, so recomputed forwards never double-count.
   */
  observe(layer: number, countsE: ArrayLike<number>, key?: number | string): void {
    const fn = 'LossFreeBalancer.observe';
    if (this.pending)
      throw new SwitchyardError('STATE_INVALID', `${fn}() was called while step() is pending`);
    const l = this.checkLayer(fn, layer);
    const k = checkKey(fn, key);
    const counts = checkCountsE(fn, 'countsE', countsE, this.config.numExperts);
    if (k !== undefined) {
      const id = `${l}|${k}`;
      if (this.seen.has(id)) return;
      this.seen.add(id);
    }
    const pool = this.countsLE[l]!;
    for (let i = 0; i < counts.length; i++) pool[i]! += counts[i]!;
  }

  /**
   * Ends the optimizer step: sums the pooled counts over ranks, moves every bias by
   * `u * sign(mean(c) - c_i)`, clears the pool. Call once per optimizer step, after the update.
   * Returns a promise only when the all-reduce does.
   */
  step(): MaybePromise<LossFreeStepResult> {
    const fn = 'LossFreeBalancer.step';
    if (this.pending)
      throw new SwitchyardError('STATE_INVALID', `${fn}() was called while a previous step() is pending`);
    const { numLayers: L, numExperts: E } = this.config;
    const flatLE = new Float32Array(L * E);
    this.countsLE.forEach((c, l) => {
      flatLE.set(c, l * E);
    });
    const u = this.rate();
    const reduced = this.config.allReduce(flatLE);
    const finish = (summedLE: Float32Array): LossFreeStepResult => {
      const all = checkCountsE(fn, 'the allReduce() result', summedLE, L * E);
      const maxVioByLayer: number[] = [];
      for (let l = 0; l < L; l++) {
        const cE = all.subarray(l * E, (l + 1) * E);
        let mean = 0;
        for (let i = 0; i < E; i++) mean += cE[i]! / E;
        const b = this.biasLE[l]!;
        for (let i = 0; i < E; i++) b[i]! += u * Math.sign(mean - cE[i]!);
        maxVioByLayer.push(maxVio(cE));
        this.countsLE[l]!.fill(0);
      }
      this.seen.clear();
      const result = { step: this.steps, rate: u, maxVioByLayer };
      this.steps++;
      return result;
    };
    if (!isPromiseLike(reduced)) return finish(reduced);
    this.pending = true;
    return reduced.then(finish).finally(() => {
      this.pending = false;
    });
  }

  /** The controller's state as plain JSON (biases, step, counts pooled since the last step). */
  state(): LossFreeBalancerState {
    if (this.pending) {
      throw new SwitchyardError(
        'STATE_INVALID',
        'LossFreeBalancer.state() was called while step() is pending',
      );
    }
    return {
      version: 1,
      numLayers: this.config.numLayers,
      numExperts: this.config.numExperts,
      step: this.steps,
      biases: this.biasLE.map((b) => Array.from(b)),
      pendingCounts: this.countsLE.map((c) => Array.from(c)),
    };
  }

  /** Restores a state from {@link LossFreeBalancer.state} (e.g. parsed from a checkpoint's JSON). */
  loadState(state: LossFreeBalancerState): void {
    const fn = 'LossFreeBalancer.loadState';
    if (this.pending)
      throw new SwitchyardError('STATE_INVALID', `${fn}() was called while step() is pending`);
    const { numLayers: L, numExperts: E } = this.config;
    if (state?.version !== 1) throw invalidArgument(fn, 'state.version', '1', state?.version);
    if (state.numLayers !== L || state.numExperts !== E) {
      throw invalidArgument(
        fn,
        'state',
        `a state of ${L} layers x ${E} experts`,
        `${state.numLayers} layers x ${state.numExperts} experts`,
      );
    }
    checkInt(fn, 'state.step', state.step, { min: 0 });
    const rows = (name: 'biases' | 'pendingCounts'): readonly (readonly number[])[] => {
      const v = state[name];
      if (!Array.isArray(v) || v.length !== L) throw invalidArgument(fn, `state.${name}`, `${L} rows`, v);
      return v;
    };
    const biases = rows('biases').map((row, l) => {
      if (!Array.isArray(row) || row.length !== E)
        throw invalidArgument(fn, `state.biases[${l}]`, `${E} numbers`, row);
      row.forEach((x, i) => {
        if (typeof x !== 'number' || !Number.isFinite(x)) {
          throw invalidArgument(fn, `state.biases[${l}][${i}]`, 'a finite number', x);
        }
      });
      return Float32Array.from(row);
    });
    const counts = rows('pendingCounts').map((row, l) =>
      checkCountsE(fn, `state.pendingCounts[${l}]`, row, E),
    );
    for (let l = 0; l < L; l++) {
      this.biasLE[l]!.set(biases[l]!);
      this.countsLE[l]!.set(counts[l]!);
    }
    this.steps = state.step;
    this.seen.clear();
  }
}
