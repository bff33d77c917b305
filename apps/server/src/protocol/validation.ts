/**
 * Schema validation failures as one clear 400: which field, what was expected, what arrived.
 */
import { type ApiError, invalidRequest } from './errors';

/** The parts of an ajv error used here (fastify passes ajv's errors, with `data` when verbose). */
export interface SchemaError {
  readonly keyword: string;
  readonly instancePath: string;
  readonly params: Record<string, unknown>;
  readonly message?: string;
  readonly data?: unknown;
}

const TYPE_NAMES: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'a boolean',
  array: 'an array',
  object: 'an object',
  null: 'null',
};

/** `/messages/0/role` -> `messages[0].role`. */
function fieldOf(instancePath: string, child?: string): string {
  const parts = instancePath.split('/').slice(1);
  if (child !== undefined) parts.push(child);
  return parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** A short JSON rendering of what arrived. */
export function describeValue(v: unknown): string {
  let s: string;
  if (typeof v === 'number' && !Number.isFinite(v)) s = String(v);
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** The 400 for the first schema error. */
export function formatValidation(errors: readonly SchemaError[]): ApiError {
  const e = errors[0];
  if (!e) return invalidRequest('The request body does not match the schema');
  const field = fieldOf(e.instancePath);
  const name = field === '' ? 'The request body' : `\`${field}\``;
  const top = field || null;
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = fieldOf(e.instancePath, String(e.params.additionalProperty));
      return invalidRequest(
        `Unknown or unsupported field \`${extra}\`: this server does not accept it`,
        extra,
        'unknown_parameter',
      );
    }
    case 'required': {
      const missing = fieldOf(e.instancePath, String(e.params.missingProperty));
      return invalidRequest(`Missing required field \`${missing}\``, missing);
    }
    case 'type': {
      const types = String(e.params.type)
        .split(',')
        .map((t) => TYPE_NAMES[t] ?? t);
      return invalidRequest(`${name} must be ${types.join(' or ')}, got ${describeValue(e.data)}`, top);
    }
    case 'enum':
      return invalidRequest(
        `${name} must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(e.data)}`,
        top,
      );
    default:
      return invalidRequest(`${name} ${e.message ?? 'is invalid'}, got ${describeValue(e.data)}`, top);
  }
}
