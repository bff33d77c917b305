/**
 * The node agent: starts this node's ranks as worker threads, wires them to each other and to the
 * fabric (ZeroMQ) for ranks on other nodes, watches them, and turns a dead or failed rank into a state
 * every other rank sees at once. The agent's thread never computes, so it always answers.
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import type { PeerInfo, TransportKind } from '../types';
import { PEER_DONE, PEER_FAILED, PEER_RUNNING, type WireMessage } from './engine';
import { type RankInit, ring, type SerializedError, type ToAgent, type ToRank } from './worker-link';

/** What happened to one rank. */
export type RankOutcome =
  | { readonly rank: number; readonly ok: true; readonly result: unknown }
  | { readonly rank: number; readonly ok: false; readonly error: SerializedError; readonly at: number };

/** Something the launcher reports while ranks run (for logs and progress). */
export type LaunchEvent =
  | { readonly type: 'ranks-started'; readonly nodeRank: number; readonly ranks: readonly number[] }
  | { readonly type: 'rank-done'; readonly rank: number }
  | { readonly type: 'rank-failed'; readonly rank: number; readonly reason: string }
  | { readonly type: 'node-lost'; readonly nodeRank: number; readonly reason: string };

/** The agent's view of the connection to other nodes. */
export interface Fabric {
  sendData(dst: number, msg: WireMessage): void;
  sendStatus(rank: number, state: number, reason: string | undefined): void;
  /** Registers the handlers; messages that arrived before are handed over now. */
  listen(handlers: FabricHandlers): void;
  /** Says goodbye; when `waitForPeers`, waits until every other node has said goodbye or is lost. */
  finish(waitForPeers: boolean): Promise<void>;
}

/** Callbacks the fabric invokes. */
export interface FabricHandlers {
  data(dst: number, msg: WireMessage): void;
  status(rank: number, state: number, reason: string | undefined): void;
  nodeLost(nodeRank: number, ranks: readonly number[], reason: string): void;
}

/** Everything the agent needs to run this node's ranks. */
export interface NodeSpec {
  readonly moduleUrl: string;
  readonly exportName: string;
  readonly args: unknown;
  readonly timeoutMs: number;
  readonly backend: RankInit['backend'];
  readonly rankOffset: number;
  readonly localCount: number;
  readonly worldSize: number;
  readonly nodeRank: number;
  readonly nnodes: number;
  readonly peers: readonly PeerInfo[];
  readonly transport: TransportKind;
  /** How long ranks may keep running after another rank failed before they are terminated. */
  readonly shutdownGraceMs: number;
  /** Worker bootstrap: runtime module URL and optional TypeScript loader URL. */
  readonly runtimeUrl: string;
  readonly loaderUrl: string | undefined;
  readonly execArgv: readonly string[];
  readonly fabric: Fabric | undefined;
  readonly onEvent: ((event: LaunchEvent) => void) | undefined;
}

/** The worker's script: load the TypeScript loader when needed, then the rank runtime. */
const BOOTSTRAP = `
const { workerData } = require('node:worker_threads');
(async () => {
  if (workerData.loaderUrl) (await import(workerData.loaderUrl)).register();
  const runtime = await import(workerData.runtimeUrl);
  await runtime.runRankWorker(workerData.init);
})();
`;

/** Runs this node's ranks to completion; resolves with one outcome per local rank (never rejects). */
export function runNode(spec: NodeSpec): Promise<RankOutcome[]> {
  return new Promise((resolve) => {
    const n = spec.localCount;
    const bells = new Int32Array(new SharedArrayBuffer(4 * n));
    const states = new Int32Array(new SharedArrayBuffer(4 * spec.worldSize));
    const outcomes: (RankOutcome | undefined)[] = new Array(n).fill(undefined);
    const agentPorts: MessagePort[] = [];
    const workers: Worker[] = [];
    let graceTimer: NodeJS.Timeout | undefined;
    let firstFailure: { rank: number; at: number } | undefined;
    let settled = false;

    const emit = (event: LaunchEvent): void => {
      try {
        spec.onEvent?.(event);
      } catch {
        // a faulty listener must not take the launcher down
      }
    };

    const ringAll = (): void => {
      for (let i = 0; i < n; i++) ring(bells, i);
    };

    /** Marks a global rank as no longer running and tells every local rank why. */
    const setState = (rank: number, state: number, reason: string | undefined): void => {
      if (Atomics.load(states, rank) !== PEER_RUNNING && state !== PEER_FAILED) return;
      if (reason !== undefined) {
        for (let i = 0; i < n; i++) {
          if (spec.rankOffset + i === rank) continue;
          agentPorts[i]!.postMessage({ k: 'abort', src: rank, reason } satisfies ToRank);
        }
      }
      Atomics.store(states, rank, state);
      ringAll();
      if (state === PEER_FAILED) onAnyFailure(rank);
    };

    const onAnyFailure = (rank: number): void => {
      if (firstFailure !== undefined) return;
      firstFailure = { rank, at: Date.now() };
      graceTimer = setTimeout(() => {
        for (let i = 0; i < n; i++) {
          if (outcomes[i] === undefined) {
            settle(i, {
              rank: spec.rankOffset + i,
              ok: false,
              error: {
                message: `rank ${spec.rankOffset + i} was terminated by the launcher ${spec.shutdownGraceMs} ms after rank ${rank} failed`,
                code: 'RANK_FAILED',
                consequence: true,
              },
              at: Date.now(),
            });
            void workers[i]!.terminate();
          }
        }
      }, spec.shutdownGraceMs);
      graceTimer.unref?.();
    };

    const settle = (i: number, outcome: RankOutcome): void => {
      if (outcomes[i] !== undefined) return;
      outcomes[i] = outcome;
      const rank = spec.rankOffset + i;
      if (outcome.ok) {
        emit({ type: 'rank-done', rank });
        spec.fabric?.sendStatus(rank, PEER_DONE, undefined);
        if (Atomics.load(states, rank) === PEER_RUNNING) {
          Atomics.store(states, rank, PEER_DONE);
          ringAll();
        }
      } else {
        emit({ type: 'rank-failed', rank, reason: outcome.error.message });
        spec.fabric?.sendStatus(rank, PEER_FAILED, outcome.error.message);
        setState(rank, PEER_FAILED, outcome.error.message);
      }
      if (outcomes.every((o) => o !== undefined)) void complete();
    };

    const complete = async (): Promise<void> => {
      if (settled) return;
      settled = true;
      if (graceTimer) clearTimeout(graceTimer);
      await Promise.all(workers.map((w) => w.terminate()));
      for (const p of agentPorts) p.close();
      const ok = outcomes.every((o) => o?.ok);
      try {
        await spec.fabric?.finish(ok);
      } catch {
        // the outcomes already say what happened
      }
      resolve(outcomes as RankOutcome[]);
    };

    const handle = (i: number, msg: ToAgent): void => {
      const rank = spec.rankOffset + i;
      switch (msg.k) {
        case 'send':
          if (spec.fabric === undefined) {
            settle(i, {
              rank,
              ok: false,
              error: { message: `rank ${rank} sent to rank ${msg.dst}, which is not on any node` },
              at: Date.now(),
            });
          } else spec.fabric.sendData(msg.dst, msg.m);
          break;
        case 'abort':
          spec.fabric?.sendStatus(rank, PEER_FAILED, msg.reason);
          onAnyFailure(rank);
          break;
        case 'done':
          settle(i, { rank, ok: true, result: msg.result });
          break;
        case 'failed':
          settle(i, { rank, ok: false, error: msg.error, at: Date.now() });
          break;
      }
    };

    spec.fabric?.listen({
      data: (dst, m) => {
        const i = dst - spec.rankOffset;
        const port = agentPorts[i];
        if (port === undefined) return;
        port.postMessage(
          { k: 'data', m } satisfies ToRank,
          m.data.byteLength > 0 ? [m.data.buffer as ArrayBuffer] : [],
        );
        ring(bells, i);
      },
      status: (rank, state, reason) => {
        if (state === PEER_FAILED) emit({ type: 'rank-failed', rank, reason: reason ?? 'failed' });
        setState(rank, state, reason);
      },
      nodeLost: (nodeRank, ranks, reason) => {
        emit({ type: 'node-lost', nodeRank, reason });
        for (const r of ranks) if (Atomics.load(states, r) === PEER_RUNNING) setState(r, PEER_FAILED, reason);
      },
    });

    // One channel per pair of local ranks, one per rank to the agent.
    const peerPorts: (MessagePort | null)[][] = [];
    for (let i = 0; i < n; i++) peerPorts.push(new Array<MessagePort | null>(spec.worldSize).fill(null));
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const { port1, port2 } = new MessageChannel();
        peerPorts[i]![spec.rankOffset + j] = port1;
        peerPorts[j]![spec.rankOffset + i] = port2;
      }
    }
    for (let i = 0; i < n; i++) {
      const rank = spec.rankOffset + i;
      const { port1, port2 } = new MessageChannel();
      agentPorts.push(port1);
      port1.on('message', (msg: ToAgent) => handle(i, msg));
      const init: RankInit = {
        rank,
        worldSize: spec.worldSize,
        localRank: i,
        localCount: n,
        rankOffset: spec.rankOffset,
        nodeRank: spec.nodeRank,
        nnodes: spec.nnodes,
        transport: spec.transport,
        peers: spec.peers,
        peerPorts: peerPorts[i]!,
        agentPort: port2,
        bells,
        states,
        timeoutMs: spec.timeoutMs,
        moduleUrl: spec.moduleUrl,
        exportName: spec.exportName,
        args: spec.args,
        backend: spec.backend,
      };
      const transferList = [port2, ...peerPorts[i]!.filter((p): p is MessagePort => p !== null)];
      const worker = new Worker(BOOTSTRAP, {
        eval: true,
        workerData: { init, runtimeUrl: spec.runtimeUrl, loaderUrl: spec.loaderUrl },
        transferList,
        execArgv: [...spec.execArgv],
      });
      workers.push(worker);
      worker.on('error', (err) => {
        const message = err instanceof Error ? err.message : String(err);
        settle(i, {
          rank,
          ok: false,
          error: {
            message: `rank ${rank} crashed: ${message}`,
            name: err.name,
            ...(err.stack ? { stack: err.stack } : {}),
          },
          at: Date.now(),
        });
      });
      worker.on('exit', (code) => {
        // Messages the rank posted before exiting may still be queued: read them first.
        for (let got = receiveMessageOnPort(port1); got !== undefined; got = receiveMessageOnPort(port1)) {
          handle(i, got.message as ToAgent);
        }
        settle(i, {
          rank,
          ok: false,
          error: {
            message: `rank ${rank} exited with code ${code} before its rank function returned`,
            code: 'RANK_FAILED',
          },
          at: Date.now(),
        });
      });
    }
    emit({
      type: 'ranks-started',
      nodeRank: spec.nodeRank,
      ranks: Array.from({ length: n }, (_, i) => spec.rankOffset + i),
    });
  });
}
