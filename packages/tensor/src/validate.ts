/**
 * Argument checks shared by every package. Each throws a {@link SwitchyardError} naming the function,
 * the argument, the expectation and the value received.
 */
import type { Tensor } from '@tensorflow/tfjs';
import { describeValue, invalidArgument, SwitchyardError } from './errors';

/** Range options for {@link checkInt} and {@link checkNumber}. */
export interface RangeOptions {
  readonly min?: number;
  readonly max?: number;
  /** Exclusive lower bound instead of inclusive. */
  readonly minExclusive?: boolean;
}

function rangeText(o: RangeOptions, kind: string): string {
  if (o.min !== undefined && o.max !== undefined && !o.minExclusive) return `${kind} in [${o.min}, ${o.max}]`;
  const parts: string[] = [];
  if (o.min !== undefined) parts.push(`${o.minExclusive ? '>' : '>='} ${o.min}`);
  if (o.max !== undefined) parts.push(`<= ${o.max}`);
  return parts.length === 0 ? kind : `${kind} ${parts.join(' and ')}`;
}

/** Checks that `value` is a finite integer inside the range; returns it. */
export function checkInt(fn: string, arg: string, value: unknown, range: RangeOptions = {}): number {
  const ok =
    typeof value === 'number' &&
    Number.isInteger(value) &&
    (range.min === undefined || (range.minExclusive ? value > range.min : value >= range.min)) &&
    (range.max === undefined || value <= range.max);
  if (!ok) throw invalidArgument(fn, arg, rangeText(range, 'an integer'), value);
  return value as number;
}

/** Checks that `value` is a finite number inside the range; returns it. */
export function checkNumber(fn: string, arg: string, value: unknown, range: RangeOptions = {}): number {
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (range.min === undefined || (range.minExclusive ? value > range.min : value >= range.min)) &&
    (range.max === undefined || value <= range.max);
  if (!ok) throw invalidArgument(fn, arg, rangeText(range, 'a finite number'), value);
  return value as number;
}

/** Checks that `value` is one of `allowed`; returns it. */
export function checkOneOf<T extends string>(
  fn: string,
  arg: string,
  value: unknown,
  allowed: readonly T[],
): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidArgument(fn, arg, `one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}`, value);
  }
  return value as T;
}

/**
 * Checks a tensor's rank and dimensions. `expected` lists each dimension; `null` accepts any size.
 * `names` (e.g. "TD") is used in the message to say which dimension is wrong.
 */
export function checkShape(
  fn: string,
  arg: string,
  t: Tensor,
  expected: readonly (number | null)[],
  names?: string,
): void {
  const ok = t.shape.length === expected.length && expected.every((d, i) => d === null || t.shape[i] === d);
  if (!ok) {
    const exp = `[${expected.map((d, i) => (d === null ? (names?.[i] ?? '?') : `${names?.[i] ? `${names[i]}=` : ''}${d}`)).join(', ')}]`;
    throw new SwitchyardError(
      'SHAPE_MISMATCH',
      `\`${arg}\` passed to ${fn}() must have shape ${exp}, got [${t.shape.join(', ')}]`,
      { details: { fn, arg, expected: exp, received: t.shape } },
    );
  }
}

/** Checks a tensor's dtype. */
export function checkDtype(fn: string, arg: string, t: Tensor, dtypes: readonly string[]): void {
  if (!dtypes.includes(t.dtype)) {
    throw new SwitchyardError(
      'DTYPE_MISMATCH',
      `\`${arg}\` passed to ${fn}() must have dtype ${dtypes.join(' or ')}, got ${t.dtype}`,
      { details: { fn, arg, expected: dtypes, received: t.dtype } },
    );
  }
}

/**
 * Checks that every value of a tensor is finite. Reads the tensor (a device sync): use it at API
 * boundaries, not inside inner loops.
 */
export function checkFinite(fn: string, arg: string, t: Tensor): void {
  const data = t.dataSync();
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    if (!Number.isFinite(v)) {
      throw new SwitchyardError(
        'NON_FINITE',
        `\`${arg}\` passed to ${fn}() must be finite, got ${describeValue(v)} at flat index ${i} of a ${describeValue(t)}`,
        { details: { fn, arg, index: i, value: v } },
      );
    }
  }
}
