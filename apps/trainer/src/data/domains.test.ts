import { BpeTokenizer, END_OF_TEXT } from '@switchyard/model';
import { describe, expect, it } from 'vitest';
import { buildDomainCorpus, cipherTable, DOMAIN_CORPUS_DOMAINS, encipher } from './domains';

describe('buildDomainCorpus', () => {
  const samples = buildDomainCorpus({ textsPerDomain: 6, generatedChars: 2000 });

  it('holds every domain with the requested number of texts', () => {
    for (const d of DOMAIN_CORPUS_DOMAINS) {
      expect(samples.filter((s) => s.domain === d)).toHaveLength(6);
    }
    const code = samples.find((s) => s.domain === 'code')!.text;
    expect(code).toMatch(/export (function|class) \w+/);
    expect(code.length).toBeGreaterThanOrEqual(2000);
    const arith = samples.find((s) => s.domain === 'arithmetic')!.text.split('\n');
    for (const line of arith.slice(0, 50)) {
      const [lhs, rhs] = line.split('=');
      // The results are right: the model can learn arithmetic, not noise.
      expect(Function(`return ${lhs}`)()).toBe(Number(rhs));
    }
  });

  it('is deterministic', () => {
    const again = buildDomainCorpus({ textsPerDomain: 6, generatedChars: 2000 });
    expect(again).toEqual(samples);
  });

  it('writes prose, code and arithmetic in ASCII and the cipher in non-ASCII only', () => {
    for (const s of samples) {
      const codes = [...s.text].map((ch) => ch.codePointAt(0)!);
      if (s.domain === 'cipher') expect(codes.filter((c) => c < 0x80)).toEqual([]);
      else expect(codes.filter((c) => c !== 9 && c !== 10 && (c < 0x20 || c > 0x7e))).toEqual([]);
    }
  });

  it('enciphers English as a bijective character substitution keeping letters and digits', () => {
    const table = cipherTable();
    const values = [...table.values()];
    expect(new Set(values).size).toBe(values.length);
    expect(encipher('Ab 1.', table)).toMatch(/^\p{Lu}\p{Ll}[^\p{L}\p{N}]\p{N}[^\p{L}\p{N}]$/u);
    expect(encipher('the the', table).slice(0, 3)).toBe(encipher('the', table));
  });

  it('gives the cipher BPE tokens no other domain uses', async () => {
    const tok = BpeTokenizer.train({ texts: samples.map((s) => s.text) }, { vocabSize: 600 });
    const ids = await tok.encodeBatch(samples.map((s) => s.text));
    const eot = tok.specialTokens[END_OF_TEXT];
    const cipher = new Set<number>();
    const rest = new Set<number>();
    samples.forEach((s, i) => {
      for (const id of ids[i]!) if (id !== eot) (s.domain === 'cipher' ? cipher : rest).add(id);
    });
    expect(cipher.size).toBeGreaterThan(50);
    expect([...cipher].filter((id) => rest.has(id))).toEqual([]);
  });

  it('refuses a bad size', () => {
    expect(() => buildDomainCorpus({ textsPerDomain: 251 })).toThrow(
      /textsPerDomain must be an integer in \[2, 250\].*got 251/,
    );
  });
});
