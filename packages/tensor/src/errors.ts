/**
 * The one error type every Switchyard package throws, with a stable machine-readable `code`.
 *
 * Messages name the function, the argument, what was expected and what arrived, e.g.
 * "`k` passed to topKRouter() must be an integer in [1, 8], got 9".
 */

/** Stable error codes and what each means. Codes never change meaning once published. */
export const ERROR_CODES = {
  INVALID_ARGUMENT: 'An argument has the wrong type, is out of range or is inconsistent with another.',
  SHAPE_MISMATCH: 'A tensor has a shape other than the one the function expects.',
  DTYPE_MISMATCH: 'A tensor has a dtype other than the one the function expects.',
  NON_FINITE: 'A tensor or loss holds NaN or Infinity where finite values are required.',
  BACKEND_UNAVAILABLE: 'The requested TensorFlow.js backend cannot be loaded on this machine.',
  BACKEND_NOT_READY: 'An operation needs an initialised backend; call initBackend() first.',
  CONFIG_INVALID: 'A configuration file or object failed validation.',
  CHECKPOINT_INVALID: 'A checkpoint is missing, truncated, corrupted or does not match the model.',
  IO_ERROR: 'Reading or writing a file failed.',
  DATA_INVALID: 'Training or evaluation data is missing, empty or malformed.',
  TENSOR_LEAK: 'Tensors were allocated and not released inside a leak-checked scope.',
  GRADIENT_MISMATCH: 'An analytic gradient disagrees with its finite-difference estimate.',
  STATE_INVALID: 'An object was used in a state that does not allow the call (e.g. disposed).',
  TIMEOUT: 'A collective or remote operation did not complete within its timeout.',
  RANK_FAILED: 'A peer rank exited, crashed or stopped responding.',
  RUN_FAILED: 'A training run started in a child process exited with an error.',
} as const;

/** One of the keys of {@link ERROR_CODES}. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** Options accepted by {@link SwitchyardError}. */
export interface SwitchyardErrorOptions {
  /** The underlying error, kept for debugging. */
  readonly cause?: unknown;
  /** Structured details (argument name, expected, received, ...). */
  readonly details?: Readonly<Record<string, unknown>>;
}

/**
 * Base class of every error Switchyard throws.
 *
 * When to use: catch it and switch on `code` to handle a class of failures; match `message` in tests.
 *
 * @example
 * ```ts
 * try { topKRouter({ numExperts: 8, k: 9 }); }
 * catch (e) { if (e instanceof SwitchyardError && e.code === 'INVALID_ARGUMENT') {  } }
 * ```
 */
export class SwitchyardError extends Error {
  override readonly name = 'SwitchyardError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: SwitchyardErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }
}

/** True when `e` is a {@link SwitchyardError}, optionally with the given code. */
export function isSwitchyardError(e: unknown, code?: ErrorCode): e is SwitchyardError {
  return e instanceof SwitchyardError && (code === undefined || e.code === code);
}

/** Formats a received value for an error message: short, unambiguous, never huge. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (Array.isArray(v))
    return v.length > 8
      ? `[${v.slice(0, 8).map(describeValue).join(', ')}, ...]`
      : `[${v.map(describeValue).join(', ')}]`;
  if (typeof v === 'object' && v !== null && 'shape' in v && 'dtype' in v) {
    const t = v as { shape: readonly number[]; dtype: string };
    return `tensor of shape [${t.shape.join(', ')}] and dtype ${t.dtype}`;
  }
  try {
    const s = JSON.stringify(v);
    return s.length > 80 ? `${s.slice(0, 77)}...` : s;
  } catch {
    return Object.prototype.toString.call(v);
  }
}

/**
 * Builds the canonical invalid-argument error:
 * "`arg` passed to fn() must be <expected>, got <received>".
 */
export function invalidArgument(
  fn: string,
  arg: string,
  expected: string,
  received: unknown,
): SwitchyardError {
  return new SwitchyardError(
    'INVALID_ARGUMENT',
    `\`${arg}\` passed to ${fn}() must be ${expected}, got ${describeValue(received)}`,
    { details: { fn, arg, expected, received: describeValue(received) } },
  );
}
