/**
 * The checkpoint the server runs: a plain one, or a compressed one (compression.json beside the
 * weights) with its experts computed from the shared bases and low-rank factors.
 */
import { COMPRESSION_FILES, loadCompressedCheckpoint } from '@switchyard/compress';
import { type LoadedCheckpoint, loadCheckpoint } from '@switchyard/model';
import { tf } from '@switchyard/tensor';

/** A loaded checkpoint whose model serves; `compressed` says whether its experts are factored. */
export interface ServingCheckpoint extends LoadedCheckpoint {
  readonly compressed: boolean;
}

/**
 * Loads `dir` for serving: a compressed checkpoint gets its compressed expert banks (less memory,
 * the factored compute), a plain one its full experts. Extra tensors (optimizer moments) are freed.
 *
 * @example
 * ```ts
 * const { model, tokenizer, compressed } = await loadServingCheckpoint('runs/small/checkpoints/final');
 * ```
 */
export async function loadServingCheckpoint(dir: string): Promise<ServingCheckpoint> {
  const plain = await loadCheckpoint(dir);
  tf.dispose(Object.values(plain.extraTensors ?? {}));
  if (!plain.extraFiles?.[COMPRESSION_FILES.record]) {
    const { extraTensors: _, ...rest } = plain;
    return { ...rest, compressed: false };
  }
  plain.model.dispose();
  const loaded = await loadCompressedCheckpoint(dir);
  tf.dispose(Object.values(loaded.extraTensors ?? {}));
  const { extraTensors: _, ...rest } = loaded;
  return { ...rest, compressed: true };
}
