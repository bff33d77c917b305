/**
 * The in-process transport: a world of one rank in the current thread. Every collective completes at
 * once and returns a copy of its input, so code written for R ranks runs unchanged on one.
 */
import { checkNumber } from '@switchyard/tensor';
import { CollectiveEngine, type Link, PEER_RUNNING, type WireMessage } from './internal/engine';
import type { Communicator } from './types';

/** Collective timeout used when none is given (milliseconds). */
export const DEFAULT_COLLECTIVE_TIMEOUT_MS = 60_000;

class SelfLink implements Link {
  readonly rank = 0;
  readonly worldSize = 1;
  readonly transport = 'local' as const;
  send(dst: number, _msg: WireMessage): void {
    throw new Error(`rank 0 of a one-rank world cannot send to rank ${dst}`);
  }
  poll(): void {}
  peerState(): number {
    return PEER_RUNNING;
  }
  peerReason(): string | undefined {
    return undefined;
  }
  waitToken(): number {
    return 0;
  }
  wait(): void {}
  abort(): void {}
}

/**
 * A communicator for a single rank in the current thread (`transport: 'local'`).
 *
 * When to use: running rank code without workers (one rank, tests, the 1-rank baseline of a
 * parallel run); `launch({ ranks: 1 })` gives its rank function one of these.
 *
 * @example
 * ```ts
 * const comm = createLocalCommunicator();
 * comm.allReduce(new Float32Array([1, 2]), 'mean'); // Float32Array [1, 2]
 * ```
 */
export function createLocalCommunicator(options: { readonly timeoutMs?: number } = {}): Communicator {
  const timeoutMs = checkNumber(
    'createLocalCommunicator',
    'timeoutMs',
    options.timeoutMs ?? DEFAULT_COLLECTIVE_TIMEOUT_MS,
    { min: 0, minExclusive: true },
  );
  return new CollectiveEngine(new SelfLink(), timeoutMs);
}
