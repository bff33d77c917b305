/**
 * Byte-level BPE as in GPT-2 and Hugging Face tokenizers' `ByteLevel` pre-tokenizer + `BPE` model:
 * split on added tokens, pre-tokenize with the GPT-2 pattern, map each UTF-8 byte to a printable
 * character, then apply merges lowest rank first.
 */

/** Byte -> printable character (GPT-2's `bytes_to_unicode`). */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = new Array(256);
  const direct = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    out[b] = String.fromCodePoint(direct(b) ? b : 256 + n++);
  }
  return out;
})();

/** Printable character -> byte, the inverse of {@link BYTE_TO_CHAR}. */
export const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/**
 * The GPT-2 pre-tokenization pattern Hugging Face's ByteLevel pre-tokenizer uses, with `\s` spelled
 * as Unicode White_Space (what the Rust regex engine matches; JavaScript's `\s` differs on U+0085 and U+FEFF).
 */
const PRETOKENIZE =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

/** Splits text into pre-tokens (words with their leading space). */
export function preTokenize(text: string): string[] {
  return text.match(PRETOKENIZE) ?? [];
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });

/** A pre-token's bytes as byte-level characters. */
export function toByteChars(piece: string): string[] {
  const bytes = encoder.encode(piece);
  const out: string[] = new Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = BYTE_TO_CHAR[bytes[i]!]!;
  return out;
}

/** Decodes a string of byte-level characters back to text (invalid UTF-8 becomes U+FFFD). */
export function fromByteChars(chars: string): string {
  return decoder.decode(byteCharsToBytes(chars));
}

/** The bytes byte-level symbols stand for (a character outside the byte alphabet as its UTF-8). */
export function byteCharsToBytes(chars: string): Uint8Array {
  const bytes: number[] = [];
  for (const ch of chars) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b === undefined) bytes.push(...encoder.encode(ch));
    else bytes.push(b);
  }
  return new Uint8Array(bytes);
}

/** Merge table: "left right" -> rank (position in the merge list). */
export type MergeRanks = ReadonlyMap<string, number>;

/**
 * Applies BPE merges to one pre-token: repeatedly merges every occurrence (left to right) of the
 * adjacent pair with the lowest rank, as GPT-2 and Hugging Face tokenizers do.
 */
export function bpe(symbols: string[], ranks: MergeRanks): string[] {
  let word = symbols;
  while (word.length > 1) {
    let best = Number.POSITIVE_INFINITY;
    let bestLeft = '';
    let bestRight = '';
    for (let i = 0; i < word.length - 1; i++) {
      const r = ranks.get(`${word[i]} ${word[i + 1]}`);
      if (r !== undefined && r < best) {
        best = r;
        bestLeft = word[i]!;
        bestRight = word[i + 1]!;
      }
    }
    if (best === Number.POSITIVE_INFINITY) break;
    const next: string[] = [];
    for (let i = 0; i < word.length; i++) {
      if (i < word.length - 1 && word[i] === bestLeft && word[i + 1] === bestRight) {
        next.push(bestLeft + bestRight);
        i++;
      } else {
        next.push(word[i]!);
      }
    }
    word = next;
  }
  return word;
}

/** Splits text around added (special) tokens, longest match first; returns [text, specialId | -1] parts. */
export function splitOnAddedTokens(
  text: string,
  added: readonly { readonly content: string; readonly id: number }[],
): [string, number][] {
  if (added.length === 0) return [[text, -1]];
  const sorted = [...added].sort((a, b) => b.content.length - a.content.length);
  const out: [string, number][] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    let hit: { content: string; id: number } | undefined;
    for (const t of sorted) {
      if (t.content.length > 0 && text.startsWith(t.content, i)) {
        hit = t;
        break;
      }
    }
    if (hit) {
      if (i > start) out.push([text.slice(start, i), -1]);
      out.push([hit.content, hit.id]);
      i += hit.content.length;
      start = i;
    } else {
      i++;
    }
  }
  if (start < text.length) out.push([text.slice(start), -1]);
  return out;
}
