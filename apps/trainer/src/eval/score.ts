/**
 * `switchyard-train eval`: the mean next-token cross-entropy of a checkpoint's model over a text.
 * The token sequence is cut into consecutive windows of seqLen + 1 tokens that overlap by one, so
 * every token after the first is predicted exactly once from at most seqLen tokens of its own
 * window; the last window may be shorter; nothing is padded and no special token is added.
 *
 * Shape letters: B windows per batch, S window length minus one.
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadCheckpoint, type MoETransformerLM } from '@switchyard/model';
import { SwitchyardError, tf } from '@switchyard/tensor';

/** One scoring window: tokens [start, start + length). */
export interface ScoringWindow {
  readonly start: number;
  readonly length: number;
}

/**
 * Consecutive windows of `seqLen + 1` tokens overlapping by one token; the last may be shorter.
 * Every token but the first is a target in exactly one window.
 *
 * @example
 * ```ts
 * scoringWindows(10, 4); // [{ start: 0, length: 5 }, { start: 4, length: 5 }, { start: 8, length: 2 }]
 * ```
 */
export function scoringWindows(numTokens: number, seqLen: number): ScoringWindow[] {
  const out: ScoringWindow[] = [];
  for (let start = 0; start + 1 < numTokens; start += seqLen) {
    out.push({ start, length: Math.min(seqLen + 1, numTokens - start) });
  }
  return out;
}

/** Result of {@link scoreTokens}. */
export interface ScoreResult {
  /** Mean next-token cross-entropy (nats per predicted token). */
  readonly loss: number;
  /** Predicted tokens (the sequence length minus one). */
  readonly predicted: number;
}

/**
 * Scores a token sequence with a model (inference mode), batching windows of equal length.
 *
 * When to use: evaluating a checkpoint on held-out text.
 *
 * @example
 * ```ts
 * const { loss, predicted } = scoreTokens(model, tokenizer.encode(text), 128);
 * ```
 */
export function scoreTokens(
  model: MoETransformerLM,
  ids: readonly number[],
  seqLen: number,
  batchSize = 16,
): ScoreResult {
  const windows = scoringWindows(ids.length, seqLen);
  let nll = 0;
  let predicted = 0;
  for (let i = 0; i < windows.length; ) {
    const len = windows[i]!.length;
    let j = i;
    while (j < windows.length && j - i < batchSize && windows[j]!.length === len) j++;
    const group = windows.slice(i, j);
    const S = len - 1;
    const inputs = new Int32Array(group.length * S);
    const targets = new Int32Array(group.length * S);
    group.forEach((w, b) => {
      for (let t = 0; t < S; t++) {
        inputs[b * S + t] = ids[w.start + t]!;
        targets[b * S + t] = ids[w.start + t + 1]!;
      }
    });
    const mean = tf.tidy(() => {
      const x = tf.tensor2d(inputs, [group.length, S], 'int32');
      const y = tf.tensor2d(targets, [group.length, S], 'int32');
      return model.loss(x, y, { training: false }).loss.dataSync()[0]!;
    });
    nll += mean * group.length * S;
    predicted += group.length * S;
    i = j;
  }
  return { loss: predicted > 0 ? nll / predicted : Number.NaN, predicted };
}

/** What {@link evaluateCheckpoint} returns. */
export interface CheckpointEval extends ScoreResult {
  /** Tokens the text encodes to. */
  readonly tokens: number;
  /** Window length minus one used. */
  readonly seqLen: number;
}

/**
 * Loads a checkpoint and scores a text file with its model and tokenizer. The window length is the
 * training sequence length saved with the checkpoint (else the model's maxSeqLen).
 *
 * @example
 * ```ts
 * const r = await evaluateCheckpoint('runs/small-1/checkpoints/final', 'held-out.txt');
 * ```
 */
export async function evaluateCheckpoint(checkpointDir: string, textFile: string): Promise<CheckpointEval> {
  if (!existsSync(textFile)) {
    throw new SwitchyardError('DATA_INVALID', `text file ${textFile} does not exist`, {
      details: { path: textFile },
    });
  }
  const text = readFileSync(textFile, 'utf8');
  const loaded = await loadCheckpoint(checkpointDir);
  try {
    const saved = (loaded.trainerState as { config?: { train?: { seqLen?: unknown } } } | undefined)?.config
      ?.train?.seqLen;
    const seqLen =
      typeof saved === 'number' && Number.isInteger(saved) && saved >= 1 && saved <= loaded.config.maxSeqLen
        ? saved
        : loaded.config.maxSeqLen;
    const ids = loaded.tokenizer.encode(text);
    if (ids.length < 2) {
      throw new SwitchyardError(
        'DATA_INVALID',
        `text file ${textFile} encodes to ${ids.length} token(s); at least 2 are needed`,
      );
    }
    return { ...scoreTokens(loaded.model, ids, seqLen), tokens: ids.length, seqLen };
  } finally {
    loaded.model.dispose();
    tf.dispose(Object.values(loaded.extraTensors ?? {}));
  }
}
