/**
 * Byte-level BPE tokenizer: trained with Hugging Face's `tokenizers` package, stored as a standard
 * `tokenizer.json`, encoded and decoded synchronously in JavaScript (the native binding's encode is
 * asynchronous; {@link BpeTokenizer.encodeBatch} uses it for large corpora).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { invalidArgument, SwitchyardError } from '@switchyard/tensor';
import { Tokenizer } from 'tokenizers';
import { z } from 'zod';
import {
  BYTE_TO_CHAR,
  bpe,
  byteCharsToBytes,
  fromByteChars,
  type MergeRanks,
  preTokenize,
  splitOnAddedTokens,
  toByteChars,
} from './internal/bytelevel';
import { formatZodError } from './internal/zod';

/**
 * Runs the native BPE trainer in a child Node process whose stdout is discarded: the binding prints
 * progress lines straight to file descriptor 1, which would otherwise land in the caller's output.
 * Writes the trained tokenizer.json to `out`.
 */
function trainNative(fn: string, files: readonly string[], out: string): void {
  const binding = createRequire(import.meta.url).resolve('tokenizers');
  const script = [
    'const [binding, out, ...files] = process.argv.slice(1);',
    'const { BPE, byteLevelPreTokenizer, Tokenizer } = require(binding);',
    'try {',
    '  const t = new Tokenizer(BPE.empty());',
    '  t.setPreTokenizer(byteLevelPreTokenizer(false, true));',
    '  t.train(files);',
    '  t.save(out, false);',
    '} catch (e) {',
    '  process.stderr.write(String(e && e.message ? e.message : e));',
    '  process.exit(2);',
    '}',
  ].join('\n');
  const r = spawnSync(process.execPath, ['-e', script, binding, out, ...files], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
  });
  if (r.status !== 0 || !existsSync(out)) {
    const why = r.error ? String(r.error) : (r.stderr ?? '').trim() || `exit status ${r.status}`;
    throw new SwitchyardError('IO_ERROR', `${fn}() could not train on ${files.join(', ')}: ${why}`, {
      ...(r.error ? { cause: r.error } : {}),
    });
  }
}

/** The end-of-text token added by default; use it to separate documents and as a stop token. */
export const END_OF_TEXT = '<|endoftext|>';

/** Options of {@link BpeTokenizer.train}. */
export interface BpeTrainOptions {
  /** Target vocabulary size, special tokens and the 256 byte symbols included; at least 256 + specials. */
  readonly vocabSize: number;
  /** Special tokens, given the first ids in this order. Default `['<|endoftext|>']`. */
  readonly specialTokens?: readonly string[];
}

/** What {@link BpeTokenizer.train} learns from: files on disk, or texts in memory. */
export type TokenizerTrainingInput =
  | { readonly files: readonly string[] }
  | { readonly texts: readonly string[] };

/** One entry of `added_tokens` in tokenizer.json. */
export interface AddedTokenJson {
  readonly id: number;
  readonly content: string;
  readonly single_word: boolean;
  readonly lstrip: boolean;
  readonly rstrip: boolean;
  readonly normalized: boolean;
  readonly special: boolean;
}

/** The parts of Hugging Face's tokenizer.json this tokenizer reads and writes. */
export interface TokenizerJson {
  readonly version: string;
  readonly added_tokens: readonly AddedTokenJson[];
  readonly pre_tokenizer: {
    readonly type: 'ByteLevel';
    readonly add_prefix_space: boolean;
    readonly use_regex: boolean;
    readonly [key: string]: unknown;
  };
  readonly model: {
    readonly type: 'BPE';
    readonly [key: string]: unknown;
    readonly vocab: Readonly<Record<string, number>>;
    readonly merges: readonly (readonly [string, string])[] | readonly string[];
  };
  readonly [key: string]: unknown;
}

const tokenizerJsonSchema = z.looseObject({
  version: z.string(),
  added_tokens: z.array(
    z.looseObject({
      id: z.number().int().min(0),
      content: z.string().min(1),
      special: z.boolean(),
    }),
  ),
  normalizer: z.null().optional(),
  pre_tokenizer: z.looseObject({
    type: z.literal('ByteLevel'),
    add_prefix_space: z.literal(false),
    use_regex: z.literal(true),
  }),
  model: z.looseObject({
    type: z.literal('BPE'),
    vocab: z.record(z.string(), z.number().int().min(0)),
    merges: z.union([z.array(z.tuple([z.string(), z.string()])), z.array(z.string())]),
    ignore_merges: z.literal(false).optional(),
    continuing_subword_prefix: z.null().optional(),
    end_of_word_suffix: z.null().optional(),
  }),
});

const CACHE_LIMIT = 200_000;

/**
 * A byte-level BPE tokenizer in Hugging Face's format: any text round-trips (`decode(encode(t)) === t`).
 *
 * When to use: to turn a training corpus into token ids and back; the trainer saves it into every
 * checkpoint as tokenizer.json, which Python's `tokenizers`/`transformers` load directly.
 *
 * @example
 * ```ts
 * const tok = BpeTokenizer.train({ texts: ['the cat sat on the mat'] }, { vocabSize: 300 });
 * const ids = tok.encode('the cat');
 * tok.decode(ids); // 'the cat'
 * ```
 */
export class BpeTokenizer {
  /** Number of ids (largest id + 1). */
  readonly vocabSize: number;
  /** Special tokens and their ids. */
  readonly specialTokens: Readonly<Record<string, number>>;
  private readonly json: TokenizerJson;
  private readonly vocab: Map<string, number>;
  private readonly idToTok: string[];
  private readonly ranks: MergeRanks;
  private readonly added: { content: string; id: number }[];
  private readonly addedIds: Set<number>;
  private readonly cache = new Map<string, number[]>();
  private native: Tokenizer | undefined;

  private constructor(json: TokenizerJson) {
    this.json = json;
    this.vocab = new Map(Object.entries(json.model.vocab));
    this.added = json.added_tokens.map((t) => ({ content: t.content, id: t.id }));
    this.addedIds = new Set(this.added.map((t) => t.id));
    let maxId = -1;
    for (const id of this.vocab.values()) maxId = Math.max(maxId, id);
    for (const t of this.added) maxId = Math.max(maxId, t.id);
    this.vocabSize = maxId + 1;
    this.idToTok = new Array<string>(this.vocabSize).fill('');
    for (const [tok, id] of this.vocab) this.idToTok[id] = tok;
    for (const t of this.added) this.idToTok[t.id] = t.content;
    const ranks = new Map<string, number>();
    json.model.merges.forEach((m, i) => {
      const key = typeof m === 'string' ? m : `${m[0]} ${m[1]}`;
      if (!ranks.has(key)) ranks.set(key, i);
    });
    this.ranks = ranks;
    this.specialTokens = Object.fromEntries(
      json.added_tokens.filter((t) => t.special).map((t) => [t.content, t.id]),
    );
    for (const ch of BYTE_TO_CHAR) {
      if (!this.vocab.has(ch)) {
        throw new SwitchyardError(
          'CONFIG_INVALID',
          `tokenizer.json: model.vocab lacks the byte symbol ${JSON.stringify(ch)}; a byte-level BPE vocabulary must hold all 256`,
        );
      }
    }
  }

  /**
   * Trains a byte-level BPE tokenizer with Hugging Face `tokenizers`, then keeps the first merges so
   * the vocabulary has `vocabSize` entries (BPE learns merges greedily, so a prefix of the merge list
   * is the tokenizer a smaller target would have learned) and adds any byte the corpus lacked.
   *
   * When to use: once per corpus, before training a model; the result may be smaller than
   * `vocabSize` when the corpus supports fewer merges.
   *
   * @example
   * ```ts
   * const tok = BpeTokenizer.train({ files: ['corpus.txt'] }, { vocabSize: 4096 });
   * ```
   */
  static train(input: TokenizerTrainingInput, options: BpeTrainOptions): BpeTokenizer {
    const fn = 'BpeTokenizer.train';
    const specials = [...(options.specialTokens ?? [END_OF_TEXT])];
    if (
      new Set(specials).size !== specials.length ||
      specials.some((s) => typeof s !== 'string' || s === '')
    ) {
      throw invalidArgument(fn, 'specialTokens', 'distinct non-empty strings', specials);
    }
    const minVocab = 256 + specials.length;
    if (!Number.isInteger(options.vocabSize) || options.vocabSize < minVocab) {
      throw invalidArgument(
        fn,
        'vocabSize',
        `an integer >= ${minVocab} (256 bytes + special tokens)`,
        options.vocabSize,
      );
    }
    const work = mkdtempSync(join(tmpdir(), 'switchyard-bpe-'));
    try {
      let files: string[];
      if ('texts' in input) {
        if (!Array.isArray(input.texts) || input.texts.length === 0)
          throw invalidArgument(fn, 'input.texts', 'a non-empty array of strings', input.texts);
        const p = join(work, 'corpus.txt');
        writeFileSync(p, input.texts.join('\n'));
        files = [p];
      } else if ('files' in input && Array.isArray(input.files) && input.files.length > 0) {
        files = [...input.files];
      } else {
        throw invalidArgument(fn, 'input', '{ files: string[] } or { texts: string[] }, non-empty', input);
      }
      const out = join(work, 'trained.json');
      trainNative(fn, files, out);
      const trained = JSON.parse(readFileSync(out, 'utf8')) as TokenizerJson;
      return new BpeTokenizer(buildJson(trained.model.merges, specials, options.vocabSize));
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  /**
   * Loads a tokenizer from a tokenizer.json path, its text, or its parsed object.
   *
   * When to use: to restore the tokenizer saved in a checkpoint or by {@link BpeTokenizer.save}.
   *
   * @example
   * ```ts
   * const tok = BpeTokenizer.load('ckpt/tokenizer.json');
   * ```
   */
  static load(source: string | TokenizerJson): BpeTokenizer {
    let raw: unknown = source;
    if (typeof source === 'string') {
      const text = source.trimStart().startsWith('{') ? source : readText(source);
      try {
        raw = JSON.parse(text);
      } catch (e) {
        throw new SwitchyardError('CONFIG_INVALID', `tokenizer.json is not valid JSON: ${String(e)}`, {
          cause: e,
        });
      }
    }
    const parsed = tokenizerJsonSchema.safeParse(raw);
    if (!parsed.success) {
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `tokenizer.json is not a byte-level BPE tokenizer this library reads:\n${formatZodError(parsed.error)}`,
      );
    }
    return new BpeTokenizer(parsed.data as unknown as TokenizerJson);
  }

  /** The tokenizer.json object (Hugging Face format). */
  toJSON(): TokenizerJson {
    return this.json;
  }

  /** The tokenizer.json text. */
  toString(): string {
    return JSON.stringify(this.json, null, 1);
  }

  /**
   * Writes tokenizer.json to `path`.
   *
   * @example
   * ```ts
   * tok.save('out/tokenizer.json');
   * ```
   */
  save(path: string): void {
    try {
      writeFileSync(path, this.toString());
    } catch (e) {
      throw new SwitchyardError('IO_ERROR', `BpeTokenizer.save() could not write ${path}: ${String(e)}`, {
        cause: e,
      });
    }
  }

  /**
   * Token ids of `text`; special tokens written literally in the text map to their ids.
   *
   * @example
   * ```ts
   * tok.encode('hello<|endoftext|>'); // [..., tok.specialTokens['<|endoftext|>']]
   * ```
   */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw invalidArgument('BpeTokenizer.encode', 'text', 'a string', text);
    const out: number[] = [];
    for (const [part, specialId] of splitOnAddedTokens(text, this.added)) {
      if (specialId >= 0) {
        out.push(specialId);
        continue;
      }
      for (const piece of preTokenize(part)) {
        let ids = this.cache.get(piece);
        if (!ids) {
          ids = bpe(toByteChars(piece), this.ranks).map((s) => this.vocab.get(s)!);
          if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
          this.cache.set(piece, ids);
        }
        for (const id of ids) out.push(id);
      }
    }
    return out;
  }

  /**
   * Encodes many texts with the native Hugging Face tokenizer (same ids as {@link encode}, faster
   * on large corpora).
   *
   * @example
   * ```ts
   * const [a, b] = await tok.encodeBatch(['first document', 'second document']);
   * ```
   */
  async encodeBatch(texts: readonly string[]): Promise<number[][]> {
    this.native ??= Tokenizer.fromString(JSON.stringify(this.json));
    const encs = await this.native.encodeBatch([...texts], { addSpecialTokens: false });
    return encs.map((e) => e.getIds());
  }

  /**
   * The text of a sequence of ids; bytes that do not form valid UTF-8 become U+FFFD.
   *
   * @example
   * ```ts
   * tok.decode(tok.encode('naïve café')); // 'naïve café'
   * ```
   */
  decode(ids: readonly number[]): string {
    let text = '';
    let run = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw invalidArgument(
          'BpeTokenizer.decode',
          `ids[${i}]`,
          `an integer in [0, ${this.vocabSize - 1}]`,
          id,
        );
      }
      if (this.addedIds.has(id)) {
        text += fromByteChars(run) + this.idToTok[id];
        run = '';
      } else {
        run += this.idToTok[id];
      }
    }
    return text + fromByteChars(run);
  }

  /**
   * The bytes of one token (a special token's as UTF-8). A token may hold part of a character, so
   * decoding single tokens can give U+FFFD where decoding the sequence does not.
   *
   * When to use: to report tokens exactly, e.g. the `bytes` of OpenAI-style logprobs.
   *
   * @example
   * ```ts
   * tok.tokenBytes(tok.encode('é')[0]!); // Uint8Array [0xc3, 0xa9] or its first byte
   * ```
   */
  tokenBytes(id: number): Uint8Array {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
      throw invalidArgument('BpeTokenizer.tokenBytes', 'id', `an integer in [0, ${this.vocabSize - 1}]`, id);
    const tok = this.idToTok[id]!;
    return this.addedIds.has(id) ? new TextEncoder().encode(tok) : byteCharsToBytes(tok);
  }

  /** The id of a token string (byte-level form, e.g. "Ġthe"), or undefined. */
  tokenToId(token: string): number | undefined {
    return this.vocab.get(token) ?? this.added.find((t) => t.content === token)?.id;
  }

  /** The token string of an id (byte-level form), or undefined. */
  idToToken(id: number): string | undefined {
    return Number.isInteger(id) && id >= 0 && id < this.vocabSize ? this.idToTok[id] : undefined;
  }
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new SwitchyardError('IO_ERROR', `BpeTokenizer.load() could not read ${path}: ${String(e)}`, {
      cause: e,
    });
  }
}

/** Builds tokenizer.json: special tokens, the 256 byte symbols, then merges in learned order up to `vocabSize`. */
function buildJson(
  learned: readonly (readonly [string, string])[] | readonly string[],
  specials: readonly string[],
  vocabSize: number,
): TokenizerJson {
  const vocab = new Map<string, number>();
  specials.forEach((s) => {
    vocab.set(s, vocab.size);
  });
  for (const ch of BYTE_TO_CHAR) vocab.set(ch, vocab.size);
  const merges: [string, string][] = [];
  for (const m of learned) {
    if (vocab.size >= vocabSize) break;
    const [a, b] = typeof m === 'string' ? (m.split(' ') as [string, string]) : m;
    if (!vocab.has(a) || !vocab.has(b)) continue;
    merges.push([a, b]);
    if (!vocab.has(a + b)) vocab.set(a + b, vocab.size);
  }
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
}
