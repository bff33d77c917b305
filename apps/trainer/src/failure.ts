/**
 * How the command line ends on an error: one line on stderr, and exit code 2 for usage and
 * configuration errors, 1 for everything else (a stack trace only for an unexpected failure).
 */
import { isSwitchyardError } from '@switchyard/tensor';
import type { TextSink } from './reporter';

/** Writes `e` as the command line reports it and returns the exit code. */
export function reportFailure(e: unknown, stderr: TextSink): number {
  if (isSwitchyardError(e)) {
    stderr.write(`error: ${e.message}\n`);
    return e.code === 'CONFIG_INVALID' || e.code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
  stderr.write(`error: unexpected failure: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return 1;
}
