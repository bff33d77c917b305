/**
 * Turns tokenised texts into training micro-batches of B sequences of S + 1 tokens (inputs are the
 * first S, targets the last S), either mixed across domains or domain-homogeneous (every sequence of
 * a micro-batch from one domain). The order is a pure function of (seed, epoch), so the position
 * `{ epoch, index }` is the whole state needed to resume.
 *
 * Shape letters: B sequences per micro-batch, S sequence length.
 */
import { invalidArgument, Rng, SwitchyardError } from '@switchyard/tensor';

/** How sequences are grouped into micro-batches. */
export type BatchingMode = 'mixed' | 'domain';

/** The tokens of one domain, all its texts joined in a fixed order. */
export interface DomainStream {
  readonly domain: string;
  readonly tokens: Int32Array;
}

/** One micro-batch: inputs and targets [B, S] row-major, and each sequence's domain index. */
export interface MicroBatch {
  readonly inputsBS: Int32Array;
  readonly targetsBS: Int32Array;
  readonly domainB: Int32Array;
  readonly batchSize: number;
  readonly seqLen: number;
}

/** Where the batcher stands: which epoch and which micro-batch of it comes next. */
export interface BatcherState {
  readonly epoch: number;
  readonly index: number;
}

/** Options of {@link Batcher}. */
export interface BatcherOptions {
  readonly seqLen: number;
  readonly batchSize: number;
  readonly mode: BatchingMode;
  readonly seed: number;
}

/** A window: S + 1 consecutive tokens of one domain stream. */
interface Window {
  readonly domain: number;
  readonly start: number;
}

/**
 * Cuts each stream into windows of `seqLen + 1` tokens that overlap by one token (every token after
 * a window's first is a target exactly once); a final window shorter than `seqLen + 1` is dropped.
 */
export function windowStarts(length: number, seqLen: number): number[] {
  const out: number[] = [];
  for (let start = 0; start + seqLen + 1 <= length; start += seqLen) out.push(start);
  return out;
}

/**
 * Seeded, resumable micro-batch source.
 *
 * When to use: the training loop pulls one micro-batch per micro-step with `next()` and saves
 * `getState()` in checkpoints.
 *
 * @example
 * ```ts
 * const b = new Batcher(streams, { seqLen: 64, batchSize: 8, mode: 'domain', seed: 1 });
 * const mb = b.next();           // mb.domainB is constant in 'domain' mode
 * const pos = b.getState();      // { epoch: 0, index: 1 }
 * ```
 */
export class Batcher {
  readonly domains: readonly string[];
  private readonly windows: Window[][];
  private readonly streams: readonly DomainStream[];
  private readonly opts: BatcherOptions;
  private epoch = 0;
  private index = 0;
  private plan: Window[][] | undefined;

  constructor(streams: readonly DomainStream[], options: BatcherOptions) {
    const { seqLen, batchSize, mode } = options;
    if (!Number.isInteger(seqLen) || seqLen < 1)
      throw invalidArgument('Batcher', 'seqLen', 'an integer >= 1', seqLen);
    if (!Number.isInteger(batchSize) || batchSize < 1)
      throw invalidArgument('Batcher', 'batchSize', 'an integer >= 1', batchSize);
    if (mode !== 'mixed' && mode !== 'domain')
      throw invalidArgument('Batcher', 'mode', '"mixed" or "domain"', mode);
    this.opts = options;
    this.streams = streams;
    this.domains = streams.map((s) => s.domain);
    this.windows = streams.map((s, d) =>
      windowStarts(s.tokens.length, seqLen).map((start) => ({ domain: d, start })),
    );
    const total = this.windows.reduce((a, w) => a + w.length, 0);
    if (total === 0) {
      throw new SwitchyardError(
        'DATA_INVALID',
        `the training data is shorter than one sequence of ${seqLen + 1} tokens; add text or lower train.seqLen`,
      );
    }
  }

  /** Number of micro-batches in one pass over the data. */
  get batchesPerEpoch(): number {
    return this.epochPlan().length;
  }

  /** Training tokens (targets) available in one epoch. */
  get tokensPerEpoch(): number {
    return this.batchesPerEpoch * this.opts.batchSize * this.opts.seqLen;
  }

  getState(): BatcherState {
    return { epoch: this.epoch, index: this.index };
  }

  setState(state: BatcherState): void {
    if (
      !Number.isInteger(state?.epoch) ||
      !Number.isInteger(state?.index) ||
      state.epoch < 0 ||
      state.index < 0
    ) {
      throw invalidArgument('Batcher.setState', 'state', '{ epoch, index } of non-negative integers', state);
    }
    this.epoch = state.epoch;
    this.index = state.index;
    this.plan = undefined;
    if (this.index > this.epochPlan().length) {
      throw invalidArgument('Batcher.setState', 'state.index', `<= ${this.epochPlan().length}`, state.index);
    }
  }

  /** The next micro-batch; moves to the next epoch (a new order) at the end of one. */
  next(): MicroBatch {
    let plan = this.epochPlan();
    if (this.index >= plan.length) {
      this.epoch += 1;
      this.index = 0;
      this.plan = undefined;
      plan = this.epochPlan();
    }
    const group = plan[this.index]!;
    this.index += 1;
    const { seqLen: S, batchSize: B } = this.opts;
    const inputsBS = new Int32Array(B * S);
    const targetsBS = new Int32Array(B * S);
    const domainB = new Int32Array(B);
    group.forEach((w, b) => {
      const toks = this.streams[w.domain]!.tokens;
      inputsBS.set(toks.subarray(w.start, w.start + S), b * S);
      targetsBS.set(toks.subarray(w.start + 1, w.start + S + 1), b * S);
      domainB[b] = w.domain;
    });
    return { inputsBS, targetsBS, domainB, batchSize: B, seqLen: S };
  }

  /** The micro-batches of the current epoch, each a list of B windows. */
  private epochPlan(): Window[][] {
    if (this.plan) return this.plan;
    const B = this.opts.batchSize;
    const rng = new Rng(this.opts.seed).fork('batches').fork(this.epoch);
    const groups: Window[][] = [];
    if (this.opts.mode === 'mixed') {
      const all = this.windows.flat();
      const order = rng.permutation(all.length);
      const n = Math.max(1, Math.floor(all.length / B));
      for (let g = 0; g < n; g++) {
        groups.push(Array.from({ length: B }, (_, b) => all[order[(g * B + b) % all.length]!]!));
      }
    } else {
      this.windows.forEach((ws, d) => {
        if (ws.length === 0) return;
        const order = rng.fork(`domain-${d}`).permutation(ws.length);
        const n = Math.max(1, Math.floor(ws.length / B));
        for (let g = 0; g < n; g++) {
          groups.push(Array.from({ length: B }, (_, b) => ws[order[(g * B + b) % ws.length]!]!));
        }
      });
      rng.fork('groups').shuffle(groups);
    }
    this.plan = groups;
    return groups;
  }
}
