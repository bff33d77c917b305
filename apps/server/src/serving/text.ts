/**
 * Generated tokens to text, incrementally: bytes of a character split across tokens are held until
 * the character is complete, and text that could be the start of a stop string is held until it is
 * known not to be one. The final text is `tokenizer.decode(tokens)` cut before the first stop string.
 */
import type { BpeTokenizer } from '@switchyard/model';

/** Tokens a partial character may be held for before it is written out as U+FFFD. */
const MAX_HELD_TOKENS = 8;

export class TextStream {
  /** The text so far (cut at a stop string once one matched). */
  text = '';
  /** Whether a stop string ended the text. */
  stopped = false;
  private readonly ids: number[] = [];
  /** First id whose bytes are not in `text` yet. */
  private pendingFrom = 0;
  /** Characters of `text` already handed out. */
  private sent = 0;
  private readonly longestStop: number;

  constructor(
    private readonly tokenizer: BpeTokenizer,
    private readonly stops: readonly string[],
  ) {
    this.longestStop = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Adds a token and returns the text that can be handed out now. */
  push(id: number): string {
    if (this.stopped) return '';
    this.ids.push(id);
    const piece = this.tokenizer.decode(this.ids.slice(this.pendingFrom));
    const incomplete = piece.endsWith('\uFFFD') && this.ids.length - this.pendingFrom < MAX_HELD_TOKENS;
    if (!incomplete) this.append(piece);
    return this.take(false);
  }

  /** The rest of the text at the end of generation. */
  flush(): string {
    if (!this.stopped && this.pendingFrom < this.ids.length)
      this.append(this.tokenizer.decode(this.ids.slice(this.pendingFrom)));
    return this.take(true);
  }

  private append(piece: string): void {
    const searchFrom = Math.max(0, this.text.length - this.longestStop + 1);
    this.text += piece;
    this.pendingFrom = this.ids.length;
    let cut = -1;
    for (const stop of this.stops) {
      const at = this.text.indexOf(stop, searchFrom);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.text = this.text.slice(0, cut);
      this.stopped = true;
    }
  }

  /** Text not handed out yet, less a tail that may still turn into a stop string. */
  private take(final: boolean): string {
    let end = this.text.length;
    if (!final && !this.stopped) end -= this.heldForStops();
    if (end <= this.sent) return '';
    const out = this.text.slice(this.sent, end);
    this.sent = end;
    return out;
  }

  /** Length of the longest tail of the text that is a proper prefix of a stop string. */
  private heldForStops(): number {
    let held = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, this.text.length); n > held; n--) {
        if (this.text.endsWith(stop.slice(0, n))) {
          held = n;
          break;
        }
      }
    }
    return held;
  }
}
