/**
 * The command line run in-process with its output captured, and a comparison of saved tensors: what
 * tests (and scripts) of whole runs need.
 */
import { main } from './main';

/** What {@link runCli} returns: the exit code and everything written to stdout and stderr. */
export interface CliRun {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/**
 * Runs `switchyard-train` with `args` in this process, capturing its output (not a terminal).
 *
 * @example
 * ```ts
 * const { code, out } = await runCli(['--preset', 'tiny', '--set', 'train.steps=2']);
 * ```
 */
export async function runCli(args: readonly string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const sink = (add: (s: string) => void) => ({
    write: (s: string) => {
      add(s);
      return true;
    },
    isTTY: false,
  });
  const code = await main(args, {
    stdout: sink((s) => {
      out += s;
    }),
    stderr: sink((s) => {
      err += s;
    }),
  });
  return { code, out, err };
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
