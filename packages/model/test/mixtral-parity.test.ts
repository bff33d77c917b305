// Logits of a seeded Mixtral-configured checkpoint against golden logits computed in PyTorch by
// scripts/hf-parity/mixtral_logits.py (see docs/concepts/checkpoint-format.md for how to rerun it).
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { CHECKPOINT_FILES, loadCheckpoint, mixtralIncompatibilities, saveCheckpoint } from '../src/index';
import { buildParityModel, PARITY_CONFIG, parityTokens, smallTokenizer } from './fixtures';

interface Golden {
  readonly tokens: number[][];
  readonly weightsSha256: string;
  readonly implementation: string;
  readonly logits: number[][][];
}

const golden = JSON.parse(
  readFileSync(new URL('./assets/mixtral-parity.json', import.meta.url), 'utf8'),
) as Golden;
const dir = mkdtempSync(join(tmpdir(), 'sy-parity-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('Mixtral parity', () => {
  it('the fixture is configured exactly as Mixtral', () => {
    expect(mixtralIncompatibilities(PARITY_CONFIG)).toEqual([]);
  });

  it('rebuilds the checkpoint the golden logits were computed from', async () => {
    const model = buildParityModel();
    await saveCheckpoint(join(dir, 'ckpt'), { model, tokenizer: smallTokenizer() });
    model.dispose();
    const sha = createHash('sha256')
      .update(readFileSync(join(dir, 'ckpt', CHECKPOINT_FILES.weights)))
      .digest('hex');
    // If this fails the seeded init changed: rerun scripts/hf-parity to refresh the golden file.
    expect(sha).toBe(golden.weightsSha256);
    expect(parityTokens()).toEqual(golden.tokens);
  });

  it(`gives the logits of ${golden.implementation} (max abs error < 1e-4)`, async () => {
    const { model } = await loadCheckpoint(join(dir, 'ckpt'));
    const x = tf.tensor2d(golden.tokens, undefined, 'int32') as Tensor2D;
    const { logitsBSV, plans } = model.forward(x, { training: false });
    const ours = logitsBSV.arraySync();
    let maxErr = 0;
    let maxAbs = 0;
    golden.logits.forEach((seq, b) => {
      seq.forEach((row, s) => {
        row.forEach((v, i) => {
          maxErr = Math.max(maxErr, Math.abs(v - ours[b]![s]![i]!));
          maxAbs = Math.max(maxAbs, Math.abs(v));
        });
      });
    });
    expect(maxAbs).toBeGreaterThan(1); // non-trivial logits
    expect(maxErr).toBeLessThan(1e-4);
    tf.dispose(logitsBSV);
    plans.forEach(disposeRoutingPlan);
    await expectNoLeaks(() => {
      const r = model.forward(x, { training: false });
      r.plans.forEach(disposeRoutingPlan);
      return r.logitsBSV;
    });
    x.dispose();
    model.dispose();
  });
});
