import { BpeTokenizer } from '@switchyard/model';
import { describe, expect, it } from 'vitest';
import { TextStream } from './text';

// Byte-level ids only (no merges): a multi-byte character spans several tokens.
const tok = BpeTokenizer.train({ texts: ['ab'] }, { vocabSize: 257 });
const ids = (s: string) => tok.encode(s);

/** Pushes every token and returns the pieces handed out, the final flush last. */
function run(text: string, stops: string[]): { pieces: string[]; stream: TextStream } {
  const stream = new TextStream(tok, stops);
  const pieces = ids(text).map((id) => stream.push(id));
  pieces.push(stream.flush());
  return { pieces, stream };
}

describe('TextStream', () => {
  it('holds the bytes of a character until it is complete', () => {
    const { pieces, stream } = run('a é 日本 🎉!', []);
    expect(pieces.join('')).toBe('a é 日本 🎉!');
    expect(pieces.some((p) => p.includes('\uFFFD'))).toBe(false);
    // 🎉 is 4 bytes: three pushes give nothing, the fourth the whole character.
    const emoji = pieces.slice(-6, -2);
    expect(emoji).toEqual(['', '', '', '🎉']);
    expect(stream.stopped).toBe(false);
  });

  it('cuts at the first stop string, even across tokens, and never hands out its start', () => {
    const { pieces, stream } = run('hello\nUser: more', ['\nUser:', 'zz']);
    expect(stream.text).toBe('hello');
    expect(stream.stopped).toBe(true);
    expect(pieces.join('')).toBe('hello');
    // '\n' was held while it could begin the stop string.
    expect(pieces.slice(0, 6)).toEqual(['h', 'e', 'l', 'l', 'o', '']);
    const early = run('ab zz cd', ['cd', ' z']);
    expect(early.stream.text).toBe('ab');
  });

  it('releases held text once it can no longer start a stop string, and at the end', () => {
    const { pieces, stream } = run('a\nb\nU', ['\nUser:']);
    expect(pieces).toEqual(['a', '', '\nb', '', '', '\nU']);
    expect(stream.text).toBe('a\nb\nU');
    expect(stream.stopped).toBe(false);
  });

  it('writes a byte sequence that never completes as U+FFFD at the end', () => {
    const stream = new TextStream(tok, []);
    const bytes = ids('é');
    expect(stream.push(bytes[0]!)).toBe('');
    expect(stream.flush()).toBe('\uFFFD');
  });
});
