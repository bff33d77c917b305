/**
 * The `switchyard-serve` command line: serve a checkpoint (default), `generate` once from a shell,
 * `--version` and `--help`. Usage errors are one line and exit code 2; other failures exit 1.
 */

import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { END_OF_TEXT } from '@switchyard/model';
import {
  BACKEND_NAMES,
  type BackendName,
  initBackend,
  isSwitchyardError,
  SwitchyardError,
} from '@switchyard/tensor';
import { loadServingCheckpoint } from './checkpoint';
import { type FlagDoc, GENERATE_FLAGS, helpText, SERVE_FLAGS } from './flags';
import { loadServable, type ServeConfig, startServer } from './server';

/** Where the CLI writes (process streams by default; tests pass collectors). */
export interface CliIO {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
}

/** Options of {@link main} beyond the arguments. */
export interface MainOptions {
  /** Resolves when a running server should drain and exit (default: SIGTERM or SIGINT). */
  readonly stopSignal?: Promise<unknown>;
}

const NAME = 'switchyard-serve';

function usage(message: string): SwitchyardError {
  return new SwitchyardError('INVALID_ARGUMENT', `${message} (see ${NAME} --help)`);
}

/** The package version (package.json sits one folder above both src/ and dist/). */
export function version(): string {
  return (createRequire(import.meta.url)('../package.json') as { version: string }).version;
}

/**
 * Runs the command line with `argv` (without node and the script) and returns the exit code; a
 * server runs until the stop signal, then drains and returns 0.
 *
 * @example
 * ```ts
 * const code = await main(['generate', '--checkpoint', dir, '--prompt', 'The', '--temperature', '0']);
 * ```
 */
export async function main(
  argv: readonly string[],
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
  options: MainOptions = {},
): Promise<number> {
  try {
    if (argv.includes('--help') || argv.includes('-h')) {
      io.stdout.write(`${helpText()}\n`);
      return 0;
    }
    if (argv.includes('--version')) {
      io.stdout.write(`${NAME} ${version()}\n`);
      return 0;
    }
    if (argv[0] === 'generate') return await generate(argv.slice(1), io);
    return await serve(argv, io, options);
  } catch (e) {
    if (isSwitchyardError(e)) {
      io.stderr.write(`error: ${e.message}\n`);
      return e.code === 'INVALID_ARGUMENT' || e.code === 'CONFIG_INVALID' ? 2 : 1;
    }
    io.stderr.write(
      `error: unexpected failure: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
    );
    return 1;
  }
}

async function serve(argv: readonly string[], io: CliIO, options: MainOptions): Promise<number> {
  const values = parseFlags(argv, SERVE_FLAGS);
  const dir = required(values, 'checkpoint');
  const settings: Record<string, unknown> = { backend: backendName(values.backend) };
  for (const f of SERVE_FLAGS) if (f.key && values[f.flag] !== undefined) settings[f.key] = values[f.flag];
  settings.apiKey ??= process.env.SWITCHYARD_API_KEY || undefined;
  const servable = await loadServable(dir);
  const server = await startServer(servable, settings as Partial<ServeConfig>);
  for (const w of server.warnings) io.stderr.write(`warning: ${w}\n`);
  io.stdout.write(
    `${NAME}: serving ${server.modelName} at ${server.url} (chat template: ${servable.chatTemplateSource})\n`,
  );
  await (options.stopSignal ?? termination());
  io.stdout.write(`${NAME}: draining\n`);
  await server.shutdown();
  io.stdout.write(`${NAME}: stopped\n`);
  return 0;
}

async function generate(argv: readonly string[], io: CliIO): Promise<number> {
  const values = parseFlags(argv, GENERATE_FLAGS);
  const dir = required(values, 'checkpoint');
  const prompt = required(values, 'prompt');
  if (prompt === '') throw usage('--prompt must not be empty');
  const topP = (values['top-p'] as number | undefined) ?? 1;
  if (!(topP > 0 && topP <= 1)) throw usage(`--top-p: expected a number in (0, 1], got ${topP}`);
  const backend = backendName(values.backend);
  await initBackend(backend === undefined ? {} : { backend });
  const { model, tokenizer } = await loadServingCheckpoint(dir);
  try {
    const ids = tokenizer.encode(prompt);
    const room = model.config.maxSeqLen - ids.length;
    if (room < 1)
      throw usage(
        `--prompt has ${ids.length} tokens; the model's maximum context is ${model.config.maxSeqLen}`,
      );
    const eot = tokenizer.specialTokens[END_OF_TEXT];
    const out = model.generate(ids, {
      maxNewTokens: Math.min((values['max-tokens'] as number | undefined) ?? 64, room),
      temperature: (values.temperature as number | undefined) ?? 1,
      topP,
      topK: (values['top-k'] as number | undefined) ?? 0,
      seed: (values.seed as number | undefined) ?? 0,
      ...(eot === undefined ? {} : { stopTokens: [eot] }),
    });
    io.stdout.write(`${tokenizer.decode(out)}\n`);
    return 0;
  } finally {
    model.dispose();
  }
}

function termination(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
}

/** The --backend value, checked. */
function backendName(name: unknown): BackendName | undefined {
  if (name !== undefined && !(BACKEND_NAMES as readonly string[]).includes(name as string))
    throw usage(`--backend: expected one of ${BACKEND_NAMES.join(', ')}, got ${JSON.stringify(name)}`);
  return name as BackendName | undefined;
}

function required(values: Record<string, unknown>, flag: string): string {
  const v = values[flag];
  if (typeof v !== 'string') throw usage(`--${flag} is required`);
  return v;
}

/** Parses `argv` against `flags`; numbers are checked (integers where expected, minimums). */
function parseFlags(argv: readonly string[], flags: readonly FlagDoc[]): Record<string, unknown> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: Object.fromEntries(
        flags.map((f) => [
          f.flag,
          { type: f.kind === 'boolean' ? ('boolean' as const) : ('string' as const) },
        ]),
      ),
    });
  } catch (e) {
    throw usage((e as Error).message);
  }
  const out: Record<string, unknown> = {};
  for (const f of flags) {
    const raw = parsed.values[f.flag];
    if (raw === undefined) continue;
    if (f.kind === 'string' || f.kind === 'boolean') {
      out[f.flag] = raw;
      continue;
    }
    const n = Number(raw);
    const ok =
      raw !== '' &&
      Number.isFinite(n) &&
      (f.kind === 'number' || Number.isInteger(n)) &&
      n >= (f.min ?? Number.NEGATIVE_INFINITY);
    if (!ok) {
      const what = f.kind === 'int' ? 'an integer' : 'a number';
      throw usage(
        `--${f.flag}: expected ${what}${f.min === undefined ? '' : ` >= ${f.min}`}, got ${JSON.stringify(raw)}`,
      );
    }
    out[f.flag] = n;
  }
  return out;
}
