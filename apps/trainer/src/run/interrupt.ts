/**
 * Stopping a run on request (Ctrl-C): a flag that data-parallel ranks share (a SharedArrayBuffer
 * passed through `launch()`), set by the first SIGINT. Training checks it after every step, saves a
 * checkpoint and marks the run interrupted; a second Ctrl-C quits at once.
 */
import type { TextSink } from '../reporter';

/** A stop request that worker-thread ranks see too. */
export class StopRequest {
  /** The shared flag: pass it to ranks, which read it with {@link StopRequest.view}. */
  readonly flag: SharedArrayBuffer;
  private readonly cell: Int32Array;

  constructor(flag: SharedArrayBuffer = new SharedArrayBuffer(4)) {
    this.flag = flag;
    this.cell = new Int32Array(flag);
  }

  /** A request reading a flag made elsewhere (in a rank). */
  static view(flag: SharedArrayBuffer): StopRequest {
    return new StopRequest(flag);
  }

  get aborted(): boolean {
    return Atomics.load(this.cell, 0) !== 0;
  }

  request(): void {
    Atomics.store(this.cell, 0, 1);
  }
}

/** A SIGINT delivered again within this many ms is the same key press (npm and the terminal both send it). */
const SAME_PRESS_MS = 500;

/**
 * Makes the first Ctrl-C (SIGINT) request `stop` and say what happens next; a second one exits at
 * once with code 130. Returns the function that removes the handler.
 *
 * @example
 * ```ts
 * const stop = new StopRequest();
 * const release = stopOnCtrlC(stop, process.stderr);
 * try { await train({ config, stop }); } finally { release(); }
 * ```
 */
export function stopOnCtrlC(stop: StopRequest, stderr: TextSink): () => void {
  let firstAt = 0;
  const onSigint = (): void => {
    const now = Date.now();
    if (!stop.aborted) {
      firstAt = now;
      stop.request();
      stderr.write(
        '\nstopping after this step, saving a checkpoint (press Ctrl-C again to quit at once without saving)\n',
      );
      return;
    }
    if (now - firstAt < SAME_PRESS_MS) return;
    stderr.write('quitting without saving\n');
    process.exit(130);
  };
  process.on('SIGINT', onSigint);
  return () => {
    process.off('SIGINT', onSigint);
  };
}
