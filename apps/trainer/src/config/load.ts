/**
 * Reading configurations: JSON or YAML files, named presets, `--set key=value` overrides, and the
 * validation that turns every problem into one `path: expected ..., got ...` line.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeValue, SwitchyardError } from '@switchyard/tensor';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { type TrainConfig, trainConfigSchema } from './schema';

/** A nested plain object of config values. */
export type ConfigObject = { [key: string]: unknown };

/** The folder of this package (holding package.json and presets/), from source or from dist. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'presets'))) return dir;
    dir = dirname(dir);
  }
  throw new SwitchyardError(
    'IO_ERROR',
    'cannot find the switchyard-train package folder (presets/ is missing)',
  );
}

/** The version in this package's package.json. */
export function packageVersion(): string {
  return String(
    (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version,
  );
}

let presetCache: Record<string, ConfigObject> | undefined;

/** Named presets (`presets/<name>.json`): partial configurations merged over the defaults. */
export function presets(): Readonly<Record<string, ConfigObject>> {
  if (presetCache) return presetCache;
  const dir = join(packageRoot(), 'presets');
  const out: Record<string, ConfigObject> = {};
  for (const f of readdirSync(dir).sort()) {
    if (f.endsWith('.json'))
      out[f.slice(0, -5)] = JSON.parse(readFileSync(join(dir, f), 'utf8')) as ConfigObject;
  }
  presetCache = out;
  return out;
}

function isPlainObject(v: unknown): v is ConfigObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep-merges `over` into a copy of `base`; arrays and scalars replace. */
export function mergeConfig(base: ConfigObject, over: ConfigObject): ConfigObject {
  const out: ConfigObject = { ...base };
  for (const [k, v] of Object.entries(over)) {
    const prev = out[k];
    out[k] = isPlainObject(prev) && isPlainObject(v) ? mergeConfig(prev, v) : v;
  }
  return out;
}

function configError(message: string, details: Record<string, unknown> = {}): SwitchyardError {
  return new SwitchyardError('CONFIG_INVALID', message, { details });
}

/** The value at a path inside `input`, or undefined. */
function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = input;
  for (const k of path) {
    if (!isPlainObject(cur) && !Array.isArray(cur)) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

function pathText(path: readonly PropertyKey[]): string {
  return path.length === 0 ? '(top level)' : path.map(String).join('.');
}

function article(noun: string): string {
  return `${/^[aeiou]/.test(noun) ? 'an' : 'a'} ${noun}`;
}

/** Formats one zod issue as `path: expected ..., got ...`. */
function formatIssue(issue: z.core.$ZodIssue, input: unknown): string[] {
  const got = describeValue(valueAt(input, issue.path));
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((k) => `${pathText([...issue.path, k])}: unknown key`);
    case 'invalid_type':
      if (valueAt(input, issue.path) === undefined)
        return [`${pathText(issue.path)}: required, expected ${issue.expected}`];
      return [
        `${pathText(issue.path)}: expected ${article(issue.expected === 'int' ? 'integer' : issue.expected)}, got ${got}`,
      ];
    case 'invalid_value':
      return [
        `${pathText(issue.path)}: expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${got}`,
      ];
    case 'too_small':
      return [
        `${pathText(issue.path)}: expected a value ${issue.inclusive ? '>=' : '>'} ${issue.minimum}, got ${got}`,
      ];
    case 'too_big':
      return [
        `${pathText(issue.path)}: expected a value ${issue.inclusive ? '<=' : '<'} ${issue.maximum}, got ${got}`,
      ];
    default:
      return [`${pathText(issue.path)}: ${issue.message}, got ${got}`];
  }
}

/**
 * Validates a configuration object and fills in defaults; throws CONFIG_INVALID listing every problem.
 *
 * When to use: on anything read from a file or the command line before using it.
 *
 * @example
 * ```ts
 * const config = parseConfig({ train: { steps: 100 } }, 'my.yaml');
 * ```
 */
export function parseConfig(input: unknown, source = 'config'): TrainConfig {
  const r = trainConfigSchema.safeParse(input);
  if (r.success) return r.data;
  const lines = r.error.issues.flatMap((i) => formatIssue(i, input));
  throw configError(`invalid configuration (${source}):\n  ${lines.join('\n  ')}`, { problems: lines });
}

/** Reads a JSON or YAML configuration file (not yet validated). */
export function readConfigFile(path: string): ConfigObject {
  if (!existsSync(path)) throw configError(`config file ${path} does not exist`, { path });
  const text = readFileSync(path, 'utf8');
  let value: unknown;
  try {
    value = ['.yaml', '.yml'].includes(extname(path).toLowerCase()) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw configError(
      `config file ${path} is not valid ${extname(path).slice(1).toUpperCase() || 'JSON'}: ${(e as Error).message}`,
      {
        path,
      },
    );
  }
  if (value === null || value === undefined) return {};
  if (!isPlainObject(value))
    throw configError(`config file ${path} must hold an object, got ${describeValue(value)}`);
  return value;
}

/**
 * Applies one `key.path=value` override; the value is read as YAML (numbers, booleans, `[a, b]`
 * lists), anything else stays a string.
 *
 * @example
 * ```ts
 * applySet({}, 'train.steps=50'); // { train: { steps: 50 } }
 * ```
 */
export function applySet(config: ConfigObject, assignment: string): ConfigObject {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw configError(`--set expects key=value, got ${describeValue(assignment)}`);
  const key = assignment.slice(0, eq).trim();
  const raw = assignment.slice(eq + 1);
  if (!/^[A-Za-z0-9_+-]+(\.[A-Za-z0-9_+-]+)*$/.test(key)) {
    throw configError(`--set key ${describeValue(key)} is not a dotted path such as train.steps`);
  }
  let value: unknown;
  try {
    value = raw.trim() === '' ? '' : parseYaml(raw);
  } catch {
    value = raw;
  }
  const parts = key.split('.');
  const patch: ConfigObject = {};
  let cur = patch;
  parts.forEach((p, i) => {
    if (i === parts.length - 1) cur[p] = value;
    else {
      const next: ConfigObject = {};
      cur[p] = next;
      cur = next;
    }
  });
  return mergeConfig(config, patch);
}

/** Where a configuration comes from on the command line. */
export interface ConfigSources {
  /** A named preset (see {@link presets}). */
  readonly preset?: string;
  /** A JSON or YAML file merged over the preset. */
  readonly file?: string;
  /** `key=value` overrides applied last, in order. */
  readonly sets?: readonly string[];
}

/**
 * Builds the configuration: defaults, then the preset, then the file, then each `--set`.
 *
 * When to use: the CLI's entry to configuration; also for scripts that start runs.
 *
 * @example
 * ```ts
 * const config = resolveConfig({ preset: 'tiny', sets: ['train.steps=20'] });
 * ```
 */
export function resolveConfig(sources: ConfigSources): TrainConfig {
  let merged: ConfigObject = {};
  const from: string[] = [];
  if (sources.preset !== undefined) {
    const preset = presets()[sources.preset];
    if (!preset) {
      throw configError(
        `unknown preset ${describeValue(sources.preset)}; expected one of ${Object.keys(presets()).join(', ')}`,
      );
    }
    merged = mergeConfig(merged, preset);
    from.push(`preset ${sources.preset}`);
  }
  if (sources.file !== undefined) {
    merged = mergeConfig(merged, readConfigFile(sources.file));
    from.push(sources.file);
  }
  for (const s of sources.sets ?? []) merged = applySet(merged, s);
  if ((sources.sets ?? []).length > 0) from.push('--set');
  return parseConfig(merged, from.join(' + ') || 'defaults');
}
