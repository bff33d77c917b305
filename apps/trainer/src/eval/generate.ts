/**
 * `switchyard-train generate`: text from a model. The prompt is encoded with the model's own
 * tokenizer, new tokens come from the model's `generate` (temperature, then top-k, then top-p, from
 * a seeded generator) until the end-of-text token, the token budget or the model's context length,
 * and are decoded back to text. A run's report shows one sample of its final model with the command
 * that repeats it from the checkpoint.
 */
import { type BpeTokenizer, END_OF_TEXT, loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import { SwitchyardError, tf } from '@switchyard/tensor';

/** How to sample. */
export interface SampleOptions {
  /** Most new tokens. */
  readonly maxTokens: number;
  /** Softmax temperature; 0 picks the most likely token every time. */
  readonly temperature: number;
  /** Sample among the k most likely tokens only; 0: no limit. */
  readonly topK: number;
  /** Sample from the smallest set of tokens whose probability reaches p, in (0, 1]. */
  readonly topP: number;
  /** Seed of the sampling generator: the same seed, prompt and checkpoint give the same text. */
  readonly seed: number;
}

/** The defaults of `switchyard-train generate` and of a run report's sample. */
export const DEFAULT_SAMPLE_OPTIONS: SampleOptions = {
  maxTokens: 48,
  temperature: 0.8,
  topK: 40,
  topP: 1,
  seed: 0,
};

/** Why generation stopped. */
export type SampleEnd = 'max-tokens' | 'end-of-text' | 'context';

/** A prompt and what the model wrote after it. */
export interface Sample {
  readonly prompt: string;
  /** The generated text (without the prompt). */
  readonly continuation: string;
  readonly promptTokens: number;
  readonly newTokens: number;
  readonly end: SampleEnd;
}

/**
 * Samples a continuation of `prompt` from a model (inference mode; tensors released).
 *
 * When to use: text from a model in memory; {@link generateFromCheckpoint} loads one first.
 *
 * @example
 * ```ts
 * const s = sampleText(model, tokenizer, 'The', { ...DEFAULT_SAMPLE_OPTIONS, maxTokens: 20 });
 * console.log(s.prompt + s.continuation);
 * ```
 */
export function sampleText(
  model: MoETransformerLM,
  tokenizer: BpeTokenizer,
  prompt: string,
  o: SampleOptions,
): Sample {
  const promptIds = tokenizer.encode(prompt);
  if (promptIds.length === 0) {
    throw new SwitchyardError('INVALID_ARGUMENT', '--prompt: expected some text, got an empty prompt');
  }
  const context = model.config.maxSeqLen;
  if (promptIds.length >= context) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `--prompt: expected fewer than ${context} tokens (the model's context length), got ${promptIds.length}`,
    );
  }
  const eot = tokenizer.specialTokens[END_OF_TEXT];
  const ids = model.generate(promptIds, {
    maxNewTokens: o.maxTokens,
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    seed: o.seed,
    ...(eot !== undefined ? { stopTokens: [eot] } : {}),
  });
  const end: SampleEnd =
    ids.length >= o.maxTokens
      ? 'max-tokens'
      : promptIds.length + ids.length >= context
        ? 'context'
        : 'end-of-text';
  return {
    prompt,
    continuation: tokenizer.decode(ids),
    promptTokens: promptIds.length,
    newTokens: ids.length,
    end,
  };
}

/**
 * Loads a checkpoint (verified against its manifest) and samples a continuation of `prompt`.
 *
 * When to use: the `generate` command; scripts that want text from a saved model.
 *
 * @example
 * ```ts
 * const s = await generateFromCheckpoint('runs/small-1/checkpoints/final', 'The', DEFAULT_SAMPLE_OPTIONS);
 * ```
 */
export async function generateFromCheckpoint(
  checkpointDir: string,
  prompt: string,
  o: SampleOptions,
): Promise<Sample> {
  const loaded = await loadCheckpoint(checkpointDir);
  try {
    return sampleText(loaded.model, loaded.tokenizer, prompt, o);
  } finally {
    loaded.model.dispose();
    tf.dispose(Object.values(loaded.extraTensors ?? {}));
  }
}

/** Quotes an argument for a POSIX shell when it needs it. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=@+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}

/**
 * The `switchyard-train generate` command that writes the same text from a checkpoint.
 *
 * @example
 * ```ts
 * generateCommand('runs/a/checkpoints/final', 'The', DEFAULT_SAMPLE_OPTIONS);
 * // "switchyard-train generate --checkpoint runs/a/checkpoints/final --prompt The --max-tokens 48 ..."
 * ```
 */
export function generateCommand(checkpointDir: string, prompt: string, o: SampleOptions): string {
  return [
    'switchyard-train generate',
    `--checkpoint ${shellQuote(checkpointDir)}`,
    `--prompt ${shellQuote(prompt)}`,
    `--max-tokens ${o.maxTokens}`,
    `--temperature ${o.temperature}`,
    `--top-k ${o.topK}`,
    ...(o.topP !== 1 ? [`--top-p ${o.topP}`] : []),
    `--seed ${o.seed}`,
  ].join(' ');
}

/** Parses the `generate` command's sampling flags (strings as given) over the defaults. */
export function parseSampleFlags(flags: {
  readonly 'max-tokens'?: string | undefined;
  readonly temperature?: string | undefined;
  readonly 'top-k'?: string | undefined;
  readonly 'top-p'?: string | undefined;
  readonly seed?: string | undefined;
}): SampleOptions {
  const number = (
    flag: string,
    raw: string | undefined,
    fallback: number,
    ok: (n: number) => boolean,
    expected: string,
  ): number => {
    if (raw === undefined) return fallback;
    const n = raw.trim() === '' ? Number.NaN : Number(raw);
    if (!ok(n)) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `--${flag}: expected ${expected}, got ${JSON.stringify(raw)}`,
      );
    }
    return n;
  };
  const d = DEFAULT_SAMPLE_OPTIONS;
  return {
    maxTokens: number(
      'max-tokens',
      flags['max-tokens'],
      d.maxTokens,
      (n) => Number.isInteger(n) && n >= 1,
      'an integer >= 1',
    ),
    temperature: number(
      'temperature',
      flags.temperature,
      d.temperature,
      (n) => Number.isFinite(n) && n >= 0,
      'a number >= 0 (0: always the most likely token)',
    ),
    topK: number(
      'top-k',
      flags['top-k'],
      d.topK,
      (n) => Number.isInteger(n) && n >= 0,
      'an integer >= 0 (0: no limit)',
    ),
    topP: number('top-p', flags['top-p'], d.topP, (n) => n > 0 && n <= 1, 'a number in (0, 1]'),
    seed: number('seed', flags.seed, d.seed, (n) => Number.isSafeInteger(n), 'an integer'),
  };
}
