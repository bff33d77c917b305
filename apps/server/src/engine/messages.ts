/**
 * Messages between the HTTP thread's {@link EngineClient} and the engine's worker thread. The worker
 * sends what each step produced in one message (tokens, ended sequences, latencies, step info and
 * the engine's state); the client sends submissions, early ends, drain and close.
 */
import type { BackendName } from '@switchyard/tensor';
import type { EngineConfig, EngineStats, StepInfo } from './engine';
import type { FinishReason, SequenceSpec, TokenEvent } from './sequence';

/** What the worker needs to start. */
export interface WorkerInit {
  /** Checkpoint folder the worker loads the model from. */
  readonly checkpoint: string;
  readonly backend: BackendName | undefined;
  readonly config: EngineConfig;
}

/** A sequence as sent to the worker: its spec without the sink, and an id. */
export type WireSequence = Omit<SequenceSpec, 'sink'> & { readonly id: number };

export type ToWorker =
  | { readonly type: 'submit'; readonly seqs: readonly WireSequence[] }
  | { readonly type: 'end'; readonly id: number; readonly reason: 'cancelled' | 'stop' }
  | { readonly type: 'drain'; readonly timeoutMs: number }
  | { readonly type: 'close' }
  | { readonly type: 'tensors' };

/** What happened in the worker since its last message. */
export interface WorkerEvents {
  readonly type: 'events';
  readonly tokens: readonly (TokenEvent & { readonly id: number })[];
  readonly finished: readonly {
    readonly id: number;
    readonly reason: FinishReason;
    readonly message?: string;
  }[];
  readonly firstTokens: readonly number[];
  readonly interTokens: readonly number[];
  readonly steps: readonly StepInfo[];
  readonly stats: EngineStats;
}

export type FromWorker =
  | { readonly type: 'ready'; readonly warnings: readonly string[]; readonly stats: EngineStats }
  | { readonly type: 'failed'; readonly message: string }
  | WorkerEvents
  | { readonly type: 'drained' }
  | { readonly type: 'closed' }
  | { readonly type: 'tensors'; readonly count: number };
