/**
 * Errors of @switchyard/plan. The package runs without TensorFlow.js (and in the browser), so it has
 * its own error class with the same conventions as @switchyard/tensor's `SwitchyardError`: a stable
 * `code`, `name` set, messages that name the argument, the function, what was expected and what
 * arrived.
 */

/** Stable error codes of @switchyard/plan. */
export const PLAN_ERROR_CODES = {
  /** An argument is out of range or of the wrong type. */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** A schedule breaks a rule of its kind (a dependency, an order, a deadlock). */
  SCHEDULE_INVALID: 'SCHEDULE_INVALID',
} as const;

/** One of {@link PLAN_ERROR_CODES}. */
export type PlanErrorCode = keyof typeof PLAN_ERROR_CODES;

/**
 * The error every function of @switchyard/plan throws for bad input or an invalid schedule.
 *
 * When to use: catch it (or test `isPlanError(e)`) to tell a planning error from a bug.
 *
 * @example
 * ```ts
 * try { generateSchedule({ kind: 'dualpipe', ranks: 3, microBatches: 6 }); }
 * catch (e) { if (isPlanError(e)) console.error(e.code, e.message); }
 * ```
 */
export class PlanError extends Error {
  readonly code: PlanErrorCode;

  constructor(code: PlanErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PlanError';
    this.code = code;
  }
}

/** True when `e` is a {@link PlanError}. */
export function isPlanError(e: unknown): e is PlanError {
  return e instanceof PlanError;
}

/** `` `arg` passed to fn() must be EXPECTED, got VALUE `` as an INVALID_ARGUMENT {@link PlanError}. */
export function invalidArgument(fn: string, arg: string, expected: string, got: unknown): PlanError {
  let shown: string;
  try {
    shown = typeof got === 'string' ? JSON.stringify(got) : (JSON.stringify(got) ?? String(got));
  } catch {
    shown = String(got);
  }
  return new PlanError('INVALID_ARGUMENT', `\`${arg}\` passed to ${fn}() must be ${expected}, got ${shown}`);
}

/** Checks that `value` is an integer in [min, max] and returns it. */
export function checkInt(
  fn: string,
  arg: string,
  value: unknown,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `in [${min}, ${max}]`;
    throw invalidArgument(fn, arg, `an integer ${range}`, value);
  }
  return value;
}
