import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from 'tokenizers';
import { afterAll, describe, expect, it } from 'vitest';
import { BYTE_TO_CHAR, preTokenize } from './internal/bytelevel';
import { BpeTokenizer, END_OF_TEXT } from './tokenizer';

const CORPUS = [
  'The quick brown fox jumps over the lazy dog. The dog sleeps while the fox runs away.',
  "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
  'Numbers like 1234 and 56.78 appear; so do tabs\tand  double  spaces.\nNew lines too.\n\n',
  'Naïve café owners in Zürich serve crème brûlée — and 日本語 text, emoji 🎉 included.',
];
const tmp = mkdtempSync(join(tmpdir(), 'sy-tok-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('BpeTokenizer', () => {
  const tok = BpeTokenizer.train({ texts: CORPUS }, { vocabSize: 300 });

  it('has exactly the requested vocabulary: special tokens, 256 bytes, then merges', () => {
    expect(tok.vocabSize).toBe(300);
    expect(tok.specialTokens).toEqual({ [END_OF_TEXT]: 0 });
    // Every byte symbol is present, including bytes the corpus lacks (e.g. 0x00, 0xff).
    for (const ch of BYTE_TO_CHAR) expect(tok.tokenToId(ch)).toBeTypeOf('number');
    expect(tok.tokenToId(BYTE_TO_CHAR[0]!)).toBe(1);
    expect(tok.tokenToId(BYTE_TO_CHAR[255]!)).toBe(256);
    expect((tok.toJSON().model.merges as unknown[]).length).toBeGreaterThanOrEqual(300 - 257);
  });

  it('keeps the first merges of the full training run (a prefix of the same merge list)', () => {
    const big = BpeTokenizer.train({ texts: CORPUS }, { vocabSize: 400 });
    const small = tok.toJSON().model.merges as [string, string][];
    const large = big.toJSON().model.merges as [string, string][];
    expect(large.slice(0, small.length)).toEqual(small);
  });

  it('round-trips any text, including bytes never seen in training', () => {
    const texts = [...CORPUS, '', ' ', 'unseen: Ω ∑ \u0000 \u00a0 \u0085 \ufeff end', '🎉🎉 x'];
    for (const t of texts) expect(tok.decode(tok.encode(t))).toBe(t);
  });

  it('gives the bytes of each token: their concatenation is the text in UTF-8', () => {
    for (const t of CORPUS) {
      const parts = tok.encode(`${t}${END_OF_TEXT}`).map((id) => tok.tokenBytes(id));
      expect(Buffer.concat(parts).toString('utf8')).toBe(`${t}${END_OF_TEXT}`);
    }
    expect(() => tok.tokenBytes(300)).toThrow(
      /`id` passed to BpeTokenizer.tokenBytes\(\) must be an integer in \[0, 299\], got 300/,
    );
  });

  it('encodes exactly like the Hugging Face tokenizers native encoder', async () => {
    const texts = [
      ...CORPUS,
      'The fox, the dog and the café: 12 apples, 3.5 pears!',
      "we'll see   what  they've done\t\twith it's   spaces",
      `first document${END_OF_TEXT}second document`,
      'mixed\u00a0nbsp and\u2003em space and \u0085 NEL',
    ];
    const native = Tokenizer.fromString(tok.toString());
    for (const t of texts) {
      const enc = await native.encode(t);
      expect(tok.encode(t)).toEqual(enc.getIds());
    }
    expect(await tok.encodeBatch(texts)).toEqual(texts.map((t) => tok.encode(t)));
  });

  it('maps special tokens written in the text to their ids', () => {
    const ids = tok.encode(`a${END_OF_TEXT}b`);
    expect(ids).toContain(0);
    expect(tok.decode(ids)).toBe(`a${END_OF_TEXT}b`);
  });

  it('splits words the way the GPT-2 pattern does', () => {
    expect(preTokenize("Hello world's  end")).toEqual(['Hello', ' world', "'s", ' ', ' end']);
  });

  it('saves and loads tokenizer.json (path, text and object give the same tokenizer)', () => {
    const path = join(tmp, 'tokenizer.json');
    tok.save(path);
    const fromPath = BpeTokenizer.load(path);
    const fromText = BpeTokenizer.load(readFileSync(path, 'utf8'));
    const fromObject = BpeTokenizer.load(tok.toJSON());
    for (const t of [fromPath, fromText, fromObject]) {
      expect(t.vocabSize).toBe(300);
      expect(t.encode(CORPUS[1]!)).toEqual(tok.encode(CORPUS[1]!));
    }
  });

  it('trains from files', () => {
    const file = join(tmp, 'corpus.txt');
    writeFileSync(file, CORPUS.join('\n'));
    const fromFile = BpeTokenizer.train(
      { files: [file] },
      { vocabSize: 280, specialTokens: ['<s>', '</s>'] },
    );
    expect(fromFile.vocabSize).toBe(280);
    expect(fromFile.specialTokens).toEqual({ '<s>': 0, '</s>': 1 });
  });

  it('prints nothing while training (the native trainer writes progress lines to stdout)', () => {
    const source = fileURLToPath(new URL('./tokenizer.ts', import.meta.url));
    const script = `import { BpeTokenizer } from ${JSON.stringify(source)};
const t = BpeTokenizer.train({ texts: ${JSON.stringify(CORPUS)} }, { vocabSize: 280 });
process.stderr.write('vocab ' + t.vocabSize);`;
    const r = spawnSync(
      process.execPath,
      ['--conditions=@switchyard/source', '--import', 'tsx', '--input-type=module', '-e', script],
      { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } },
    );
    expect(r.stderr).toContain('vocab 280');
    expect(r.stdout).toBe('');
  }, 30_000);

  it('returns a smaller vocabulary when the corpus supports fewer merges', () => {
    const t = BpeTokenizer.train({ texts: ['ab ab ab'] }, { vocabSize: 5000 });
    expect(t.vocabSize).toBeLessThan(300);
    expect(t.decode(t.encode('ab ba'))).toBe('ab ba');
  });

  it('rejects bad options and files with messages naming the problem', () => {
    expect(() => BpeTokenizer.train({ texts: CORPUS }, { vocabSize: 100 })).toThrow(
      /`vocabSize` passed to BpeTokenizer.train\(\) must be an integer >= 257/,
    );
    expect(() => BpeTokenizer.train({ texts: [] }, { vocabSize: 300 })).toThrow(/`input.texts`/);
    expect(() => BpeTokenizer.train({ files: [join(tmp, 'nope.txt')] }, { vocabSize: 300 })).toThrow(
      /could not train on .*nope\.txt: .+/,
    );
    expect(() => BpeTokenizer.load('{"version": "1.0"}')).toThrow(/added_tokens.*\n?.*|model/s);
    const wrongModel = { ...tok.toJSON(), model: { ...tok.toJSON().model, type: 'WordPiece' } };
    expect(() => BpeTokenizer.load(wrongModel as never)).toThrow(/model\.type: expected "BPE"/);
    expect(() => BpeTokenizer.load(join(tmp, 'missing.json'))).toThrow(/could not read .*missing\.json/);
    expect(() => tok.decode([0, 300])).toThrow(
      /`ids\[1\]` passed to BpeTokenizer.decode\(\) must be an integer in \[0, 299\]/,
    );
  });
});
