/**
 * The code a worker-thread rank runs: builds its link and communicator, initialises the backend,
 * imports the rank module and calls its function, then reports the result or the error to the agent.
 */
import { workerData } from 'node:worker_threads';
import { initBackend, invalidArgument } from '@switchyard/tensor';
import type { RankContext, RankFunction } from '../types';
import { CollectiveEngine } from './engine';
import { type RankInit, WorkerLink } from './worker-link';

/** Entry point of a worker rank (called by the bootstrap with the worker's `workerData`). */
export async function runRankWorker(init: RankInit = workerData as RankInit): Promise<void> {
  const link = new WorkerLink(init);
  let result: unknown;
  try {
    const comm = new CollectiveEngine(link, init.timeoutMs);
    const backend = await initBackend(init.backend === undefined ? {} : { backend: init.backend });
    const mod = (await import(init.moduleUrl)) as Record<string, unknown>;
    const fn = mod[init.exportName];
    if (typeof fn !== 'function') {
      throw invalidArgument(
        'launch',
        'module',
        `a module whose export \`${init.exportName}\` is a rank function`,
        `${init.moduleUrl} (export ${init.exportName}: ${typeof fn})`,
      );
    }
    const ctx: RankContext = {
      rank: init.rank,
      worldSize: init.worldSize,
      localRank: init.localRank,
      localWorldSize: init.localCount,
      nodeRank: init.nodeRank,
      nnodes: init.nnodes,
      peers: init.peers,
      comm,
      args: init.args,
      backend,
    };
    result = await (fn as RankFunction)(ctx);
  } catch (e) {
    link.failed(e);
    return;
  }
  try {
    link.finish(result);
  } catch (e) {
    link.failed(
      new Error(
        `rank ${init.rank} returned a value that cannot be sent to the launcher (${e instanceof Error ? e.message : String(e)})`,
      ),
    );
  }
}
