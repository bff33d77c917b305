import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disposeRoutingPlan } from '@switchyard/routing';
import { expectNoLeaks, Rng, type Tensor2D, tf } from '@switchyard/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { smallTokenizer } from '../test/fixtures';
import { CHECKPOINT_FILES, checkpointTensorNames, loadCheckpoint, saveCheckpoint } from './checkpoint';
import { defineModelConfig } from './config';
import { MoETransformerLM } from './model';
import { presets } from './presets';

const root = mkdtempSync(join(tmpdir(), 'sy-ckpt-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const tokenizer = smallTokenizer(300);
const CONFIG = defineModelConfig({ vocabSize: 300, tieEmbeddings: false }, presets.tiny);

/**
 * A minimal safetensors reader written from the format description: 8 bytes little-endian u64 N,
 * N bytes of JSON { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__? }, then the
 * data; offsets are relative to the byte after the header.
 */
function readSafetensorsIndependently(
  path: string,
): Map<string, { dtype: string; shape: number[]; values: Float32Array }> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, unknown>;
  const out = new Map<string, { dtype: string; shape: number[]; values: Float32Array }>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets } = entry as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    const values = new Float32Array((data_offsets[1] - data_offsets[0]) / 4);
    for (let i = 0; i < values.length; i++) values[i] = buf.readFloatLE(8 + n + data_offsets[0] + 4 * i);
    out.set(name, { dtype, shape, values });
  }
  return out;
}

function logitsOf(model: MoETransformerLM, rows: number[][]): Float32Array {
  const x = tf.tensor2d(rows, undefined, 'int32') as Tensor2D;
  const { logitsBSV, plans } = model.forward(x, { training: false });
  const out = logitsBSV.dataSync() as Float32Array;
  tf.dispose([x, logitsBSV]);
  plans.forEach(disposeRoutingPlan);
  return Float32Array.from(out);
}

/** Rewrites one file of a checkpoint and its manifest entry, so only the content check can catch it. */
function rewrite(dir: string, name: string, data: string | Uint8Array): void {
  writeFileSync(join(dir, name), data);
  const manifest = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.manifest), 'utf8'));
  const bytes = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
  manifest.files[name] = { bytes, sha256: createHash('sha256').update(data).digest('hex') };
  writeFileSync(join(dir, CHECKPOINT_FILES.manifest), JSON.stringify(manifest));
}

const ROWS = [
  [1, 5, 9, 2, 6, 5, 3],
  [8, 9, 7, 9, 3, 2, 3],
];

describe('checkpoints', () => {
  it('save -> load gives identical logits, config, tokenizer and trainer state', async () => {
    const model = new MoETransformerLM(CONFIG, new Rng(1));
    model.setSelectionBias(0, new Float32Array([0.5, -0.25, 0, 1]));
    const dir = join(root, 'a', 'ckpt-10');
    const moments = new Rng(2).normalTensor([3, 4]);
    await saveCheckpoint(dir, {
      model,
      tokenizer,
      trainerState: { step: 10, rng: new Rng(3).getState() },
      extraTensors: { 'adam.m.0': moments, counts: new Int32Array([1, 2, 3]) },
    });
    expect(readdirSync(dir).sort()).toEqual(
      [
        'config.json',
        'manifest.json',
        'model.safetensors',
        'tokenizer.json',
        'trainer_state.json',
        'trainer_state.safetensors',
      ].sort(),
    );
    expect(readdirSync(join(root, 'a'))).toEqual(['ckpt-10']); // no temporary folder left behind
    const loaded = await loadCheckpoint(dir);
    expect(loaded.config).toEqual(CONFIG);
    expect(Array.from(logitsOf(loaded.model, ROWS))).toEqual(Array.from(logitsOf(model, ROWS)));
    expect(loaded.model.getSelectionBias(0)).toEqual(new Float32Array([0.5, -0.25, 0, 1]));
    expect(loaded.tokenizer.encode('the lazy fox')).toEqual(tokenizer.encode('the lazy fox'));
    expect(loaded.trainerState).toEqual({ step: 10, rng: new Rng(3).getState() });
    expect(loaded.extraTensors!['adam.m.0']!.arraySync()).toEqual(moments.arraySync());
    expect(loaded.extraTensors!.counts!.dtype).toBe('int32');
    expect(Array.from(loaded.extraTensors!.counts!.dataSync())).toEqual([1, 2, 3]);
    tf.dispose([moments, ...Object.values(loaded.extraTensors!)]);
    loaded.model.dispose();
    model.dispose();
  });

  it('writes extra files into the manifest and hands them back verified on load', async () => {
    const model = new MoETransformerLM(CONFIG, new Rng(1));
    const dir = join(root, 'extra');
    const bytes = new Uint8Array([1, 2, 3, 250]);
    await saveCheckpoint(dir, {
      model,
      tokenizer,
      extraFiles: { 'notes.json': '{"a":1}\n', 'blob.bin': bytes },
    });
    const manifest = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.manifest), 'utf8'));
    expect(Object.keys(manifest.files)).toEqual(expect.arrayContaining(['notes.json', 'blob.bin']));
    const loaded = await loadCheckpoint(dir);
    expect(Object.keys(loaded.extraFiles!).sort()).toEqual(['blob.bin', 'notes.json']);
    expect(Array.from(loaded.extraFiles!['blob.bin']!)).toEqual([1, 2, 3, 250]);
    expect(new TextDecoder().decode(loaded.extraFiles!['notes.json'])).toBe('{"a":1}\n');
    loaded.model.dispose();
    await expect(
      saveCheckpoint(join(root, 'extra2'), { model, tokenizer, extraFiles: { 'config.json': '{}' } }),
    ).rejects.toThrow(
      /extra file `config.json` passed to saveCheckpoint\(\) must have a plain file name other than the standard ones/,
    );
    await expect(
      saveCheckpoint(join(root, 'extra3'), { model, tokenizer, extraFiles: { '../x': '{}' } }),
    ).rejects.toThrow(/extra file `..\/x`/);
    model.dispose();
  });

  it('writes Mixtral tensor names in [out, in] orientation, readable by an independent parser', async () => {
    const model = new MoETransformerLM(CONFIG, new Rng(4));
    const dir = join(root, 'names');
    await saveCheckpoint(dir, { model, tokenizer });
    const file = readSafetensorsIndependently(join(dir, CHECKPOINT_FILES.weights));
    const names = [...file.keys()];
    const layer1 = [
      'input_layernorm.weight',
      'self_attn.q_proj.weight',
      'self_attn.k_proj.weight',
      'self_attn.v_proj.weight',
      'self_attn.o_proj.weight',
      'post_attention_layernorm.weight',
      'block_sparse_moe.gate.weight',
      ...[0, 1, 2, 3].flatMap((e) =>
        ['w1', 'w2', 'w3'].map((w) => `block_sparse_moe.experts.${e}.${w}.weight`),
      ),
    ].map((n) => `model.layers.1.${n}`);
    expect(names).toEqual(
      expect.arrayContaining(['model.embed_tokens.weight', 'model.norm.weight', 'lm_head.weight', ...layer1]),
    );
    expect(names).toEqual(
      expect.arrayContaining(
        ['gate_proj', 'up_proj', 'down_proj'].map((p) => `model.layers.0.mlp.${p}.weight`),
      ),
    );
    expect(names).toHaveLength(checkpointTensorNames(model).length);
    for (const { name, shape } of checkpointTensorNames(model)) expect(file.get(name)!.shape).toEqual(shape);
    // PyTorch orientation: q_proj.weight is [H*A, D] = the transpose of the [D, H*A] variable.
    const q = model.namedVariables().get('layers.1.attn.q')!.arraySync() as number[][];
    const qFile = file.get('model.layers.1.self_attn.q_proj.weight')!;
    expect(qFile.dtype).toBe('F32');
    expect(qFile.shape).toEqual([32, 32]);
    expect(qFile.values[1 * 32 + 0]).toBe(Math.fround(q[0]![1]!));
    // Expert 2's w2 [D, F] is the transpose of experts.w2[2] ([F, D]).
    const w2 = model.namedVariables().get('layers.1.moe.experts.w2')!.arraySync() as number[][][];
    const w2File = file.get('model.layers.1.block_sparse_moe.experts.2.w2.weight')!;
    expect(w2File.shape).toEqual([32, 32]);
    expect(w2File.values[5 * 32 + 7]).toBe(Math.fround(w2[2]![7]![5]!));
    const router = model.namedVariables().get('layers.1.moe.router.weight')!.arraySync() as number[][];
    expect(file.get('model.layers.1.block_sparse_moe.gate.weight')!.values[3 * 32 + 10]).toBe(
      Math.fround(router[10]![3]!),
    );
    const manifest = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.manifest), 'utf8'));
    expect(manifest.files[CHECKPOINT_FILES.weights].sha256).toBe(
      createHash('sha256')
        .update(readFileSync(join(dir, CHECKPOINT_FILES.weights)))
        .digest('hex'),
    );
    model.dispose();
  });

  it('names shared experts, dense layers and stored biases as documented', async () => {
    const cfg = defineModelConfig({ moe: { shared: { count: 2, dFF: 16, gate: true } } }, CONFIG);
    const model = new MoETransformerLM(cfg, new Rng(5));
    model.setSelectionBias(0, new Float32Array(4));
    const dir = join(root, 'shared');
    await saveCheckpoint(dir, { model, tokenizer });
    const file = readSafetensorsIndependently(join(dir, CHECKPOINT_FILES.weights));
    expect(file.get('model.layers.1.block_sparse_moe.shared_experts.w1.weight')!.shape).toEqual([32, 32]);
    expect(file.get('model.layers.1.block_sparse_moe.shared_experts.w2.weight')!.shape).toEqual([32, 32]);
    expect(file.get('model.layers.1.block_sparse_moe.shared_experts_gate.weight')!.shape).toEqual([1, 32]);
    expect(file.get('model.layers.1.block_sparse_moe.gate.e_score_correction_bias')!.shape).toEqual([4]);
    expect(JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.config), 'utf8'))).toMatchObject({
      model_type: 'switchyard_moe',
      n_shared_experts: 2,
      shared_expert_intermediate_size: 16,
      shared_expert_gate: true,
      first_k_dense_replace: 1,
    });
    const loaded = await loadCheckpoint(dir);
    expect(Array.from(logitsOf(loaded.model, ROWS))).toEqual(Array.from(logitsOf(model, ROWS)));
    loaded.model.dispose();
    model.dispose();
  });

  it('replaces an existing checkpoint atomically and refuses other folders', async () => {
    const dir = join(root, 'replace');
    const m1 = new MoETransformerLM(CONFIG, new Rng(6));
    const m2 = new MoETransformerLM(CONFIG, new Rng(7));
    await saveCheckpoint(dir, { model: m1, tokenizer, trainerState: { step: 1 } });
    await expect(
      saveCheckpoint(dir, { model: m2, tokenizer, trainerState: { bad: 1n } as object }),
    ).rejects.toThrow(/`trainerState` passed to saveCheckpoint\(\) is not JSON-serialisable/);
    expect((await loadCheckpoint(dir)).trainerState).toEqual({ step: 1 }); // untouched by the failed save
    await saveCheckpoint(dir, { model: m2, tokenizer });
    const loaded = await loadCheckpoint(dir);
    expect(loaded.trainerState).toBeUndefined();
    expect(Array.from(logitsOf(loaded.model, ROWS))).toEqual(Array.from(logitsOf(m2, ROWS)));
    expect(readdirSync(root).filter((n) => n.includes('.tmp-'))).toEqual([]);
    const other = join(root, 'not-a-checkpoint');
    mkdirSync(other);
    writeFileSync(join(other, 'notes.txt'), 'keep me');
    await expect(saveCheckpoint(other, { model: m1, tokenizer })).rejects.toThrow(
      /refuses to replace .*not-a-checkpoint.*not a checkpoint/,
    );
    expect(readFileSync(join(other, 'notes.txt'), 'utf8')).toBe('keep me');
    for (const m of [m1, m2, loaded.model]) m.dispose();
  });

  describe('damaged checkpoints give a clear error', () => {
    const fresh = async (name: string) => {
      const dir = join(root, 'damaged', name);
      const model = new MoETransformerLM(CONFIG, new Rng(8));
      await saveCheckpoint(dir, { model, tokenizer });
      model.dispose();
      return dir;
    };

    it('a corrupted weight file', async () => {
      const dir = await fresh('corrupt');
      const path = join(dir, CHECKPOINT_FILES.weights);
      const bytes = readFileSync(path);
      bytes[bytes.length - 100]! ^= 0xff;
      writeFileSync(path, bytes);
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /checkpoint .*corrupt: model\.safetensors is corrupted: its sha256 is [0-9a-f]{64}, the manifest records [0-9a-f]{64}/,
      );
    });

    it('a truncated weight file', async () => {
      const dir = await fresh('truncated');
      const path = join(dir, CHECKPOINT_FILES.weights);
      const size = readFileSync(path).length;
      truncateSync(path, size - 1000);
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        new RegExp(
          `model\\.safetensors is truncated: the manifest records ${size} bytes, the file has ${size - 1000}`,
        ),
      );
    });

    it('a truncated file whose manifest was updated (caught by the safetensors parser)', async () => {
      const dir = await fresh('truncated-consistent');
      const bytes = readFileSync(join(dir, CHECKPOINT_FILES.weights));
      rewrite(dir, CHECKPOINT_FILES.weights, bytes.subarray(0, bytes.length - 64));
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /model\.safetensors: tensor `lm_head\.weight` ends at byte \d+ .*\(file truncated\)/,
      );
    });

    it('a missing file, a missing manifest, a corrupted config', async () => {
      const dir = await fresh('missing');
      rmSync(join(dir, CHECKPOINT_FILES.tokenizer));
      await expect(loadCheckpoint(dir)).rejects.toThrow(/tokenizer\.json is missing/);
      rmSync(join(dir, CHECKPOINT_FILES.manifest));
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /cannot read manifest\.json \(not a checkpoint folder, or an unfinished write\)/,
      );
      const dir2 = await fresh('config');
      rewrite(dir2, CHECKPOINT_FILES.config, '{"hidden_size": 32');
      await expect(loadCheckpoint(dir2)).rejects.toThrow(/config\.json is not valid JSON/);
      await expect(loadCheckpoint(join(root, 'nowhere'))).rejects.toMatchObject({
        code: 'CHECKPOINT_INVALID',
      });
    });

    it('weights that do not match the config, reported by tensor name', async () => {
      const dir = await fresh('shapes');
      const config = JSON.parse(readFileSync(join(dir, CHECKPOINT_FILES.config), 'utf8'));
      rewrite(dir, CHECKPOINT_FILES.config, JSON.stringify({ ...config, intermediate_size: 48 }));
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /tensor `model\.layers\.1\.block_sparse_moe\.experts\.0\.w1\.weight` in model\.safetensors has shape \[32, 32\], config\.json implies \[48, 32\]/,
      );
      rewrite(dir, CHECKPOINT_FILES.config, JSON.stringify({ ...config, num_local_experts: 5 }));
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /tensor `model\.layers\.1\.block_sparse_moe\.gate\.weight` in model\.safetensors has shape \[4, 32\], config\.json implies \[5, 32\]/,
      );
      rewrite(dir, CHECKPOINT_FILES.config, JSON.stringify({ ...config, tie_word_embeddings: true }));
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /holds tensor `lm_head\.weight`, which config\.json does not imply/,
      );
      rewrite(dir, CHECKPOINT_FILES.config, JSON.stringify({ ...config, num_hidden_layers: 3 }));
      await expect(loadCheckpoint(dir)).rejects.toThrow(
        /lacks tensor `model\.layers\.2\.input_layernorm\.weight` \(shape \[32\]\)/,
      );
    });
  });

  it('leaks no tensors when saving and loading', async () => {
    const model = new MoETransformerLM(CONFIG, new Rng(9));
    const dir = join(root, 'leaks');
    await saveCheckpoint(dir, { model, tokenizer });
    await expectNoLeaks(async () => {
      await saveCheckpoint(dir, { model, tokenizer });
      const loaded = await loadCheckpoint(dir);
      loaded.model.dispose();
    });
    expect(existsSync(dir)).toBe(true);
    model.dispose();
  });
});
