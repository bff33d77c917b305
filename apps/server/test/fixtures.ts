/**
 * A tiny checkpoint for the server's tests, written to a temporary folder: the model package's
 * `tiny` preset with weights large enough (init std 0.2) that greedy choices are clear-cut, and a
 * byte-level BPE tokenizer trained on a fixed text.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BpeTokenizer,
  defineModelConfig,
  type ModelConfigInput,
  MoETransformerLM,
  presets,
  saveCheckpoint,
} from '@switchyard/model';
import { Rng } from '@switchyard/tensor';

const TEXT = [
  'the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs.',
  'naïve café owners serve crème brûlée to the fox and the dog.',
];

/** A checkpoint folder (removed by `cleanup`) and its parts. */
export interface TestCheckpoint {
  readonly dir: string;
  readonly tokenizer: BpeTokenizer;
  cleanup(): void;
}

/**
 * Writes the test checkpoint into a new temporary folder named `name`.
 *
 * @example
 * ```ts
 * const ckpt = await writeTestCheckpoint();
 * afterAll(() => ckpt.cleanup());
 * ```
 */
export async function writeTestCheckpoint(
  overrides: ModelConfigInput = {},
  name = 'tiny-moe',
): Promise<TestCheckpoint> {
  const root = mkdtempSync(join(tmpdir(), 'sy-serve-'));
  const dir = join(root, name);
  const tokenizer = BpeTokenizer.train({ texts: TEXT }, { vocabSize: 300 });
  const config = defineModelConfig(
    { vocabSize: tokenizer.vocabSize, initStd: 0.2, ...overrides },
    presets.tiny,
  );
  const model = new MoETransformerLM(config, new Rng(7));
  try {
    await saveCheckpoint(dir, { model, tokenizer });
  } finally {
    model.dispose();
  }
  return { dir, tokenizer, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}

/** Node arguments that run a TypeScript entry point from sources (tsx, the source export condition). */
export function fromSources(script: string, args: readonly string[]): string[] {
  return ['--conditions=@switchyard/source', '--import', 'tsx', script, ...args];
}
