/**
 * The engine seen from the HTTP thread when it runs in a worker thread: the same submit / stats /
 * drain / close as {@link Engine}, with each sequence's sink called here as the worker reports its
 * steps. Limits that decide a refusal (draining, the KV budget, the queue bound) are checked here,
 * synchronously, so a refusal never waits for a step.
 */
import { Worker } from 'node:worker_threads';
import type { ModelConfig } from '@switchyard/model';
import {
  checkSubmittable,
  type EngineConfig,
  type EngineHandle,
  type EngineObserver,
  EngineRefusal,
  type EngineStats,
  kvBytesPerPosition,
} from './engine';
import type { FromWorker, ToWorker, WireSequence, WorkerEvents, WorkerInit } from './messages';
import type { SequenceHandle, SequenceSink, SequenceSpec } from './sequence';

/** True when this module runs from its TypeScript sources (tests, tsx), false from the build. */
const FROM_SOURCES = import.meta.url.endsWith('.ts');

/** The worker's script: install the TypeScript loader when running from sources, then run the engine. */
const BOOTSTRAP = `
const { workerData, parentPort } = require('node:worker_threads');
(async () => {
  if (workerData.loader) (await import(workerData.loader)).register();
  const m = await import(workerData.module);
  await m.runEngineWorker(workerData.init);
})().catch((e) => parentPort.postMessage({ type: 'failed', message: String((e && e.stack) || e) }));
`;

interface Remote {
  readonly sink: SequenceSink;
  /** The sink has been told the sequence ended (the worker may not know yet). */
  ended: boolean;
}

export class EngineClient implements EngineHandle {
  private readonly seqs = new Map<number, Remote>();
  private nextId = 0;
  /** Sequences submitted that the worker has not reported ended. */
  private outstanding = 0;
  private lastStats: EngineStats;
  private draining = false;
  private closed = false;
  private readonly waiters = new Map<string, (m: FromWorker) => void>();
  private readonly bytesPerPosition: number;
  private failure: string | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly model: ModelConfig,
    private readonly config: EngineConfig,
    private readonly observer: EngineObserver,
    ready: Extract<FromWorker, { type: 'ready' }>,
    /** Warnings about the model the worker found when loading it. */
    readonly warnings: readonly string[] = ready.warnings,
  ) {
    this.lastStats = ready.stats;
    this.bytesPerPosition = kvBytesPerPosition(model);
    worker.on('message', (m: FromWorker) => this.receive(m));
    worker.on('error', (e) => this.fail(e instanceof Error ? e.message : String(e)));
    worker.on('exit', (code) => {
      if (!this.closed) this.fail(`the engine thread exited (code ${code})`);
    });
  }

  /**
   * Starts the engine thread: it loads the checkpoint `init.checkpoint` (`model` is its config.json)
   * and resolves once it is ready; rejects with the worker's error when loading fails.
   */
  static start(init: WorkerInit, model: ModelConfig, observer: EngineObserver = {}): Promise<EngineClient> {
    const worker = new Worker(BOOTSTRAP, {
      eval: true,
      workerData: {
        loader: FROM_SOURCES ? import.meta.resolve('tsx/esm/api') : undefined,
        module: new URL(FROM_SOURCES ? './worker.ts' : './engine-worker.js', import.meta.url).href,
        init,
      },
      execArgv: FROM_SOURCES ? ['--conditions=@switchyard/source'] : [],
    });
    return new Promise((resolve, reject) => {
      const onExit = (code: number) =>
        reject(new Error(`the engine thread exited (code ${code}) before it was ready`));
      worker.once('exit', onExit);
      worker.once('error', reject);
      worker.once('message', (m: FromWorker) => {
        worker.off('exit', onExit);
        worker.off('error', reject);
        if (m.type === 'ready') resolve(new EngineClient(worker, model, init.config, observer, m));
        else {
          void worker.terminate();
          reject(new Error(m.type === 'failed' ? m.message : `unexpected first message ${m.type}`));
        }
      });
    });
  }

  submit(specs: readonly SequenceSpec[]): SequenceHandle[] {
    checkSubmittable(specs, {
      closed: this.closed,
      draining: this.draining,
      maxSeqLen: this.model.maxSeqLen,
      bytesPerPosition: this.bytesPerPosition,
      kvBudgetBytes: this.config.kvBudgetBytes,
    });
    // Everything not finished beyond the batch's places is waiting.
    const waiting = Math.max(0, this.outstanding - this.config.maxBatch);
    const room = this.config.maxBatch + this.config.maxWaiting - this.outstanding;
    if (specs.length > room) {
      throw new EngineRefusal(
        'queue_full',
        `the queue is full (${waiting} of ${this.config.maxWaiting} waiting; this request adds ${specs.length})`,
      );
    }
    const wire: WireSequence[] = [];
    const handles = specs.map(({ sink, ...spec }) => {
      const id = this.nextId++;
      const remote: Remote = { sink, ended: false };
      this.seqs.set(id, remote);
      wire.push({ ...spec, id });
      const end = (reason: 'cancelled' | 'stop') => {
        if (remote.ended) return;
        this.endLocally(remote, reason);
        this.send({ type: 'end', id, reason });
      };
      return { cancel: () => end('cancelled'), stop: () => end('stop') };
    });
    this.outstanding += specs.length;
    this.send({ type: 'submit', seqs: wire });
    return handles;
  }

  /** The engine's state as of its last step (running, waiting, KV). */
  stats(): EngineStats {
    return {
      ...this.lastStats,
      draining: this.draining || this.lastStats.draining,
      ...(this.failure === undefined ? {} : { failure: this.failure }),
    };
  }

  noteActivity(): void {
    // The HTTP thread never computes: nothing to yield.
  }

  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    if (this.closed) return;
    const drained = this.reply('drained');
    this.send({ type: 'drain', timeoutMs });
    await drained;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.draining = true;
    const closed = this.reply('closed');
    this.send({ type: 'close' });
    await closed;
    this.closed = true;
    await this.worker.terminate();
  }

  /** Live tensors in the engine thread (for leak checks). */
  async liveTensors(): Promise<number> {
    const r = this.reply('tensors');
    this.send({ type: 'tensors' });
    const m = await r;
    return m.type === 'tensors' ? m.count : Number.NaN;
  }

  private send(m: ToWorker): void {
    if (!this.closed) this.worker.postMessage(m);
  }

  /** Resolves with the next message of `type` (or when the worker fails). */
  private reply(type: string): Promise<FromWorker> {
    return new Promise((resolve) => this.waiters.set(type, resolve));
  }

  private receive(m: FromWorker): void {
    if (m.type === 'events') this.apply(m);
    else if (m.type === 'failed') this.fail(m.message);
    const waiter = this.waiters.get(m.type);
    if (waiter) {
      this.waiters.delete(m.type);
      waiter(m);
    }
  }

  private apply(m: WorkerEvents): void {
    for (const { id, ...event } of m.tokens) {
      const r = this.seqs.get(id);
      if (!r || r.ended) continue;
      let more: boolean | undefined;
      try {
        more = r.sink.onToken(event);
      } catch (e) {
        this.endLocally(r, 'error', e instanceof Error ? e : new Error(String(e)));
        this.send({ type: 'end', id, reason: 'cancelled' });
        continue;
      }
      if (more === false && !r.ended) {
        this.endLocally(r, 'stop');
        this.send({ type: 'end', id, reason: 'stop' });
      }
    }
    for (const f of m.finished) {
      const r = this.seqs.get(f.id);
      this.seqs.delete(f.id);
      this.outstanding--;
      this.observer.finished?.(f.reason, 0);
      if (r && !r.ended)
        this.endLocally(r, f.reason, f.message === undefined ? undefined : new Error(f.message));
    }
    for (const s of m.firstTokens) this.observer.firstToken?.(s);
    for (const s of m.interTokens) this.observer.interToken?.(s);
    for (const info of m.steps) this.observer.step?.(info);
    this.lastStats = m.stats;
  }

  private endLocally(r: Remote, reason: Parameters<SequenceSink['onFinish']>[0], error?: Error): void {
    r.ended = true;
    try {
      r.sink.onFinish(reason, error);
    } catch {
      // A sink's failure must not stop the others.
    }
  }

  /** The engine thread is gone: every sequence ends with an error and new ones are refused. */
  private fail(message: string): void {
    if (this.closed) return;
    this.closed = true;
    this.failure = message;
    for (const r of this.seqs.values()) if (!r.ended) this.endLocally(r, 'error', new Error(message));
    this.seqs.clear();
    for (const resolve of this.waiters.values()) resolve({ type: 'failed', message });
    this.waiters.clear();
  }
}
