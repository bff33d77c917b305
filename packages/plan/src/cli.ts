/**
 * The `switchyard-plan` command line: `schedule` generates a pipeline schedule and prints it as text,
 * JSON or an SVG timeline. Usage errors are one line, `switchyard-plan: <message>`, and exit code 2;
 * other failures exit 1.
 *
 * The only file of the package that uses Node's modules; the library itself runs in the browser.
 */
import { realpathSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pkg from '../package.json' with { type: 'json' };
import { isPlanError } from './errors';
import { formatScheduleSvg, formatScheduleText, scheduleToJson } from './schedule/format';
import { generateSchedule } from './schedule/generate';
import { SCHEDULE_KINDS, type ScheduleKind, type ScheduleRequest } from './schedule/types';
import { validateSchedule } from './schedule/validate';

/** Where the CLI writes (process streams by default; tests pass collectors). */
export interface CliIO {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
}

const FORMATS = ['text', 'json', 'svg'] as const;
type Format = (typeof FORMATS)[number];

const NAME = 'switchyard-plan';

/** A usage error: printed as one line, exit code 2. */
class UsageError extends Error {}

/**
 * The `--help` text.
 *
 * When to use: `switchyard-plan --help` prints it; docs can quote it.
 *
 * @example
 * ```ts
 * helpText().startsWith('Usage: switchyard-plan schedule'); // true
 * ```
 */
export function helpText(): string {
  return `Usage: ${NAME} schedule --kind KIND --stages S --micro-batches N [options]

Generate a pipeline schedule (the ops each rank runs, in order) and print it.

Commands:
  schedule             generate one schedule

Options:
  --kind KIND          ${SCHEDULE_KINDS.join(', ')}
  --stages S           pipeline ranks P for every kind except dualpipev; for dualpipev the number
                       of stages 2P (even), so --stages 8 runs on 4 ranks
  --micro-batches N    micro-batches per optimizer step (dualpipe: even and >= 2P;
                       dualpipev: >= 2P = S)
  --chunks V           chunks (stages) per rank, interleaved only (default 2)
  --layers L           model layers, to check that the stages divide them
  --format FORMAT      text (default): one line of tokens per rank;
                       json: the schedule object; svg: a timeline of its replay
                       with F=1, B=2, W=1, F&B=3
  --out FILE           write to FILE instead of standard output
  --version            print the version
  --help               print this help

Text tokens: dualpipe and dualpipev print F0 F1 B0 B1 B0i B1i W F0&B1 F1&B0 (the digit is the
direction, or dualpipev's leg; i = backward for the input only); the other kinds print F B Bi W,
with a chunk suffix (Fc1) when a rank holds more than one chunk, and F&B for an overlapped pair.

Example:
  ${NAME} schedule --kind dualpipe --stages 8 --micro-batches 20`;
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        kind: { type: 'string' },
        stages: { type: 'string' },
        'micro-batches': { type: 'string' },
        chunks: { type: 'string' },
        layers: { type: 'string' },
        format: { type: 'string' },
        out: { type: 'string' },
        version: { type: 'boolean' },
        help: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

type Values = ReturnType<typeof parse>['values'];

/** A whole number >= `min` from a flag, or a usage error naming the flag. */
function intFlag(flag: string, text: string, min: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`--${flag} must be an integer >= ${min}, got ${JSON.stringify(text)}`);
  }
  return value;
}

function required(values: Values, flag: 'kind' | 'stages' | 'micro-batches'): string {
  const value = values[flag];
  if (value === undefined) throw new UsageError(`schedule needs --${flag}`);
  return value;
}

/** The generator request the flags describe. */
function scheduleRequest(values: Values): ScheduleRequest {
  const kindText = required(values, 'kind');
  if (!(SCHEDULE_KINDS as readonly string[]).includes(kindText)) {
    throw new UsageError(
      `--kind must be one of ${SCHEDULE_KINDS.join(', ')}, got ${JSON.stringify(kindText)}`,
    );
  }
  const kind = kindText as ScheduleKind;
  const stages = intFlag('stages', required(values, 'stages'), 1);
  const microBatches = intFlag('micro-batches', required(values, 'micro-batches'), 1);
  if (kind === 'dualpipev' && (stages < 2 || stages % 2 !== 0)) {
    throw new UsageError(
      `--stages for dualpipev is the number of stages 2P and must be even and >= 2, got ${stages}`,
    );
  }
  if (values.chunks !== undefined && kind !== 'interleaved') {
    throw new UsageError(`--chunks applies to --kind interleaved only, not to ${kind}`);
  }
  const chunks = values.chunks === undefined ? undefined : intFlag('chunks', values.chunks, 1);
  const layers = values.layers === undefined ? undefined : intFlag('layers', values.layers, 1);
  return {
    kind,
    ranks: kind === 'dualpipev' ? stages / 2 : stages,
    microBatches,
    ...(chunks === undefined ? {} : { chunks }),
    ...(layers === undefined ? {} : { layers }),
  };
}

function outputFormat(values: Values): Format {
  const format = values.format ?? 'text';
  if (!(FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`--format must be one of ${FORMATS.join(', ')}, got ${JSON.stringify(format)}`);
  }
  return format as Format;
}

function render(request: ScheduleRequest, format: Format): string {
  const schedule = generateSchedule(request);
  switch (format) {
    case 'text':
      return `${formatScheduleText(schedule)}\n`;
    case 'json':
      return `${JSON.stringify(scheduleToJson(schedule), null, 2)}\n`;
    case 'svg':
      return formatScheduleSvg(schedule, validateSchedule(schedule));
  }
}

/**
 * Runs the CLI with `argv` (without `node` and the script) and returns the exit code: 0 done,
 * 2 usage error (a bad flag, or a size the schedule kind cannot take), 1 anything else.
 *
 * When to use: the `switchyard-plan` binary calls it; tests call it in-process with collecting `io`.
 *
 * @example
 * ```ts
 * const code = await main(['schedule', '--kind', 'dualpipe', '--stages', '8', '--micro-batches', '20']);
 * ```
 */
export async function main(
  argv: readonly string[],
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  try {
    const { values, positionals } = parse(argv);
    if (values.help === true) {
      io.stdout.write(`${helpText()}\n`);
      return 0;
    }
    if (values.version === true) {
      io.stdout.write(`${NAME} ${pkg.version}\n`);
      return 0;
    }
    const [command, ...rest] = positionals;
    if (command === undefined) throw new UsageError('missing command: schedule');
    if (command !== 'schedule')
      throw new UsageError(`unknown command ${JSON.stringify(command)}, expected schedule`);
    if (rest.length > 0)
      throw new UsageError(`schedule takes no positional arguments, got ${rest.join(' ')}`);
    const text = render(scheduleRequest(values), outputFormat(values));
    if (values.out === undefined) io.stdout.write(text);
    else await writeFile(values.out, text);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`${NAME}: ${e.message} (see ${NAME} --help)\n`);
      return 2;
    }
    if (isPlanError(e) && e.code === 'INVALID_ARGUMENT') {
      io.stderr.write(`${NAME}: ${e.message}\n`);
      return 2;
    }
    io.stderr.write(`${NAME}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

/** True when this module is the program node started (the bin, possibly through a symlink), not an import. */
function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
