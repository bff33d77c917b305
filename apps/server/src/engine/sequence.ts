/**
 * One sequence the engine generates: its prompt, its own KV cache and sampler, where its prefill
 * stands, what it has generated and how it ended.
 */
import { KVCache, type SamplingOptions, TokenSampler } from '@switchyard/model';
import type { TokenLogprob } from './logprobs';

/** Why a sequence stopped. */
export type FinishReason = 'stop' | 'length' | 'cancelled' | 'error';

/** One generated token, with log-probabilities when the sequence asked for them. */
export interface TokenEvent {
  readonly token: number;
  /** Log-probability of `token` under the model (raw logits), when logprobs were requested. */
  readonly logprob?: number;
  /** The most likely alternatives, most likely first, when top logprobs were requested. */
  readonly top?: readonly TokenLogprob[];
}

/** Receives a sequence's tokens and its end; called between engine steps' computations. */
export interface SequenceSink {
  /** A new token. Return false to end the sequence here with reason `stop` (e.g. a stop string matched). */
  onToken(event: TokenEvent): boolean | undefined;
  /** The sequence ended; `error` is set when the reason is `error`. Called exactly once. */
  onFinish(reason: FinishReason, error?: Error): void;
}

/** What to generate for one sequence. */
export interface SequenceSpec {
  /** Prompt token ids (at least one). */
  readonly promptIds: readonly number[];
  /** Most tokens to generate (at least one). */
  readonly maxTokens: number;
  /** Temperature, top-k, top-p and seed of this sequence's own sampler. */
  readonly sampling: SamplingOptions;
  /** Token ids that end the sequence (not emitted), e.g. end-of-text. */
  readonly stopTokenIds: readonly number[];
  /** Log-probabilities: null for none, else how many top alternatives to report per token (0-20). */
  readonly logprobs: number | null;
  readonly sink: SequenceSink;
}

/** What a caller holds to end a submitted sequence early. */
export interface SequenceHandle {
  /** Ends the sequence with reason `cancelled` (no effect once it has ended) and frees its KV cache. */
  cancel(): void;
  /** Ends the sequence with reason `stop` (e.g. a stop string matched elsewhere) and frees its KV cache. */
  stop(): void;
}

export class Sequence implements SequenceHandle {
  readonly cache = new KVCache();
  readonly sampler: TokenSampler;
  readonly stopTokens: ReadonlySet<number>;
  /** Prompt tokens already in the cache. */
  prefilled = 0;
  /** Tokens generated so far. */
  generated = 0;
  /** The last generated token, fed at the next decoding step. */
  lastToken = -1;
  /** performance.now() at submission, at the latest token. */
  readonly submittedAt: number;
  lastTokenAt = 0;
  finished: FinishReason | undefined;

  constructor(
    readonly spec: SequenceSpec,
    /** Cache positions reserved against the KV budget. */
    readonly reservedPositions: number,
    private readonly onEnd: (seq: Sequence, reason: 'cancelled' | 'stop') => void,
    now: number,
  ) {
    this.sampler = new TokenSampler(spec.sampling, 'switchyard-serve sampler');
    this.stopTokens = new Set(spec.stopTokenIds);
    this.submittedAt = now;
  }

  get decoding(): boolean {
    return this.prefilled === this.spec.promptIds.length;
  }

  cancel(): void {
    if (this.finished === undefined) this.onEnd(this, 'cancelled');
  }

  stop(): void {
    if (this.finished === undefined) this.onEnd(this, 'stop');
  }

  /** Marks the sequence ended, frees its cache and tells its sink (once). */
  finish(reason: FinishReason, error?: Error): void {
    if (this.finished !== undefined) return;
    this.finished = reason;
    this.cache.dispose();
    try {
      this.spec.sink.onFinish(reason, error);
    } catch {
      // A sink's failure must not stop the engine; the sequence has ended either way.
    }
  }
}
