/**
 * One request's generation: its prompts times `n` choices submitted to the engine together, each
 * choice's tokens turned into text (stop strings, held-back partial characters) and logprobs, handed
 * out as deltas while streaming and collected into choices at the end.
 */
import { randomInt } from 'node:crypto';
import type { BpeTokenizer } from '@switchyard/model';
import type { EngineHandle } from '../engine/engine';
import type { FinishReason, SequenceHandle, TokenEvent } from '../engine/sequence';
import type { SamplingRequest } from '../protocol/requests';
import type { ChoiceDelta, ChoiceResult, TokenAlternative, TokenInfo } from '../protocol/responses';
import { TextStream } from './text';

/** What a generation needs besides its request. */
export interface GenerationSetup {
  readonly engine: EngineHandle;
  readonly tokenizer: BpeTokenizer;
  /** Token ids that end a choice (end-of-text). */
  readonly stopTokenIds: readonly number[];
}

/** One prompt of the request, tokenized, with the max tokens its choices may generate. */
export interface PreparedPrompt {
  readonly ids: readonly number[];
  readonly maxTokens: number;
}

/** Why a generation did not complete: an engine error, or cancelled (shutdown, client gone). */
export class GenerationFailed extends Error {
  override readonly name = 'GenerationFailed';
  constructor(
    message: string,
    readonly cancelled: boolean,
  ) {
    super(message);
  }
}

interface ChoiceState {
  readonly index: number;
  readonly text: TextStream;
  readonly tokens: TokenInfo[] | null;
  /** Tokens not yet handed out in a delta (their text may be held back). */
  pending: TokenInfo[];
  /** Characters handed out so far. */
  streamed: number;
  first: boolean;
  generated: number;
  finished: FinishReason | undefined;
}

export class Generation {
  /** Resolves with every choice once all have finished; rejects when one failed or was cancelled. */
  readonly done: Promise<ChoiceResult[]>;
  private readonly choices: ChoiceState[] = [];
  private handles: SequenceHandle[] = [];
  private resolve!: (r: ChoiceResult[]) => void;
  private reject!: (e: Error) => void;
  private open: number;
  private failure: Error | undefined;

  constructor(
    private readonly setup: GenerationSetup,
    private readonly prompts: readonly PreparedPrompt[],
    private readonly params: SamplingRequest,
    /** Alternatives per token for logprobs, or null for none. */
    private readonly logprobs: number | null,
    /** Stop strings of the chat template, added to the request's. */
    private readonly extraStops: readonly string[],
    /** Called with each piece of text (and its tokens) while streaming. */
    private readonly onDelta?: (d: ChoiceDelta) => void,
  ) {
    this.open = prompts.length * params.n;
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // The rejection is observed by whoever awaits `done`; avoid an unhandled one if nobody does.
    this.done.catch(() => undefined);
  }

  /** Prompt tokens of the request (each prompt once, whatever n). */
  get promptTokens(): number {
    return this.prompts.reduce((s, p) => s + p.ids.length, 0);
  }

  /** Tokens generated over every choice. */
  get completionTokens(): number {
    return this.choices.reduce((s, c) => s + c.generated, 0);
  }

  /** Submits every choice to the engine; throws the engine's refusal when it will not take them. */
  start(): void {
    const stops = [...new Set([...this.params.stop, ...this.extraStops])];
    const seed = this.params.seed ?? randomInt(2 ** 32);
    const specs = this.prompts.flatMap((prompt, p) =>
      Array.from({ length: this.params.n }, (_, j) => {
        const choice: ChoiceState = {
          index: p * this.params.n + j,
          text: new TextStream(this.setup.tokenizer, stops),
          tokens: this.logprobs === null ? null : [],
          pending: [],
          streamed: 0,
          first: true,
          generated: 0,
          finished: undefined,
        };
        this.choices.push(choice);
        return {
          promptIds: prompt.ids,
          maxTokens: prompt.maxTokens,
          sampling: {
            temperature: this.params.temperature,
            topP: this.params.topP,
            topK: this.params.topK,
            seed: (seed + j) >>> 0,
          },
          stopTokenIds: this.setup.stopTokenIds,
          logprobs: this.logprobs,
          sink: {
            onToken: (e: TokenEvent) => this.onToken(choice, e),
            onFinish: (reason: FinishReason, error?: Error) => this.onFinish(choice, reason, error),
          },
        };
      }),
    );
    this.handles = this.setup.engine.submit(specs);
  }

  /** Cancels every choice still running (the client went away); their KV caches are freed. */
  cancel(): void {
    for (const h of this.handles) h.cancel();
  }

  private onToken(c: ChoiceState, e: TokenEvent): boolean {
    c.generated++;
    if (c.tokens && e.logprob !== undefined) {
      const top = (e.top ?? []).map((t) => this.alternative(t.token, t.logprob));
      const info: TokenInfo = { ...this.alternative(e.token, e.logprob), top };
      c.tokens.push(info);
      c.pending.push(info);
    }
    const text = c.text.push(e.token);
    if (this.onDelta && text !== '') this.emit(c, text, null);
    return !c.text.stopped;
  }

  private onFinish(c: ChoiceState, reason: FinishReason, error?: Error): void {
    c.finished = reason;
    if (reason === 'error')
      this.failure ??= new GenerationFailed(error?.message ?? 'generation failed', false);
    else if (reason === 'cancelled')
      this.failure ??= new GenerationFailed(
        'the generation was cancelled (the server is shutting down)',
        true,
      );
    else {
      const rest = c.text.flush();
      if (this.onDelta) this.emit(c, rest, wireReason(reason));
    }
    if (--this.open > 0) return;
    if (this.failure) this.reject(this.failure);
    else
      this.resolve(
        this.choices.map((ch) => ({
          index: ch.index,
          text: ch.text.text,
          finishReason: wireReason(ch.finished ?? 'stop'),
          tokens: ch.tokens,
          withTop: (this.logprobs ?? 0) > 0,
        })),
      );
  }

  private emit(c: ChoiceState, text: string, finishReason: ChoiceDelta['finishReason']): void {
    const d: ChoiceDelta = {
      index: c.index,
      text,
      tokens: c.tokens ? c.pending : null,
      textOffset: c.streamed,
      withTop: (this.logprobs ?? 0) > 0,
      finishReason,
      first: c.first,
    };
    c.first = false;
    c.streamed += text.length;
    c.pending = [];
    this.onDelta!(d);
  }

  private alternative(token: number, logprob: number): TokenAlternative {
    const tok = this.setup.tokenizer;
    return { text: tok.decode([token]), bytes: [...tok.tokenBytes(token)], logprob };
  }
}

/** Engine reasons as the API reports them: `stop` (stop token or string) or `length`. */
function wireReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}
