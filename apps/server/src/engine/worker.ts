/**
 * The engine's worker thread: loads the checkpoint, runs an {@link Engine} on it, and talks to the
 * {@link EngineClient} on the HTTP thread. Model compute blocks only this thread, so the HTTP thread
 * keeps accepting, refusing and streaming while a step runs.
 */
import { type MessagePort, parentPort } from 'node:worker_threads';
import type { MoETransformerLM } from '@switchyard/model';
import { initBackend, tf } from '@switchyard/tensor';
import { loadServingCheckpoint } from '../checkpoint';
import { batchIndependentRouting, Engine, ROUTING_WARNING } from './engine';
import type { FromWorker, ToWorker, WorkerEvents, WorkerInit } from './messages';
import type { SequenceHandle } from './sequence';

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends readonly (infer U)[] ? U[] : T[K] };

/** Runs the engine for `init` until the client closes it (the worker's entry point). */
export async function runEngineWorker(init: WorkerInit, port: MessagePort = parentPort!): Promise<void> {
  const post = (m: FromWorker) => port.postMessage(m);
  let model: MoETransformerLM;
  try {
    await initBackend(init.backend === undefined ? {} : { backend: init.backend });
    model = (await loadServingCheckpoint(init.checkpoint)).model;
  } catch (e) {
    post({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
    port.close();
    return;
  }
  let out = emptyEvents();
  const flush = () => {
    if (out.tokens.length + out.finished.length + out.steps.length === 0) return;
    post({ ...out, stats: engine.stats() });
    out = emptyEvents();
  };
  const engine = new Engine(model, init.config, {
    firstToken: (s) => out.firstTokens.push(s),
    interToken: (s) => out.interTokens.push(s),
    step: (info) => {
      out.steps.push(info);
      flush();
    },
  });
  const handles = new Map<number, SequenceHandle>();
  port.on('message', (m: ToWorker) => {
    switch (m.type) {
      case 'submit': {
        const seqs = m.seqs.map(({ id, ...spec }) => ({
          ...spec,
          sink: {
            onToken: (e: Parameters<typeof out.tokens.push>[0]) => {
              out.tokens.push({ ...e, id });
              return undefined;
            },
            onFinish: (reason: WorkerEvents['finished'][number]['reason'], error?: Error) => {
              out.finished.push({ id, reason, ...(error ? { message: error.message } : {}) });
              handles.delete(id);
            },
          },
        }));
        try {
          engine.submit(seqs).forEach((h, i) => {
            handles.set(m.seqs[i]!.id, h);
          });
        } catch (e) {
          // The client checks the same limits first; a refusal here ends the sequences with an error.
          for (const q of m.seqs)
            out.finished.push({ id: q.id, reason: 'error', message: (e as Error).message });
        }
        break;
      }
      case 'end': {
        const h = handles.get(m.id);
        if (m.reason === 'stop') h?.stop();
        else h?.cancel();
        break;
      }
      case 'drain':
        void engine.drain(m.timeoutMs).then(() => {
          flush();
          post({ type: 'drained' });
        });
        break;
      case 'close':
        void engine.close().then(() => {
          flush();
          model.dispose();
          post({ type: 'closed' });
          port.close();
        });
        break;
      case 'tensors':
        post({ type: 'tensors', count: tf.memory().numTensors });
        break;
    }
    flush();
  });
  post({
    type: 'ready',
    warnings: batchIndependentRouting(model) ? [] : [ROUTING_WARNING],
    stats: engine.stats(),
  });
}

function emptyEvents(): Mutable<Omit<WorkerEvents, 'stats'>> {
  return { type: 'events', tokens: [], finished: [], firstTokens: [], interTokens: [], steps: [] };
}
