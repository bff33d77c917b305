import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTextFiles, parseJsonl, splitByText, splitPlainText } from './sources';
import type { TextSample } from './types';

describe('parseJsonl', () => {
  it('reads text and domain, defaulting the domain to the file name', () => {
    const s = parseJsonl('{"text": "a", "domain": "x"}\n\n{"text": "b"}\n', '/d/poems.jsonl');
    expect(s).toEqual([
      { id: 'poems.jsonl:1', domain: 'x', text: 'a' },
      { id: 'poems.jsonl:3', domain: 'poems', text: 'b' },
    ]);
  });

  it('names the line of a bad record', () => {
    expect(() => parseJsonl('{"text": "a"}\n{"text": 3}\n', 'f.jsonl')).toThrow(
      /f\.jsonl:2: "text" must be a string, got number/,
    );
    expect(() => parseJsonl('{"text": "a"\n', 'f.jsonl')).toThrow(/f\.jsonl:1: not valid JSON/);
    expect(() => parseJsonl('[1]\n', 'f.jsonl')).toThrow(/f\.jsonl:1: expected a JSON object/);
  });
});

describe('loadTextFiles', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sy-src-'));

  it('cuts plain text at blank lines into samples of a minimum size', () => {
    const s = splitPlainText('one\n\ntwo two\n\n\nthree', '/x/story.txt', 5);
    expect(s.map((x) => x.text)).toEqual(['one\ntwo two', 'three']);
    expect(s.every((x) => x.domain === 'story')).toBe(true);
  });

  it('reads JSONL and text files by extension', () => {
    writeFileSync(join(dir, 'a.jsonl'), '{"text": "hello", "domain": "d1"}\n');
    writeFileSync(join(dir, 'b.txt'), 'plain text');
    const s = loadTextFiles([join(dir, 'a.jsonl'), join(dir, 'b.txt')]);
    expect(s.map((x) => [x.domain, x.text])).toEqual([
      ['d1', 'hello'],
      ['b', 'plain text'],
    ]);
  });

  it('rejects a missing file with one clear error', () => {
    expect(() => loadTextFiles([join(dir, 'missing.jsonl')])).toThrow(
      /data file .*missing\.jsonl does not exist/,
    );
    writeFileSync(join(dir, 'empty.txt'), '\n\n');
    expect(() => loadTextFiles([join(dir, 'empty.txt')])).toThrow(/holds no text/);
  });
});

describe('splitByText', () => {
  const samples: TextSample[] = [];
  for (const d of ['a', 'b', 'c'])
    for (let i = 0; i < 10; i++) samples.push({ id: `${d}${i}`, domain: d, text: `${d} ${i}` });

  it('holds out whole texts per domain, seeded', () => {
    const s1 = splitByText(samples, 0.2, 7);
    const s2 = splitByText(samples, 0.2, 7);
    const s3 = splitByText(samples, 0.2, 8);
    expect(s1.val.map((x) => x.id)).toEqual(s2.val.map((x) => x.id));
    expect(s1.val.map((x) => x.id)).not.toEqual(s3.val.map((x) => x.id));
    expect(s1.domains).toEqual(['a', 'b', 'c']);
    for (const d of s1.domains) expect(s1.val.filter((x) => x.domain === d)).toHaveLength(2);
    const trainIds = new Set(s1.train.map((x) => x.id));
    expect(s1.val.some((x) => trainIds.has(x.id))).toBe(false);
    expect(s1.train.length + s1.val.length).toBe(30);
  });

  it('keeps at least one text for training and refuses an empty validation split', () => {
    const two = samples.filter((s) => s.domain === 'a').slice(0, 2);
    const s = splitByText(two, 0.5, 1);
    expect([s.train.length, s.val.length]).toEqual([1, 1]);
    expect(() => splitByText(two.slice(0, 1), 0.1, 1)).toThrow(/validation split is empty/);
  });
});
