/**
 * The link a worker-thread rank uses: one MessageChannel per pair of ranks on the node, one port to
 * the node agent (for ranks on other nodes and for status), and two SharedArrayBuffer arrays shared by
 * every thread of the node: a doorbell per local rank, and a state per global rank.
 *
 * Sending posts the (transferred) buffer on the peer's port, then rings the peer's doorbell.
 * Receiving drains ports with `receiveMessageOnPort` (no event loop needed), so a rank can block in
 * `Atomics.wait` on its doorbell in the middle of a synchronous gradient computation.
 */
import { type MessagePort, receiveMessageOnPort } from 'node:worker_threads';
import type { PeerInfo, TransportKind } from '../types';
import { type Link, PEER_DONE, PEER_FAILED, type WireMessage } from './engine';

/** Everything a worker rank is started with (its `workerData`). */
export interface RankInit {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly localCount: number;
  /** Global rank of local rank 0 on this node. */
  readonly rankOffset: number;
  readonly nodeRank: number;
  readonly nnodes: number;
  readonly transport: TransportKind;
  readonly peers: readonly PeerInfo[];
  /** A port per global rank for the ranks on this node (null for itself and for remote ranks). */
  readonly peerPorts: readonly (MessagePort | null)[];
  /** Port to the node agent. */
  readonly agentPort: MessagePort;
  /** One doorbell per local rank (SharedArrayBuffer). */
  readonly bells: Int32Array;
  /** One state per global rank: PEER_RUNNING, PEER_DONE or PEER_FAILED (SharedArrayBuffer). */
  readonly states: Int32Array;
  readonly timeoutMs: number;
  /** URL of the module holding the rank function. */
  readonly moduleUrl: string;
  readonly exportName: string;
  readonly args: unknown;
  /** Backend to initialise, or undefined for the default resolution. */
  readonly backend: 'tensorflow' | 'wasm' | 'cpu' | 'auto' | undefined;
}

/** Messages a rank posts to its peers' ports and the agent posts to ranks. */
export type ToRank =
  | { readonly k: 'data'; readonly m: WireMessage }
  | { readonly k: 'abort'; readonly src: number; readonly reason: string };

/** Messages a rank posts to its agent. */
export type ToAgent =
  | { readonly k: 'send'; readonly dst: number; readonly m: WireMessage }
  | { readonly k: 'abort'; readonly reason: string }
  | { readonly k: 'done'; readonly result: unknown }
  | { readonly k: 'failed'; readonly error: SerializedError };

/** An error as it crosses threads and processes. */
export interface SerializedError {
  readonly message: string;
  readonly code?: string;
  readonly name?: string;
  readonly stack?: string;
  /** True when the error only reports that another rank failed (not a root cause). */
  readonly consequence?: boolean;
}

/** Rings local rank `idx`'s doorbell. */
export function ring(bells: Int32Array, idx: number): void {
  Atomics.add(bells, idx, 1);
  Atomics.notify(bells, idx);
}

/** Serialises an error for postMessage. */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code;
    const details = (e as { details?: { missing?: unknown } }).details;
    return {
      message: e.message,
      name: e.name,
      ...(typeof code === 'string' ? { code } : {}),
      ...(code === 'RANK_FAILED' && Array.isArray(details?.missing) ? { consequence: true } : {}),
      ...(e.stack === undefined ? {} : { stack: e.stack }),
    };
  }
  return { message: String(e) };
}

/** The {@link Link} of a worker-thread rank. */
export class WorkerLink implements Link {
  readonly rank: number;
  readonly worldSize: number;
  readonly transport: TransportKind;
  private readonly me: number;
  private readonly reasons = new Map<number, string>();
  private aborted = false;

  constructor(private readonly init: RankInit) {
    this.rank = init.rank;
    this.worldSize = init.worldSize;
    this.transport = init.transport;
    this.me = init.rank - init.rankOffset;
  }

  send(dst: number, msg: WireMessage): void {
    const port = this.init.peerPorts[dst];
    const transfer = msg.data.byteLength > 0 ? [msg.data.buffer as ArrayBuffer] : [];
    if (port) {
      port.postMessage({ k: 'data', m: msg } satisfies ToRank, transfer);
      ring(this.init.bells, dst - this.init.rankOffset);
    } else {
      this.init.agentPort.postMessage({ k: 'send', dst, m: msg } satisfies ToAgent, transfer);
    }
  }

  poll(deliver: (msg: WireMessage) => void): void {
    for (const port of this.init.peerPorts) if (port) this.drain(port, deliver);
    this.drain(this.init.agentPort, deliver);
  }

  peerState(rank: number): number {
    return Atomics.load(this.init.states, rank);
  }

  peerReason(rank: number): string | undefined {
    return this.reasons.get(rank);
  }

  waitToken(): number {
    return Atomics.load(this.init.bells, this.me);
  }

  wait(token: number, ms: number): void {
    Atomics.wait(this.init.bells, this.me, token, Math.min(ms, 2 ** 31 - 1));
  }

  abort(reason: string): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const port of this.init.peerPorts) {
      port?.postMessage({ k: 'abort', src: this.rank, reason } satisfies ToRank);
    }
    this.init.agentPort.postMessage({ k: 'abort', reason } satisfies ToAgent);
    this.setOwnState(PEER_FAILED);
  }

  /** Reports the rank function's result to the agent, then marks this rank done. */
  finish(result: unknown): void {
    this.init.agentPort.postMessage({ k: 'done', result } satisfies ToAgent);
    this.setOwnState(PEER_DONE);
  }

  /** Reports the error that ended the rank function. */
  failed(e: unknown): void {
    const error = serializeError(e);
    this.abort(error.message);
    this.init.agentPort.postMessage({ k: 'failed', error } satisfies ToAgent);
  }

  private setOwnState(state: number): void {
    Atomics.store(this.init.states, this.rank, state);
    for (let i = 0; i < this.init.localCount; i++) if (i !== this.me) ring(this.init.bells, i);
  }

  private drain(port: MessagePort, deliver: (msg: WireMessage) => void): void {
    for (;;) {
      const got = receiveMessageOnPort(port);
      if (got === undefined) return;
      const msg = got.message as ToRank;
      if (msg.k === 'data') deliver(msg.m);
      else if (msg.k === 'abort' && !this.reasons.has(msg.src)) this.reasons.set(msg.src, msg.reason);
    }
  }
}
