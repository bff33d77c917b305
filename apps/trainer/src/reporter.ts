/**
 * The one route for everything the trainer tells its user: a live progress bar on a terminal, plain
 * log lines when stdout is not one (pipes, files, CI), or nothing (tests, library use).
 */

/** One optimizer step's numbers, as shown by the progress display. */
export interface ProgressInfo {
  /** Optimizer steps done (1-based). */
  readonly step: number;
  readonly totalSteps: number;
  readonly loss: number;
  readonly lr: number;
  readonly tokensPerSec: number;
  /** MaxVio over this step's tokens, averaged over MoE layers (NaN when the model has none). */
  readonly maxVioBatch: number;
  /** Seconds since training started (this process). */
  readonly elapsedSec: number;
  /** Steps this process has run (for the ETA when resuming). */
  readonly stepsThisRun: number;
}

/** How progress is shown: `auto` picks `bar` on a terminal and `lines` otherwise. */
export type ProgressMode = 'auto' | 'bar' | 'lines' | 'quiet';

/** Where the trainer's messages go. */
export interface Reporter {
  /** A log line (setup, evaluation results, checkpoints). */
  info(message: string): void;
  /** A warning, on stderr. */
  warn(message: string): void;
  /** One optimizer step done. */
  progress(p: ProgressInfo): void;
  /** A result line that is always printed on stdout (even in `quiet` mode). */
  result(line: string): void;
  /** Ends the progress display (leaves the last bar on screen). */
  close(): void;
}

/** A writable text stream (process.stdout or a test double). */
export interface TextSink {
  write(s: string): unknown;
  readonly isTTY?: boolean;
  readonly columns?: number;
}

/** Options of {@link createReporter}. */
export interface ReporterOptions {
  readonly mode?: ProgressMode;
  /** In `lines` mode, print one line every this many steps (and at the last step). Default 10. */
  readonly every?: number;
  readonly stdout?: TextSink;
  readonly stderr?: TextSink;
}

/** Formats seconds as `1h02m`, `3m05s` or `12s`. */
export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '?';
  const s = Math.round(sec);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** Formats a rate such as 12345 as `12.3k`. */
export function formatRate(x: number): string {
  if (!Number.isFinite(x)) return '?';
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)}k`;
  return x.toFixed(0);
}

/** Where the estimate of the time left starts: the end of this process's first step. */
interface EtaBase {
  readonly step: number;
  readonly elapsedSec: number;
}

/**
 * Seconds left at the mean pace of the steps after this process's first one (which also pays for
 * warming up the backend, so counting it would overstate the time left); undefined at the first step.
 */
export function etaSec(p: ProgressInfo, base: EtaBase): number | undefined {
  if (p.step <= base.step) return undefined;
  return ((p.totalSteps - p.step) * (p.elapsedSec - base.elapsedSec)) / (p.step - base.step);
}

/** ` | ETA 2m05s`, or nothing while there is no estimate. */
function etaText(p: ProgressInfo, base: EtaBase, sep: string): string {
  const left = etaSec(p, base);
  return left === undefined ? '' : `${sep}ETA ${formatDuration(left)}`;
}

/** The fields shared by the bar and the log line. */
export function progressFields(p: ProgressInfo, base: EtaBase): string {
  const vio = Number.isFinite(p.maxVioBatch) ? ` | MaxVio ${p.maxVioBatch.toFixed(3)}` : '';
  return (
    `loss ${p.loss.toFixed(4)} | lr ${p.lr.toExponential(2)} | ${formatRate(p.tokensPerSec)} tok/s` +
    `${vio}${etaText(p, base, ' | ')}`
  );
}

/**
 * Builds a reporter.
 *
 * When to use: the CLI makes one with `mode: 'auto'`; tests and library callers use `quiet` or a
 * collecting sink.
 *
 * @example
 * ```ts
 * const reporter = createReporter({ mode: 'auto' });
 * reporter.info('training 300 steps');
 * ```
 */
export function createReporter(options: ReporterOptions = {}): Reporter {
  const stdout = options.stdout ?? process.stdout;
  const stderr = options.stderr ?? process.stderr;
  const requested = options.mode ?? 'auto';
  const mode = requested === 'auto' ? (stdout.isTTY ? 'bar' : 'lines') : requested;
  const every = Math.max(1, options.every ?? 10);
  let barShown = false;
  let lastBar = '';
  // Reset at the first step of each run (an experiment trains several runs through one reporter).
  let base: EtaBase = { step: 0, elapsedSec: 0 };

  const clearBar = (): void => {
    if (barShown) stdout.write('\r\x1b[2K');
  };
  const redraw = (): void => {
    if (barShown) stdout.write(lastBar);
  };

  return {
    info(message) {
      if (mode === 'quiet') return;
      clearBar();
      stdout.write(`${message}\n`);
      redraw();
    },
    warn(message) {
      clearBar();
      stderr.write(`warning: ${message}\n`);
      redraw();
    },
    progress(p) {
      if (p.stepsThisRun === 1) base = { step: p.step, elapsedSec: p.elapsedSec };
      if (mode === 'quiet') return;
      if (mode === 'lines') {
        if (p.step % every === 0 || p.step === p.totalSteps || p.stepsThisRun === 1) {
          stdout.write(`step ${p.step}/${p.totalSteps} | ${progressFields(p, base)}\n`);
        }
        return;
      }
      const width = 12;
      const filled = Math.round((width * p.step) / Math.max(1, p.totalSteps));
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
      const vio = Number.isFinite(p.maxVioBatch) ? ` MaxVio ${p.maxVioBatch.toFixed(3)}` : '';
      // Compact, so the whole bar fits an 80-column terminal.
      let line =
        `${bar} ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(1)} ` +
        `${formatRate(p.tokensPerSec)} tok/s${vio}${etaText(p, base, ' ')}`;
      const cols = stdout.columns ?? 120;
      if (line.length > cols - 1) line = line.slice(0, cols - 1);
      lastBar = `\r\x1b[2K${line}`;
      stdout.write(lastBar);
      barShown = true;
    },
    result(line) {
      clearBar();
      stdout.write(`${line}\n`);
      redraw();
    },
    close() {
      if (barShown) stdout.write('\n');
      barShown = false;
      lastBar = '';
    },
  };
}

/**
 * A reporter that records everything it is told (for tests).
 *
 * @example
 * ```ts
 * const r = collectingReporter();
 * r.info('x');
 * r.lines; // ['x']
 * ```
 */
export function collectingReporter(): Reporter & {
  readonly lines: string[];
  readonly steps: ProgressInfo[];
} {
  const lines: string[] = [];
  const steps: ProgressInfo[] = [];
  return {
    lines,
    steps,
    info: (m) => lines.push(m),
    warn: (m) => lines.push(`warning: ${m}`),
    progress: (p) => steps.push(p),
    result: (l) => lines.push(l),
    close: () => {},
  };
}
