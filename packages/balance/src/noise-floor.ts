/**
 * The sampling-noise floor of MaxVio_batch: the MaxVio a batch shows even when routing is perfectly
 * balanced in expectation, because T tokens are a finite sample. Model: each of T tokens picks K
 * distinct experts uniformly at random. A router whose MaxVio_batch sits at this floor is as balanced
 * as a batch of that size can be; compare against it, not against 0.
 *
 * Shape letters: T tokens, E routed experts, K experts per token.
 */
import { checkInt, checkOneOf, Rng } from '@switchyard/tensor';
import { maxVio } from './metrics';

/** Settings of {@link maxVioNoiseFloor}. */
export interface NoiseFloorConfig {
  /** Tokens per batch T. */
  readonly numTokens: number;
  /** Routed experts E. */
  readonly numExperts: number;
  /** Distinct experts per token K. */
  readonly k: number;
  /** 'monte-carlo' (exact in expectation, seeded), 'normal' (closed form), 'auto' (Monte Carlo up to 2e7 draws, else normal). */
  readonly method: 'auto' | 'monte-carlo' | 'normal';
  /** Simulated batches for the Monte Carlo estimate. */
  readonly trials: number;
  /** Seed of the Monte Carlo estimate. */
  readonly seed: number;
}

/** Defaults of {@link maxVioNoiseFloor}. */
export const defaultNoiseFloorConfig: Omit<NoiseFloorConfig, 'numTokens' | 'numExperts' | 'k'> = {
  method: 'auto',
  trials: 512,
  seed: 0,
};

/** Draws above which 'auto' switches from Monte Carlo to the normal approximation. */
const AUTO_MAX_DRAWS = 2e7;

/** Complementary error function (Chebyshev fit, fractional error < 1.2e-7 everywhere). */
function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t *
                      (-0.18628806 +
                        t *
                          (0.27886807 +
                            t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/**
 * Expected maximum of n independent standard normal variables, by numerical integration of
 * `x * n * phi(x) * Phi(x)^(n-1)` (Simpson's rule; accurate to ~1e-6).
 *
 * When to use: extreme-value estimates such as the normal approximation of the MaxVio noise floor.
 *
 * @example
 * ```ts
 * expectedMaxOfNormals(2); // 0.5642 (= 1 / sqrt(pi))
 * ```
 */
export function expectedMaxOfNormals(n: number): number {
  checkInt('expectedMaxOfNormals', 'n', n, { min: 1 });
  if (n === 1) return 0;
  const lo = -9;
  const hi = 9 + Math.sqrt(2 * Math.log(n));
  const steps = 4000;
  const h = (hi - lo) / steps;
  const f = (x: number): number => {
    const phi = Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
    const cdf = 0.5 * erfc(-x / Math.SQRT2);
    return x * n * phi * cdf ** (n - 1);
  };
  let s = f(lo) + f(hi);
  for (let i = 1; i < steps; i++) s += (i % 2 === 1 ? 4 : 2) * f(lo + i * h);
  return (s * h) / 3;
}

/**
 * Expected MaxVio_batch of a batch of T tokens each picking K distinct experts uniformly at random.
 *
 * - `monte-carlo`: mean MaxVio over `trials` seeded simulated batches (standard error about
 *   std / sqrt(trials), ~1% at the default 512 trials).
 * - `normal`: each count is Binomial(T, K/E) with correlation -1/(E-1) between experts, so
 *   E[max_i c_i] - mean ~ sigma * m_E * sqrt(E / (E-1)) with sigma = sqrt(T p (1-p)), p = K/E and
 *   m_E = {@link expectedMaxOfNormals}(E); floor ~ sqrt((1-p) / (T p)) * m_E * sqrt(E / (E-1)).
 *   Good when T K / E is large (tens of tokens per expert); it ignores the discreteness of counts.
 *
 * When to use: the target of a balancer; a MaxVio_batch within ~1.5x of this floor is balanced.
 *
 * @example
 * ```ts
 * const floor = maxVioNoiseFloor({ numTokens: 4096, numExperts: 64, k: 8 });
 * const ratio = maxVio(plan.countsE) / floor;
 * ```
 */
export function maxVioNoiseFloor(
  config: Partial<NoiseFloorConfig> & Pick<NoiseFloorConfig, 'numTokens' | 'numExperts' | 'k'>,
): number {
  const fn = 'maxVioNoiseFloor';
  const c = { ...defaultNoiseFloorConfig, ...config };
  const T = checkInt(fn, 'config.numTokens', c.numTokens, { min: 1 });
  const E = checkInt(fn, 'config.numExperts', c.numExperts, { min: 1 });
  const K = checkInt(fn, 'config.k', c.k, { min: 1, max: E });
  const method = checkOneOf(fn, 'config.method', c.method, ['auto', 'monte-carlo', 'normal']);
  const trials = checkInt(fn, 'config.trials', c.trials, { min: 1 });
  checkInt(fn, 'config.seed', c.seed);
  if (K === E) return 0; // every token uses every expert
  const useMc = method === 'monte-carlo' || (method === 'auto' && T * K * trials <= AUTO_MAX_DRAWS);
  if (!useMc) {
    const p = K / E;
    return Math.sqrt((1 - p) / (T * p)) * expectedMaxOfNormals(E) * Math.sqrt(E / (E - 1));
  }
  const rng = new Rng(c.seed).fork('maxvio-noise-floor');
  const permE = new Int32Array(E);
  for (let i = 0; i < E; i++) permE[i] = i;
  const countsE = new Float64Array(E);
  let total = 0;
  for (let trial = 0; trial < trials; trial++) {
    countsE.fill(0);
    for (let t = 0; t < T; t++) {
      // partial Fisher-Yates: positions 0..K-1 become a uniform K-subset (from any arrangement)
      for (let j = 0; j < K; j++) {
        const r = j + rng.int(E - j);
        const e = permE[r]!;
        permE[r] = permE[j]!;
        permE[j] = e;
        countsE[e]! += 1;
      }
    }
    total += maxVio(countsE);
  }
  return total / trials;
}
