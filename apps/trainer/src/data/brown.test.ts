import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BROWN_GENRES, brownCorpusDir, brownToText, detokenize, loadBrownCorpus, stripTag } from './brown';

describe('detokenize', () => {
  it('restores quotes, punctuation spacing and brackets', () => {
    expect(detokenize(['He', 'said', '``', 'no', "''", '.'])).toBe('He said "no."');
    expect(detokenize(['a', ',', 'b', '(', 'c', ')', 'd', ';', ';', 'e', '?'])).toBe('a, b (c) d; e?');
    expect(detokenize(['Jr.', '.'])).toBe('Jr.');
    expect(detokenize(['``', 'Yes', "''", ',', 'she', 'said'])).toBe('"Yes," she said');
    expect(detokenize(["'", 'pro', "'", 'and', "'", 'con', "'"])).toBe("'pro' and 'con'");
  });
});

describe('brownToText', () => {
  it('strips tags, keeps paragraphs and puts headlines on their own line', () => {
    const tagged =
      "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\nIt/pps ended/vbd ./.\n\n\n" +
      '\tMerger/nn-hl proposed/vbn-hl However/rb ,/, it/pps did/dod ./.\n';
    expect(brownToText(tagged)).toBe('The jury said "no." It ended.\nMerger proposed\nHowever, it did.');
  });

  it('splits a token at its last slash', () => {
    expect(stripTag('1/2/cd')).toBe('1/2');
    expect(stripTag('and/cc')).toBe('and');
  });
});

describe('loadBrownCorpus', () => {
  const texts = loadBrownCorpus();

  it('loads 500 texts in 15 genres, named as in the corpus category file', () => {
    expect(texts).toHaveLength(500);
    const cats = new Map(
      readFileSync(join(brownCorpusDir(), 'cats.txt'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/) as [string, string]),
    );
    for (const t of texts) expect(t.domain).toBe(cats.get(t.id));
    expect(new Set(texts.map((t) => t.domain)).size).toBe(15);
    expect(Object.keys(BROWN_GENRES)).toHaveLength(15);
  });

  it('leaves no part-of-speech tags in the text', () => {
    for (const t of texts) {
      expect(t.text).not.toMatch(/[a-z]\/(at|nn|vbd|in|jj|np|cc|rb)\s/);
      expect(t.text).not.toMatch(/``|(^|\s)''(\s|$)/);
      expect(t.text.length).toBeGreaterThan(5000);
    }
  });

  it('filters by genre and caps texts per genre', () => {
    const some = loadBrownCorpus({ genres: ['humor', 'news'], maxTextsPerGenre: 3 });
    expect(some.map((t) => t.domain).sort()).toEqual(['humor', 'humor', 'humor', 'news', 'news', 'news']);
  });
});
