/**
 * The batching engine: one running batch that sequences join and leave at token boundaries
 * (continuous batching), a bounded FIFO of waiting sequences, KV-cache admission within a memory
 * budget, and chunked prefill so a long prompt never stalls the sequences already decoding.
 *
 * Each step feeds every decoding sequence its last token and up to `prefillChunk` prompt tokens of
 * the sequences still prefilling (oldest first), runs one {@link MoETransformerLM.forwardRagged}
 * over all of them, then samples a token for each sequence whose prompt is complete. A sequence's
 * tokens do not depend on what shares its batch: attention keeps sequences apart and every other
 * layer works row by row (with dropless routing; see {@link batchIndependentRouting}).
 *
 * Shape letters: B sequences in a step, V vocabulary, L MoE layers, E experts.
 */
import type { ModelConfig, MoETransformerLM } from '@switchyard/model';
import { SwitchyardError } from '@switchyard/tensor';
import { logSumExp, topLogprobs } from './logprobs';
import { type FinishReason, Sequence, type SequenceHandle, type SequenceSpec } from './sequence';

/**
 * Event-loop turns between two steps: at least MIN_TURNS (a request needs a few turns to be
 * accepted, read and parsed before its handler runs), more while requests keep arriving (each turn
 * takes in about one), at most MAX_TURNS.
 */
const MIN_TURNS = 3;
const MAX_TURNS = 256;

/** Limits of the engine. */
export interface EngineConfig {
  /** Most sequences decoding or prefilling at once. */
  readonly maxBatch: number;
  /** KV-cache memory the running sequences may reserve, in bytes. */
  readonly kvBudgetBytes: number;
  /** Most sequences waiting to start; a submission beyond it is refused. */
  readonly maxWaiting: number;
  /** Most prompt tokens prefilled per step (across sequences). */
  readonly prefillChunk: number;
  /**
   * Sample only among ids below this (default: the model's vocabulary), e.g. when the model's
   * vocabulary is padded beyond its tokenizer's.
   */
  readonly vocabLimit?: number;
}

/** Engine events, for metrics. All times in seconds. */
export interface EngineObserver {
  /** A sequence's first token, `seconds` after it was submitted. */
  firstToken?(seconds: number): void;
  /** A later token, `seconds` after the sequence's previous one. */
  interToken?(seconds: number): void;
  /** One step: its sequences, the prompt tokens it prefilled, tokens generated, and routed
   *  assignments per MoE layer and expert. */
  step?(info: StepInfo): void;
  /** A sequence ended. */
  finished?(reason: FinishReason, generated: number): void;
}

/** What one engine step did. */
export interface StepInfo {
  readonly sequences: number;
  readonly prefillTokens: number;
  readonly generatedTokens: number;
  readonly expertCounts: readonly Int32Array[];
  readonly seconds: number;
}

/** A snapshot of the engine's state. */
export interface EngineStats {
  readonly running: number;
  readonly waiting: number;
  /** Bytes of KV cache the running sequences hold now. */
  readonly kvUsedBytes: number;
  /** Bytes reserved for the running sequences (prompt + max tokens each). */
  readonly kvReservedBytes: number;
  readonly kvBudgetBytes: number;
  readonly draining: boolean;
  /** Why the engine stopped working (its thread died), when it did. */
  readonly failure?: string;
}

/** Why a submission was refused. */
export type RefusalReason = 'queue_full' | 'too_large' | 'draining' | 'closed';

/** A submission the engine will not take; `reason` says why. */
export class EngineRefusal extends SwitchyardError {
  constructor(
    readonly reason: RefusalReason,
    message: string,
  ) {
    super('STATE_INVALID', message);
  }
}

/** The startup warning for a model whose routing makes outputs depend on the batch. */
export const ROUTING_WARNING =
  'the model routes with a capacity, by expert choice or round-robin at inference: a request’s tokens can depend on the other requests in its batch';

/** What a server needs from an engine, in this thread ({@link Engine}) or in a worker ({@link EngineClient}). */
export interface EngineHandle {
  /** Queues sequences, all or none; throws an {@link EngineRefusal} when it will not take them. */
  submit(specs: readonly SequenceSpec[]): SequenceHandle[];
  stats(): EngineStats;
  /** Tells the engine requests are arriving (an engine on this thread then yields to I/O longer). */
  noteActivity(): void;
  /** Refuses new sequences, lets the others finish (cancelled after `timeoutMs`), resolves when none is left. */
  drain(timeoutMs: number): Promise<void>;
  /** Cancels everything and releases the model's work state. */
  close(): Promise<void>;
}

/** Throws the refusal a submission gets when the engine is closed or draining, or a sequence could never fit the KV budget. */
export function checkSubmittable(
  specs: readonly Pick<SequenceSpec, 'promptIds' | 'maxTokens'>[],
  at: {
    readonly closed: boolean;
    readonly draining: boolean;
    readonly maxSeqLen: number;
    readonly bytesPerPosition: number;
    readonly kvBudgetBytes: number;
  },
): void {
  if (at.closed) throw new EngineRefusal('closed', 'the engine is closed');
  if (at.draining) throw new EngineRefusal('draining', 'the server is shutting down');
  const budget = Math.floor(at.kvBudgetBytes / at.bytesPerPosition);
  for (const s of specs) {
    const positions = Math.min(at.maxSeqLen, s.promptIds.length + s.maxTokens);
    if (positions > budget) {
      throw new EngineRefusal(
        'too_large',
        `a sequence of ${positions} positions needs ${positions * at.bytesPerPosition} bytes of KV cache, more than the whole budget (${at.kvBudgetBytes} bytes)`,
      );
    }
  }
}

/**
 * Whether the model's routing makes each token's experts independent of the other tokens in its
 * batch at inference: no capacity dropping, no expert-choice selection, no round-robin over the
 * batch order. When false, outputs can depend on what is batched together; the server warns.
 */
export function batchIndependentRouting(model: MoETransformerLM): boolean {
  return model.moeLayers().every((layer) => {
    const c = layer.router.config;
    if (c.evalCapacityFactor !== null || c.type === 'expert-choice') return false;
    return c.type !== 'balanced' || c.assignment === 'hash';
  });
}

/** Bytes of KV cache one position of one sequence takes: keys and values of every layer, float32. */
export function kvBytesPerPosition(c: ModelConfig): number {
  return c.numLayers * 2 * c.numKvHeads * (c.dModel / c.numHeads) * 4;
}

/**
 * Runs sequences on a model with continuous batching.
 *
 * When to use: behind a server (or any loop) that generates for many concurrent requests.
 *
 * @example
 * ```ts
 * const engine = new Engine(model, { maxBatch: 16, kvBudgetBytes: 64 << 20, maxWaiting: 64, prefillChunk: 64 });
 * engine.submit([{ promptIds, maxTokens: 20, sampling: { temperature: 0 }, stopTokenIds: [], logprobs: null, sink }]);
 * await engine.drain(10_000);
 * ```
 */
export class Engine implements EngineHandle {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly bytesPerPosition: number;
  private reservedPositions = 0;
  private wake: (() => void) | undefined;
  private loopDone: Promise<void>;
  private draining = false;
  private closed = false;
  private readonly idleWaiters: (() => void)[] = [];
  private activity = 0;

  constructor(
    readonly model: MoETransformerLM,
    readonly config: EngineConfig,
    private readonly observer: EngineObserver = {},
  ) {
    this.bytesPerPosition = kvBytesPerPosition(model.config);
    this.loopDone = this.loop();
  }

  /** Bytes of KV cache a sequence of `positions` positions needs. */
  kvBytes(positions: number): number {
    return positions * this.bytesPerPosition;
  }

  /**
   * Queues sequences (all or none: the sequences of one request start together or not at all).
   * Throws an {@link EngineRefusal} when the queue is full, when one sequence could never fit in
   * the KV budget, or when the engine is draining or closed.
   */
  submit(specs: readonly SequenceSpec[]): SequenceHandle[] {
    checkSubmittable(specs, {
      closed: this.closed,
      draining: this.draining,
      maxSeqLen: this.model.config.maxSeqLen,
      bytesPerPosition: this.bytesPerPosition,
      kvBudgetBytes: this.config.kvBudgetBytes,
    });
    const maxSeqLen = this.model.config.maxSeqLen;
    if (this.waiting.length + specs.length > this.config.maxWaiting) {
      throw new EngineRefusal(
        'queue_full',
        `the queue is full (${this.waiting.length} of ${this.config.maxWaiting} waiting; this request adds ${specs.length})`,
      );
    }
    const now = performance.now();
    const seqs = specs.map(
      (s) =>
        new Sequence(
          s,
          Math.min(maxSeqLen, s.promptIds.length + s.maxTokens),
          (q, reason) => this.endEarly(q, reason),
          now,
        ),
    );
    this.waiting.push(...seqs);
    // Take them into the batch now if it has room, so the queue only holds what really waits.
    this.admit();
    this.wake?.();
    return seqs;
  }

  /**
   * Tells the engine that I/O is arriving (a server calls it per incoming request): between steps it
   * then lets the event loop turn until arrivals stop, so requests are answered between two steps.
   */
  noteActivity(): void {
    this.activity++;
  }

  /** Running and waiting sequences, KV use and budget. */
  stats(): EngineStats {
    let used = 0;
    for (const s of this.running) used += s.cache.length;
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      kvUsedBytes: this.kvBytes(used),
      kvReservedBytes: this.kvBytes(this.reservedPositions),
      kvBudgetBytes: this.config.kvBudgetBytes,
      draining: this.draining,
    };
  }

  /**
   * Refuses new sequences, lets the running and waiting ones finish, and resolves when none is left;
   * after `timeoutMs` the rest are cancelled.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    const idle = this.idle();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const r = await Promise.race([idle, timeout]);
    clearTimeout(timer);
    if (r === 'timeout') {
      for (const s of [...this.waiting, ...this.running]) s.cancel();
      await idle;
    }
  }

  /** Cancels everything, stops the loop and frees every cache. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.draining = true;
    for (const s of [...this.waiting, ...this.running]) s.cancel();
    this.closed = true;
    this.wake?.();
    await this.loopDone;
  }

  /** Resolves once no sequence is running or waiting. */
  private idle(): Promise<void> {
    if (this.running.length === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Ends a sequence from outside the step (cancel, stop); its cache is freed at once. */
  private endEarly(seq: Sequence, reason: 'cancelled' | 'stop'): void {
    const w = this.waiting.indexOf(seq);
    if (w >= 0) this.waiting.splice(w, 1);
    this.end(seq, reason);
    this.notifyIfIdle();
  }

  private notifyIfIdle(): void {
    if (this.running.length > 0 || this.waiting.length > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      if (this.running.length === 0 && this.waiting.length === 0) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
        continue;
      }
      try {
        this.step();
      } catch (e) {
        // A failure outside the model call (a bug): end what was running rather than the process.
        const error = e instanceof Error ? e : new Error(String(e));
        for (const seq of [...this.running]) this.end(seq, 'error', error);
        this.notifyIfIdle();
      }
      // Let I/O run between steps: new requests join (or get their 429), tokens reach the clients,
      // cancels arrive. While requests keep arriving (noteActivity) the loop keeps turning, so a
      // burst is taken in or refused between two steps instead of one request per step.
      let turns = 0;
      let seen: number;
      do {
        seen = this.activity;
        await new Promise<void>((resolve) => setImmediate(resolve));
        turns++;
      } while ((turns < MIN_TURNS || this.activity !== seen) && turns < MAX_TURNS);
    }
  }

  /** Admits waiting sequences (FIFO) while the batch and the KV budget have room. */
  private admit(): void {
    const budget = Math.floor(this.config.kvBudgetBytes / this.bytesPerPosition);
    while (this.waiting.length > 0 && this.running.length < this.config.maxBatch) {
      const next = this.waiting[0]!;
      if (this.reservedPositions + next.reservedPositions > budget) break;
      this.waiting.shift();
      this.running.push(next);
      this.reservedPositions += next.reservedPositions;
    }
  }

  /** One step of the running batch (see the file comment). */
  private step(): void {
    this.admit();
    if (this.running.length === 0) return;
    const started = performance.now();
    const items: { seq: Sequence; tokens: number[] }[] = [];
    for (const seq of this.running) if (seq.decoding) items.push({ seq, tokens: [seq.lastToken] });
    let chunkLeft = this.config.prefillChunk;
    let prefillTokens = 0;
    for (const seq of this.running) {
      if (seq.decoding || chunkLeft === 0) continue;
      const prompt = seq.spec.promptIds;
      const n = Math.min(chunkLeft, prompt.length - seq.prefilled);
      items.push({ seq, tokens: prompt.slice(seq.prefilled, seq.prefilled + n) as number[] });
      chunkLeft -= n;
      prefillTokens += n;
    }
    let logits: Float32Array;
    let expertCounts: Int32Array[];
    try {
      const r = this.model.forwardRagged(items.map((it) => ({ tokens: it.tokens, cache: it.seq.cache })));
      logits = r.logitsBV.dataSync() as Float32Array;
      r.logitsBV.dispose();
      expertCounts = r.expertCounts;
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      for (const { seq } of items) this.end(seq, 'error', error);
      this.notifyIfIdle();
      return;
    }
    const V = this.model.config.vocabSize;
    const now = performance.now();
    let generated = 0;
    items.forEach(({ seq, tokens }, b) => {
      if (seq.finished !== undefined) return;
      const wasDecoding = seq.decoding;
      if (!wasDecoding) {
        seq.prefilled += tokens.length;
        if (!seq.decoding) return; // more prompt to prefill
      }
      const logitsV = logits.subarray(b * V, b * V + Math.min(V, this.config.vocabLimit ?? V));
      generated++;
      this.emit(seq, logitsV, now);
    });
    this.observer.step?.({
      sequences: items.length,
      prefillTokens,
      generatedTokens: generated,
      expertCounts,
      seconds: (performance.now() - started) / 1000,
    });
    this.notifyIfIdle();
  }

  /** Samples the sequence's next token from its logits, reports it and decides whether it ends. */
  private emit(seq: Sequence, logitsV: Float32Array, now: number): void {
    const token = seq.sampler.next(logitsV);
    if (seq.stopTokens.has(token)) {
      this.end(seq, 'stop');
      return;
    }
    let event: { token: number; logprob?: number; top?: ReturnType<typeof topLogprobs> } = { token };
    if (seq.spec.logprobs !== null) {
      const lse = logSumExp(logitsV);
      event = {
        token,
        logprob: logitsV[token]! - lse,
        ...(seq.spec.logprobs > 0 ? { top: topLogprobs(logitsV, seq.spec.logprobs, lse) } : {}),
      };
    }
    seq.generated++;
    seq.lastToken = token;
    if (seq.generated === 1) this.observer.firstToken?.((now - seq.submittedAt) / 1000);
    else this.observer.interToken?.((now - seq.lastTokenAt) / 1000);
    seq.lastTokenAt = now;
    let more: boolean | undefined;
    try {
      more = seq.spec.sink.onToken(event);
    } catch (e) {
      this.end(seq, 'error', e instanceof Error ? e : new Error(String(e)));
      return;
    }
    if (seq.finished !== undefined) return; // cancelled from the sink
    if (more === false) this.end(seq, 'stop');
    else if (
      seq.generated >= seq.spec.maxTokens ||
      seq.spec.promptIds.length + seq.generated >= this.model.config.maxSeqLen
    )
      this.end(seq, 'length');
  }

  private end(seq: Sequence, reason: FinishReason, error?: Error): void {
    if (seq.finished !== undefined) return;
    seq.finish(reason, error);
    this.observer.finished?.(reason, seq.generated);
    this.remove(seq);
  }

  private remove(seq: Sequence): void {
    const r = this.running.indexOf(seq);
    if (r >= 0) {
      this.running.splice(r, 1);
      this.reservedPositions -= seq.reservedPositions;
    }
  }
}
