/**
 * Balance losses whose frequencies f come from more than one micro-batch: the global-batch loss
 * (counts pooled over the micro-batches of one optimizer step and over data-parallel ranks) and the
 * shuffled-batch ablation (f from a random micro-batch-sized subset of the global batch's selections).
 * The mean scores P always stay local, so gradients flow through this micro-batch's scores only.
 *
 * Shape letters: T tokens of the local micro-batch, E routed experts, K slots per token,
 * N tokens pooled so far.
 */
import type { RoutingPlan } from '@switchyard/routing';
import { checkInt, invalidArgument, type Rng, SwitchyardError, scoped, type tf } from '@switchyard/tensor';
import {
  balanceWeightsE,
  checkBool,
  checkCoef,
  checkCountsE,
  checkKey,
  checkScores,
  isPromiseLike,
  type MaybePromise,
  meanScoresE,
  weightedSum,
} from './internal/common';
import type { ScoresAndCounts } from './losses';

/**
 * Sums an E-vector over data-parallel ranks (every rank gets the same sum). May answer synchronously
 * (worker threads with shared memory, or one process: the identity) or with a promise.
 */
export type AllReduceFn = (valuesE: Float32Array) => MaybePromise<Float32Array>;

/** Concatenates every rank's values in rank order (the identity in one process). */
export type AllGatherFn = (values: Int32Array) => MaybePromise<Int32Array>;

/** Settings of {@link GlobalAuxLoss}. */
export interface GlobalAuxLossConfig {
  /** Routed experts E of the layer. */
  readonly numExperts: number;
  /** Coefficient of the global term; the loss equals alpha at perfect global balance. */
  readonly alpha: number;
  /** Coefficient of an added micro-batch term on local counts (0: off; Qiu 2025 use 0.01 * alpha). */
  readonly localCoef: number;
  /** Micro-batches whose counts are pooled before the pool restarts (Infinity: the whole optimizer step). */
  readonly balanceWindow: number;
  /** Sums the counts over data-parallel ranks; the identity in one process. */
  readonly allReduce: AllReduceFn;
  /** Divide each token's scores by their sum before averaging (needed for sigmoid scores). */
  readonly normaliseScores: boolean;
}

/** Defaults of {@link GlobalAuxLoss} (alpha 1e-2, no local term, pool the whole step, one process). */
export const defaultGlobalAuxLossConfig: Omit<GlobalAuxLossConfig, 'numExperts'> = {
  alpha: 1e-2,
  localCoef: 0,
  balanceWindow: Number.POSITIVE_INFINITY,
  allReduce: (valuesE) => valuesE,
  normaliseScores: true,
};

function stateError(fn: string, what: string): SwitchyardError {
  return new SwitchyardError('STATE_INVALID', `${fn}() ${what}`);
}

/**
 * Global-batch balance loss (Qiu et al. 2025, Alg. 1; Megatron's `global_aux_loss`), one object per
 * MoE layer. Per micro-batch: {@link GlobalAuxLoss.accumulate} the plan's counts (all-reduced over
 * ranks, added to the pool), then {@link GlobalAuxLoss.loss} = `alpha * E * sum_i f_i P_i` with f from
 * the pooled counts and P from this micro-batch. Early micro-steps see partial counts. After the
 * optimizer step call {@link GlobalAuxLoss.resetAfterStep}. The loss is never divided by the number
 * of ranks.
 *
 * Recomputation safe: pass the micro-batch id as `key` to both calls; a repeated `accumulate` with a
 * key already seen this step is ignored and `loss` reuses the counts pooled when that key arrived.
 *
 * When to use: domain-homogeneous micro-batches under gradient accumulation or data parallelism,
 * where the micro-batch loss forces every sequence to spread over all experts.
 *
 * @example
 * ```ts
 * const gb = new GlobalAuxLoss({ numExperts: 8, alpha: 1e-2 }); // pass `allReduce` under data parallelism
 * for (const [m, micro] of microBatches.entries()) {
 *   const grads = tf.variableGrads(() => {
 *     const plan = router.route(micro.xTD, { training: true });
 *     gb.accumulate(plan.countsE, m);
 *     return tf.add(lmLoss(plan), gb.loss(plan, m));
 *   });
 * }
 * optimizer.step();
 * gb.resetAfterStep();
 * ```
 */
export class GlobalAuxLoss {
  readonly config: GlobalAuxLossConfig;
  private readonly poolE: Float64Array;
  private windowMicroBatches = 0;
  private current: Float64Array | undefined;
  private readonly byKey = new Map<string, Float64Array>();
  private pending = false;

  constructor(config: Partial<GlobalAuxLossConfig> & Pick<GlobalAuxLossConfig, 'numExperts'>) {
    const fn = 'GlobalAuxLoss';
    const c = { ...defaultGlobalAuxLossConfig, ...config };
    checkInt(fn, 'config.numExperts', c.numExperts, { min: 1 });
    checkCoef(fn, 'config.alpha', c.alpha);
    checkCoef(fn, 'config.localCoef', c.localCoef);
    if (c.balanceWindow !== Number.POSITIVE_INFINITY) {
      checkInt(fn, 'config.balanceWindow', c.balanceWindow, { min: 1 });
    }
    if (typeof c.allReduce !== 'function')
      throw invalidArgument(fn, 'config.allReduce', 'a function', c.allReduce);
    checkBool(fn, 'config.normaliseScores', c.normaliseScores);
    this.config = c;
    this.poolE = new Float64Array(c.numExperts);
  }

  /** Micro-batches pooled in the current window. */
  get microBatches(): number {
    return this.windowMicroBatches;
  }

  /** The pooled counts the next {@link GlobalAuxLoss.loss} call without a key uses (a copy). */
  pooledCountsE(): Float64Array {
    return this.current ? this.current.slice() : new Float64Array(this.config.numExperts);
  }

  /**
   * Adds one micro-batch's counts (c_i before dropping) to the pool, after summing them over ranks.
   * Returns a promise only when the all-reduce does; await it before {@link GlobalAuxLoss.loss}.
   */
  accumulate(countsE: ArrayLike<number>, key?: number | string): Promise<void> | undefined {
    const fn = 'GlobalAuxLoss.accumulate';
    if (this.pending) throw stateError(fn, 'was called while a previous all-reduce is still pending');
    const k = checkKey(fn, key);
    if (k !== undefined && this.byKey.has(k)) return undefined;
    const E = this.config.numExperts;
    const local = checkCountsE(fn, 'countsE', countsE, E);
    const reduced = this.config.allReduce(Float32Array.from(local));
    const finish = (summed: Float32Array): void => {
      const globalE = checkCountsE(fn, 'the allReduce() result', summed, E);
      if (this.windowMicroBatches >= this.config.balanceWindow) {
        this.poolE.fill(0);
        this.windowMicroBatches = 0;
      }
      for (let i = 0; i < E; i++) this.poolE[i]! += globalE[i]!;
      this.windowMicroBatches++;
      this.current = this.poolE.slice();
      if (k !== undefined) this.byKey.set(k, this.current);
    };
    if (!isPromiseLike(reduced)) {
      finish(reduced);
      return undefined;
    }
    this.pending = true;
    return reduced.then(finish).finally(() => {
      this.pending = false;
    });
  }

  /**
   * The loss for one micro-batch: `alpha * E * sum_i f_i P_i` with f from the pooled counts (as of the
   * `accumulate` with the same key, else the latest) and P from `plan.probsTE`, plus
   * `localCoef * E * sum_i f_local_i P_i` when `localCoef` > 0. A float32 scalar on the tape.
   */
  loss(plan: ScoresAndCounts, key?: number | string): tf.Scalar {
    const fn = 'GlobalAuxLoss.loss';
    if (this.pending) throw stateError(fn, 'was called before the pending accumulate() all-reduce finished');
    const k = checkKey(fn, key);
    const pooled = k === undefined ? this.current : this.byKey.get(k);
    if (pooled === undefined) {
      throw stateError(
        fn,
        k === undefined
          ? 'was called before accumulate() in this step'
          : `was called with key ${JSON.stringify(key)}, which no accumulate() of this step used`,
      );
    }
    const E = this.config.numExperts;
    checkScores(fn, plan.probsTE, E);
    const weightsE = balanceWeightsE(pooled, this.config.alpha);
    if (this.config.localCoef > 0) {
      const localE = balanceWeightsE(
        checkCountsE(fn, 'plan.countsE', plan.countsE, E),
        this.config.localCoef,
      );
      for (let i = 0; i < E; i++) weightsE[i]! += localE[i]!;
    }
    return scoped(() => weightedSum(meanScoresE(plan.probsTE, this.config.normaliseScores), weightsE));
  }

  /** Empties the pool; call once after each optimizer step. */
  resetAfterStep(): void {
    if (this.pending)
      throw stateError('GlobalAuxLoss.resetAfterStep', 'was called while an all-reduce is pending');
    this.poolE.fill(0);
    this.windowMicroBatches = 0;
    this.current = undefined;
    this.byKey.clear();
  }
}

/** Settings of {@link ShuffledBatchAuxLoss}. */
export interface ShuffledBatchAuxLossConfig {
  /** Routed experts E of the layer. */
  readonly numExperts: number;
  /** Loss coefficient; the loss equals alpha at perfect balance of the sampled subset. */
  readonly alpha: number;
  /** Draws the random subsets. */
  readonly rng: Rng;
  /** Gathers every rank's selections (row-major [N, K] expert indices); the identity in one process. */
  readonly allGather: AllGatherFn;
  /** Divide each token's scores by their sum before averaging (needed for sigmoid scores). */
  readonly normaliseScores: boolean;
}

/** Defaults of {@link ShuffledBatchAuxLoss}. */
export const defaultShuffledBatchAuxLossConfig: Omit<ShuffledBatchAuxLossConfig, 'numExperts' | 'rng'> = {
  alpha: 1e-2,
  allGather: (values) => values,
  normaliseScores: true,
};

/**
 * Shuffled-batch ablation (Qiu et al. 2025): like {@link GlobalAuxLoss}, but f comes from a random
 * subset, of micro-batch size, of the token selections pooled over the global batch so far. It keeps
 * the micro-batch loss's sample size while removing its correlation with the micro-batch's domain;
 * the paper finds it performs close to the global-batch loss.
 *
 * Recomputation safe with `key`, as in {@link GlobalAuxLoss}: the sampled subset is kept per key.
 *
 * When to use: experiments separating "more tokens in f" from "tokens from other domains in f".
 *
 * @example
 * ```ts
 * const sb = new ShuffledBatchAuxLoss({ numExperts: 8, rng: new Rng(1).fork('shuffled-lbl') });
 * sb.accumulate(plan, m);
 * const loss = sb.loss(plan, m);
 * ```
 */
export class ShuffledBatchAuxLoss {
  readonly config: ShuffledBatchAuxLossConfig;
  private poolNK = new Int32Array(0);
  private pooledTokens = 0;
  private k: number | undefined;
  private readonly seen = new Set<string>();
  private readonly sampledByKey = new Map<string, Float64Array>();
  private pending = false;

  constructor(
    config: Partial<ShuffledBatchAuxLossConfig> & Pick<ShuffledBatchAuxLossConfig, 'numExperts' | 'rng'>,
  ) {
    const fn = 'ShuffledBatchAuxLoss';
    const c = { ...defaultShuffledBatchAuxLossConfig, ...config };
    checkInt(fn, 'config.numExperts', c.numExperts, { min: 1 });
    checkCoef(fn, 'config.alpha', c.alpha);
    if (typeof c.rng?.int !== 'function') throw invalidArgument(fn, 'config.rng', 'an Rng', c.rng);
    if (typeof c.allGather !== 'function')
      throw invalidArgument(fn, 'config.allGather', 'a function', c.allGather);
    checkBool(fn, 'config.normaliseScores', c.normaliseScores);
    this.config = c;
  }

  /** Tokens pooled so far in this step (over ranks). */
  get tokens(): number {
    return this.pooledTokens;
  }

  /** Adds one micro-batch's selections (`plan.expertIdx`, [T, K] row-major) to the pool. */
  accumulate(plan: Pick<RoutingPlan, 'expertIdx' | 'k'>, key?: number | string): Promise<void> | undefined {
    const fn = 'ShuffledBatchAuxLoss.accumulate';
    if (this.pending) throw stateError(fn, 'was called while a previous all-gather is still pending');
    const k = checkKey(fn, key);
    if (k !== undefined && this.seen.has(k)) return undefined;
    const E = this.config.numExperts;
    const K = checkInt(fn, 'plan.k', plan.k, { min: 1, max: E });
    if (this.k !== undefined && K !== this.k) {
      throw invalidArgument(fn, 'plan.k', `the K of earlier micro-batches (${this.k})`, K);
    }
    const gathered = this.config.allGather(Int32Array.from(plan.expertIdx));
    const finish = (all: Int32Array): void => {
      if (all.length % K !== 0) {
        throw invalidArgument(fn, 'the allGather() result', `a multiple of K = ${K} indices`, all.length);
      }
      const need = (this.pooledTokens * K + all.length) | 0;
      if (need > this.poolNK.length) {
        const grown = new Int32Array(Math.max(need, 2 * this.poolNK.length));
        grown.set(this.poolNK.subarray(0, this.pooledTokens * K));
        this.poolNK = grown;
      }
      for (let j = 0; j < all.length; j++) {
        const e = all[j]!;
        if (!(e >= 0 && e < E)) throw invalidArgument(fn, `selection ${j}`, `an expert in [0, ${E - 1}]`, e);
      }
      this.poolNK.set(all, this.pooledTokens * K);
      this.pooledTokens += all.length / K;
      this.k = K;
      if (k !== undefined) this.seen.add(k);
    };
    if (!isPromiseLike(gathered)) {
      finish(gathered);
      return undefined;
    }
    this.pending = true;
    return gathered.then(finish).finally(() => {
      this.pending = false;
    });
  }

  /** Counts of a random subset of `T` pooled tokens (without replacement). */
  private sampleCounts(fn: string, T: number): Float64Array {
    const N = this.pooledTokens;
    const K = this.k!;
    if (T > N) throw stateError(fn, `needs at least ${T} pooled tokens (the micro-batch size), got ${N}`);
    const order = new Int32Array(N);
    for (let i = 0; i < N; i++) order[i] = i;
    const countsE = new Float64Array(this.config.numExperts);
    for (let j = 0; j < T; j++) {
      const r = j + this.config.rng.int(N - j);
      const t = order[r]!;
      order[r] = order[j]!;
      order[j] = t;
      for (let s = 0; s < K; s++) countsE[this.poolNK[t * K + s]!]! += 1;
    }
    return countsE;
  }

  /**
   * `alpha * E * sum_i f_i P_i` with f from T pooled tokens drawn at random (T = this micro-batch's
   * size; the same draw again for a repeated key) and P from `plan.probsTE`.
   */
  loss(plan: Pick<RoutingPlan, 'probsTE'>, key?: number | string): tf.Scalar {
    const fn = 'ShuffledBatchAuxLoss.loss';
    if (this.pending) throw stateError(fn, 'was called before the pending accumulate() all-gather finished');
    const k = checkKey(fn, key);
    if (this.pooledTokens === 0) throw stateError(fn, 'was called before accumulate() in this step');
    const [T] = checkScores(fn, plan.probsTE, this.config.numExperts);
    let countsE = k === undefined ? undefined : this.sampledByKey.get(k);
    if (countsE === undefined) {
      countsE = this.sampleCounts(fn, T);
      if (k !== undefined) this.sampledByKey.set(k, countsE);
    }
    const weightsE = balanceWeightsE(countsE, this.config.alpha);
    return scoped(() => weightedSum(meanScoresE(plan.probsTE, this.config.normaliseScores), weightsE));
  }

  /** Empties the pool; call once after each optimizer step. */
  resetAfterStep(): void {
    if (this.pending) {
      throw stateError('ShuffledBatchAuxLoss.resetAfterStep', 'was called while an all-gather is pending');
    }
    this.pooledTokens = 0;
    this.k = undefined;
    this.seen.clear();
    this.sampledByKey.clear();
  }
}
