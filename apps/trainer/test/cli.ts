// The `switchyard-train` command line run in-process, for tests: the exit code and what it wrote,
// and the records of a run folder.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../src/main';

/** Runs `switchyard-train args` in this process and collects stdout and stderr. */
export async function runCli(args: string[]): Promise<{ code: number; out: string; err: string }> {
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

/** The records of `metrics.jsonl` (one per step) in run folder `dir`. */
export function stepRecords<T = Record<string, number>>(dir: string): T[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as T);
}
