// The `switchyard-train` command line run in-process, for tests: the exit code and what it wrote,
// the records of a run folder, and a comparison of saved tensors.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { main } from '../src/main';
import { StopRequest } from '../src/run/interrupt';

/** How {@link runCli} stops a run as Ctrl-C does: a request to hand over, or text that triggers one. */
export interface CliStop {
  /** The stop request the run watches (default: one of its own). */
  readonly stop?: StopRequest;
  /** Requests the stop once stdout shows this text. */
  readonly stopAt?: string;
}

/** Runs `switchyard-train args` in this process and collects stdout and stderr. */
export async function runCli(
  args: readonly string[],
  options: CliStop = {},
): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const stop = options.stop ?? new StopRequest();
  const code = await main(args, {
    stop,
    stdout: {
      write: (s: string) => {
        out += s;
        if (options.stopAt !== undefined && out.includes(options.stopAt)) stop.request();
        return true;
      },
      isTTY: false,
    },
    stderr: {
      write: (s: string) => {
        err += s;
        return true;
      },
      isTTY: false,
    },
  });
  return { code, out, err };
}

/** The records of `metrics.jsonl` (one per step) in run folder `dir`. */
export function stepRecords<T = Record<string, number>>(dir: string): T[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as T);
}

/**
 * ||a - b|| / ||a|| (L2 norms, ||a|| floored at 1e-15): how far `b` is from `a`, relative to `a`.
 *
 * @example
 * ```ts
 * relativeDifference(Float32Array.of(1, 0), Float32Array.of(1, 0.01)); // 0.01
 * ```
 */
export function relativeDifference(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += a[i]! ** 2;
  }
  return Math.sqrt(d / Math.max(n, 1e-30));
}

/** The tiny preset on two genres of four texts each: runs of the parallel tests take seconds. */
export const TINY_TWO_GENRES: readonly string[] = [
  '--preset',
  'tiny',
  '--set',
  'data.genres=[news, humor]',
  '--set',
  'data.maxTextsPerDomain=4',
];

/** A new temporary folder named `prefix...`, removed after the test file. */
export function scratchFolder(prefix: string): string {
  const root = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  return root;
}
