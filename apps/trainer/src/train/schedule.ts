/** Learning-rate schedule: linear warm-up from 0, then cosine decay to a floor. */

/** Parameters of {@link learningRate}. */
export interface LrSchedule {
  /** Peak learning rate, reached at the end of warm-up. */
  readonly lr: number;
  /** Final learning rate as a fraction of `lr`. */
  readonly minLrRatio: number;
  /** Optimizer steps of linear warm-up. */
  readonly warmupSteps: number;
  /** Total optimizer steps of the run. */
  readonly totalSteps: number;
}

/**
 * Learning rate for optimizer step `step` (0-based): `lr * (step + 1) / warmupSteps` during warm-up,
 * then a cosine from `lr` down to `lr * minLrRatio` at the last step.
 *
 * When to use: once per optimizer step, before applying the update.
 *
 * @example
 * ```ts
 * learningRate({ lr: 1e-3, minLrRatio: 0.1, warmupSteps: 10, totalSteps: 100 }, 0); // 1e-4
 * ```
 */
export function learningRate(s: LrSchedule, step: number): number {
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  const decaySteps = Math.max(1, s.totalSteps - s.warmupSteps - 1);
  const t = Math.min(1, (step - s.warmupSteps) / decaySteps);
  const minLr = s.lr * s.minLrRatio;
  return minLr + 0.5 * (s.lr - minLr) * (1 + Math.cos(Math.PI * t));
}
