/**
 * User data: plain text files and JSONL files of `{"text": ..., "domain": ...}` records, and the
 * seeded train/validation split by text.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { Rng, SwitchyardError } from '@switchyard/tensor';
import type { CorpusSplit, TextSample } from './types';

/** How a data file is read. */
export type DataFormat = 'auto' | 'text' | 'jsonl';

/** Options of {@link loadTextFiles}. */
export interface TextFileOptions {
  /** `auto` (default) reads `.jsonl` / `.ndjson` files as JSONL and everything else as text. */
  readonly format?: DataFormat;
  /** Plain text files are cut at blank lines into samples of at least this many characters (default 4000). */
  readonly sampleChars?: number;
}

function domainOfFile(path: string): string {
  return basename(path, extname(path));
}

function readDataFile(path: string): string {
  if (!existsSync(path)) {
    throw new SwitchyardError('DATA_INVALID', `data file ${path} does not exist`, { details: { path } });
  }
  if (!statSync(path).isFile()) {
    throw new SwitchyardError('DATA_INVALID', `data file ${path} is not a regular file`, {
      details: { path },
    });
  }
  return readFileSync(path, 'utf8');
}

/** Parses JSONL text: one `{"text": string, "domain"?: string}` object per non-empty line. */
export function parseJsonl(content: string, path: string): TextSample[] {
  const out: TextSample[] = [];
  const lines = content.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new SwitchyardError(
        'DATA_INVALID',
        `${path}:${i + 1}: not valid JSON (${(e as Error).message})`,
        {
          cause: e,
        },
      );
    }
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) {
      throw new SwitchyardError(
        'DATA_INVALID',
        `${path}:${i + 1}: expected a JSON object with a "text" string`,
      );
    }
    const { text, domain } = rec as { text?: unknown; domain?: unknown };
    if (typeof text !== 'string') {
      throw new SwitchyardError(
        'DATA_INVALID',
        `${path}:${i + 1}: "text" must be a string, got ${text === undefined ? 'nothing' : typeof text}`,
      );
    }
    if (domain !== undefined && typeof domain !== 'string') {
      throw new SwitchyardError(
        'DATA_INVALID',
        `${path}:${i + 1}: "domain" must be a string, got ${typeof domain}`,
      );
    }
    if (text.length === 0) continue;
    out.push({ id: `${basename(path)}:${i + 1}`, domain: domain ?? domainOfFile(path), text });
  }
  return out;
}

/** Cuts plain text at blank lines into samples of at least `sampleChars` characters. */
export function splitPlainText(content: string, path: string, sampleChars = 4000): TextSample[] {
  const paragraphs = content
    .replace(/\r\n/g, '\n')
    .split(/\n\s*\n/)
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  const out: TextSample[] = [];
  const domain = domainOfFile(path);
  let cur: string[] = [];
  let len = 0;
  const flush = (): void => {
    if (cur.length === 0) return;
    out.push({ id: `${basename(path)}#${out.length}`, domain, text: cur.join('\n') });
    cur = [];
    len = 0;
  };
  for (const p of paragraphs) {
    cur.push(p);
    len += p.length + 1;
    if (len >= sampleChars) flush();
  }
  flush();
  return out;
}

/**
 * Reads the user's data files: JSONL records keep their `domain` (the file name when absent); plain
 * text files become samples cut at paragraph boundaries, with the file name as their domain.
 *
 * When to use: training on your own text instead of the Brown corpus.
 *
 * @example
 * ```ts
 * const samples = loadTextFiles(['data/news.jsonl', 'data/poems.txt']);
 * ```
 */
export function loadTextFiles(paths: readonly string[], options: TextFileOptions = {}): TextSample[] {
  if (paths.length === 0) throw new SwitchyardError('DATA_INVALID', 'no data files given');
  const out: TextSample[] = [];
  for (const path of paths) {
    const content = readDataFile(path);
    const ext = extname(path).toLowerCase();
    const format =
      options.format === 'auto' || options.format === undefined
        ? ext === '.jsonl' || ext === '.ndjson'
          ? 'jsonl'
          : 'text'
        : options.format;
    const samples =
      format === 'jsonl' ? parseJsonl(content, path) : splitPlainText(content, path, options.sampleChars);
    if (samples.length === 0) throw new SwitchyardError('DATA_INVALID', `data file ${path} holds no text`);
    out.push(...samples);
  }
  return out;
}

/**
 * Splits samples into training and validation sets by whole text, per domain, with a seeded shuffle:
 * each domain with at least two texts gives `max(1, round(n * valFraction))` of them to validation.
 *
 * When to use: before tokenising, so no text is in both sets.
 *
 * @example
 * ```ts
 * const { train, val, domains } = splitByText(loadBrownCorpus(), 0.1, 1234);
 * ```
 */
export function splitByText(samples: readonly TextSample[], valFraction: number, seed: number): CorpusSplit {
  const byDomain = new Map<string, TextSample[]>();
  for (const s of samples) {
    const list = byDomain.get(s.domain) ?? [];
    list.push(s);
    byDomain.set(s.domain, list);
  }
  const domains = [...byDomain.keys()].sort();
  const rng = new Rng(seed).fork('split');
  const train: TextSample[] = [];
  const val: TextSample[] = [];
  for (const d of domains) {
    const list = byDomain.get(d)!;
    const order = rng.fork(d).permutation(list.length);
    const nVal =
      valFraction <= 0 || list.length < 2
        ? 0
        : Math.min(list.length - 1, Math.max(1, Math.round(list.length * valFraction)));
    order.forEach((idx, i) => {
      (i < nVal ? val : train).push(list[idx]!);
    });
  }
  if (train.length === 0) throw new SwitchyardError('DATA_INVALID', 'the training split is empty');
  if (valFraction > 0 && val.length === 0) {
    throw new SwitchyardError(
      'DATA_INVALID',
      'the validation split is empty: give at least two texts in some domain, or set data.valFraction to 0',
    );
  }
  return { train, val, domains };
}
