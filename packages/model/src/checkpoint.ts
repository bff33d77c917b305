/**
 * Checkpoints: a folder with config.json, model.safetensors (Hugging Face Mixtral tensor names,
 * PyTorch [out, in] orientation), tokenizer.json, optional trainer_state.json and
 * trainer_state.safetensors, and manifest.json with the size and sha256 of every file. Written to a
 * temporary folder and renamed into place; loading verifies hashes, names and shapes.
 *
 * Shape letters: V vocabulary, D model width, E experts, F expert hidden width, X/Y projection widths.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Rng, SwitchyardError, tf } from '@switchyard/tensor';
import { z } from 'zod';
import type { ModelConfig } from './config';
import { fromHfConfig, toHfConfig } from './hfconfig';
import { formatZodError } from './internal/zod';
import { MoETransformerLM } from './model';
import { decodeSafetensors, encodeSafetensors, type SafetensorsEntry } from './safetensors';
import { BpeTokenizer, END_OF_TEXT } from './tokenizer';

/** File names inside a checkpoint folder. */
export const CHECKPOINT_FILES = {
  config: 'config.json',
  weights: 'model.safetensors',
  tokenizer: 'tokenizer.json',
  trainerState: 'trainer_state.json',
  trainerTensors: 'trainer_state.safetensors',
  manifest: 'manifest.json',
} as const;

/** What {@link saveCheckpoint} writes. */
export interface SaveCheckpointOptions {
  /** The model whose weights, config and stored selection biases are saved. */
  readonly model: MoETransformerLM;
  /** The tokenizer, saved as tokenizer.json. */
  readonly tokenizer: BpeTokenizer;
  /** JSON-serialisable trainer state (step, RNG state, data position, ...), saved as trainer_state.json. */
  readonly trainerState?: object;
  /** Extra tensors (optimizer moments, balance buffers), saved in trainer_state.safetensors; arrays are saved 1-D. */
  readonly extraTensors?: Readonly<Record<string, tf.Tensor | Float32Array | Int32Array>>;
  /**
   * Further files written into the folder and listed (with their sha256) in manifest.json, by plain
   * file name, e.g. the factors of a compressed model. Names of the standard files are refused.
   */
  readonly extraFiles?: Readonly<Record<string, Uint8Array | string>>;
}

/** What {@link loadCheckpoint} returns. */
export interface LoadedCheckpoint {
  readonly model: MoETransformerLM;
  readonly tokenizer: BpeTokenizer;
  readonly config: ModelConfig;
  /** trainer_state.json, when saved. */
  readonly trainerState?: Record<string, unknown>;
  /** trainer_state.safetensors as tensors (the caller disposes them), when saved. */
  readonly extraTensors?: Record<string, tf.Tensor>;
  /** Files the manifest lists besides the standard ones (see `extraFiles` of saveCheckpoint), verified. */
  readonly extraFiles?: Readonly<Record<string, Uint8Array>>;
}

/** The manifest.json layout. */
export interface CheckpointManifest {
  readonly format: 'switchyard-checkpoint';
  readonly version: 1;
  /** Every other file of the checkpoint with its size in bytes and sha256 (hex). */
  readonly files: Readonly<Record<string, { readonly bytes: number; readonly sha256: string }>>;
}

const manifestSchema = z.strictObject({
  format: z.literal('switchyard-checkpoint'),
  version: z.literal(1),
  files: z.record(
    z.string(),
    z.strictObject({ bytes: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) }),
  ),
});

/** One tensor of model.safetensors and how it maps to a model variable. */
interface TensorSpec {
  /** Name in model.safetensors. */
  readonly name: string;
  /** Shape in model.safetensors. */
  readonly shape: readonly number[];
  /** Values in file layout. */
  read(): Float32Array;
  /** Stores values given in file layout. */
  write(data: Float32Array): void;
}

/** [rows, cols] row-major -> [cols, rows]. */
function transpose2d(
  src: Float32Array | Int32Array,
  rows: number,
  cols: number,
  srcOffset = 0,
): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = srcOffset + r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = src[base + c]!;
  }
  return out;
}

function assign(v: tf.Variable, data: Float32Array): void {
  tf.tidy(() => v.assign(tf.tensor(data, v.shape, 'float32')));
}

/** A variable stored as is. */
function plain(name: string, v: tf.Variable): TensorSpec {
  return {
    name,
    shape: v.shape,
    read: () => v.dataSync() as Float32Array,
    write: (d) => assign(v, d),
  };
}

/** A [in, out] variable stored as PyTorch's [out, in]. */
function linear(name: string, v: tf.Variable): TensorSpec {
  const [rows, cols] = v.shape as [number, number];
  return {
    name,
    shape: [cols, rows],
    read: () => transpose2d(v.dataSync() as Float32Array, rows, cols),
    write: (d) => assign(v, transpose2d(d, cols, rows)),
  };
}

/** Expert weights [E, in, out] stored as E tensors [out, in] named by `nameOf(e)`. */
function perExpert(nameOf: (e: number) => string, v: tf.Variable): TensorSpec[] {
  const [E, rows, cols] = v.shape as [number, number, number];
  const pending = new Float32Array(E * rows * cols);
  let written = 0;
  return Array.from({ length: E }, (_, e) => ({
    name: nameOf(e),
    shape: [cols, rows],
    read: () => transpose2d(v.dataSync() as Float32Array, rows, cols, e * rows * cols),
    write: (d: Float32Array) => {
      pending.set(transpose2d(d, cols, rows), e * rows * cols);
      if (++written === E) assign(v, pending);
    },
  }));
}

/** Name in model.safetensors of MoE layer `layer`'s stored selection bias. */
export function selectionBiasTensorName(layer: number): string {
  return `model.layers.${layer}.block_sparse_moe.gate.e_score_correction_bias`;
}

/** Llama-style names of a dense SwiGLU FFN's matrices. */
const DENSE_NAMES: Readonly<Record<string, string>> = { w1: 'gate_proj', w3: 'up_proj', w2: 'down_proj' };

/**
 * How each model variable (by its `namedVariables()` name) maps to model.safetensors, first match
 * wins: `$1`/`$2` are the regex groups. `plain` keeps the layout, `linear` stores [in, out] as
 * [out, in], `perExpert` splits [E, in, out] into E tensors [out, in].
 */
const NAME_RULES: readonly {
  readonly pattern: RegExp;
  readonly rank?: number;
  readonly map: (m: RegExpMatchArray, v: tf.Variable) => TensorSpec[];
}[] = [
  { pattern: /^embed_tokens$/, map: (_, v) => [plain('model.embed_tokens.weight', v)] },
  { pattern: /^norm$/, map: (_, v) => [plain('model.norm.weight', v)] },
  { pattern: /^lm_head$/, map: (_, v) => [linear('lm_head.weight', v)] },
  {
    pattern: /^layers\.(\d+)\.input_norm$/,
    map: (m, v) => [plain(`model.layers.${m[1]}.input_layernorm.weight`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.post_attention_norm$/,
    map: (m, v) => [plain(`model.layers.${m[1]}.post_attention_layernorm.weight`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.attn\.([qkvo])$/,
    map: (m, v) => [linear(`model.layers.${m[1]}.self_attn.${m[2]}_proj.weight`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.moe\.router\.weight$/,
    rank: 2,
    map: (m, v) => [linear(`model.layers.${m[1]}.block_sparse_moe.gate.weight`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.moe\.experts\.(w[123])$/,
    rank: 3,
    map: (m, v) => perExpert((e) => `model.layers.${m[1]}.block_sparse_moe.experts.${e}.${m[2]}.weight`, v),
  },
  {
    pattern: /^layers\.(\d+)\.moe\.shared\.(w[123])$/,
    rank: 2,
    map: (m, v) => [linear(`model.layers.${m[1]}.block_sparse_moe.shared_experts.${m[2]}.weight`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.moe\.shared\.gate$/,
    rank: 2,
    map: (m, v) => [linear(`model.layers.${m[1]}.block_sparse_moe.shared_experts_gate.weight`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.moe\.(.+)$/,
    map: (m, v) => [plain(`model.layers.${m[1]}.block_sparse_moe.${m[2]}`, v)],
  },
  {
    pattern: /^layers\.(\d+)\.mlp\.(w[123])$/,
    rank: 2,
    map: (m, v) => [linear(`model.layers.${m[1]}.mlp.${DENSE_NAMES[m[2]!]}.weight`, v)],
  },
  { pattern: /^layers\.(\d+)\.mlp\.(.+)$/, map: (m, v) => [plain(`model.layers.${m[1]}.mlp.${m[2]}`, v)] },
  { pattern: /^(.+)$/, map: (m, v) => [plain(`model.switchyard.${m[1]}`, v)] },
];

/** Every tensor of model.safetensors for a model, in file order. */
function tensorSpecs(model: MoETransformerLM): TensorSpec[] {
  const specs: TensorSpec[] = [];
  for (const [name, v] of model.namedVariables()) {
    for (const rule of NAME_RULES) {
      const m = name.match(rule.pattern);
      if (m && (rule.rank === undefined || rule.rank === v.rank)) {
        specs.push(...rule.map(m, v));
        break;
      }
    }
  }
  return specs;
}

/**
 * Names and shapes of the tensors model.safetensors holds for this model, in file order (stored
 * selection biases not included).
 *
 * When to use: to see how model variables map to the Hugging Face layout.
 *
 * @example
 * ```ts
 * checkpointTensorNames(model)[0]; // { name: 'model.embed_tokens.weight', shape: [V, D] }
 * ```
 */
export function checkpointTensorNames(model: MoETransformerLM): { name: string; shape: readonly number[] }[] {
  return tensorSpecs(model).map((s) => ({ name: s.name, shape: s.shape }));
}

function sha256(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

function ioError(what: string, e: unknown): SwitchyardError {
  return new SwitchyardError('IO_ERROR', `${what}: ${e instanceof Error ? e.message : String(e)}`, {
    cause: e,
  });
}

async function writeDurably(path: string, data: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Saves a checkpoint folder atomically: files are written and synced in a temporary sibling folder,
 * which is then renamed to `dir`. An existing checkpoint at `dir` is replaced; any other non-empty
 * folder there is refused.
 *
 * When to use: to save a trained model (and trainer state to resume) for loading here or in Python.
 *
 * @example
 * ```ts
 * await saveCheckpoint('runs/a/ckpt-1000', { model, tokenizer, trainerState: { step: 1000 } });
 * ```
 */
export async function saveCheckpoint(dir: string, options: SaveCheckpointOptions): Promise<void> {
  const { model, tokenizer, trainerState, extraTensors, extraFiles } = options;
  const fn = 'saveCheckpoint';
  if (!(model instanceof MoETransformerLM)) {
    throw new SwitchyardError('INVALID_ARGUMENT', `\`model\` passed to ${fn}() must be a MoETransformerLM`);
  }
  if (!(tokenizer instanceof BpeTokenizer)) {
    throw new SwitchyardError('INVALID_ARGUMENT', `\`tokenizer\` passed to ${fn}() must be a BpeTokenizer`);
  }
  if (tokenizer.vocabSize > model.config.vocabSize) {
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `\`tokenizer\` passed to ${fn}() has ${tokenizer.vocabSize} ids, more than the model's vocabSize (${model.config.vocabSize})`,
    );
  }
  const target = resolve(dir);
  const files: [string, Uint8Array | string][] = [];

  const weights = new Map<string, SafetensorsEntry>();
  for (const s of tensorSpecs(model)) weights.set(s.name, { shape: s.shape, data: s.read() });
  let hasBias = false;
  model.moeLayerIndices.forEach((layer, i) => {
    const bias = model.getSelectionBias(i);
    if (bias) {
      hasBias = true;
      weights.set(selectionBiasTensorName(layer), { shape: [bias.length], data: bias });
    }
  });
  const eos = tokenizer.specialTokens[END_OF_TEXT];
  const config = toHfConfig(model.config, { hasSelectionBias: hasBias, eosTokenId: eos ?? null });
  files.push([CHECKPOINT_FILES.config, `${JSON.stringify(config, null, 2)}\n`]);
  files.push([CHECKPOINT_FILES.weights, encodeSafetensors(weights, { format: 'pt' })]);
  files.push([CHECKPOINT_FILES.tokenizer, tokenizer.toString()]);
  if (trainerState !== undefined) {
    let text: string;
    try {
      text = JSON.stringify(trainerState, null, 2);
    } catch (e) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `\`trainerState\` passed to ${fn}() is not JSON-serialisable: ${String(e)}`,
      );
    }
    if (typeof text !== 'string' || !text.startsWith('{')) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `\`trainerState\` passed to ${fn}() must be a plain object`,
      );
    }
    files.push([CHECKPOINT_FILES.trainerState, `${text}\n`]);
  }
  if (extraTensors !== undefined) {
    const extra = new Map<string, SafetensorsEntry>();
    for (const [name, t] of Object.entries(extraTensors)) {
      if (t instanceof tf.Tensor) {
        if (t.dtype !== 'float32' && t.dtype !== 'int32') {
          throw new SwitchyardError(
            'DTYPE_MISMATCH',
            `extra tensor \`${name}\` passed to ${fn}() must be float32 or int32, got ${t.dtype}`,
          );
        }
        extra.set(name, { shape: t.shape, data: t.dataSync() as Float32Array | Int32Array });
      } else if (t instanceof Float32Array || t instanceof Int32Array) {
        extra.set(name, { shape: [t.length], data: t });
      } else {
        throw new SwitchyardError(
          'INVALID_ARGUMENT',
          `extra tensor \`${name}\` passed to ${fn}() must be a tf.Tensor, Float32Array or Int32Array`,
        );
      }
    }
    files.push([CHECKPOINT_FILES.trainerTensors, encodeSafetensors(extra)]);
  }
  const standard = new Set<string>(Object.values(CHECKPOINT_FILES));
  for (const [name, data] of Object.entries(extraFiles ?? {})) {
    if (standard.has(name) || !/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(name)) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `extra file \`${name}\` passed to ${fn}() must have a plain file name other than the standard ones (${[...standard].join(', ')})`,
      );
    }
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
      throw new SwitchyardError(
        'INVALID_ARGUMENT',
        `extra file \`${name}\` passed to ${fn}() must be a string or a Uint8Array`,
      );
    }
    files.push([name, data]);
  }
  const manifest: CheckpointManifest = {
    format: 'switchyard-checkpoint',
    version: 1,
    files: Object.fromEntries(
      files.map(([name, data]) => [
        name,
        { bytes: typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength, sha256: sha256(data) },
      ]),
    ),
  };
  files.push([CHECKPOINT_FILES.manifest, `${JSON.stringify(manifest, null, 2)}\n`]);

  if (existsSync(target)) {
    const entries = await readdir(target).catch((e) => {
      throw ioError(`${fn}() cannot read ${target}`, e);
    });
    if (entries.length > 0 && !entries.includes(CHECKPOINT_FILES.manifest)) {
      throw new SwitchyardError(
        'IO_ERROR',
        `${fn}() refuses to replace ${target}: it is a non-empty folder without ${CHECKPOINT_FILES.manifest} (not a checkpoint)`,
      );
    }
  }
  const parent = dirname(target);
  let tmp: string | undefined;
  try {
    await mkdir(parent, { recursive: true });
    tmp = await mkdtemp(join(parent, `.${basename(target)}.tmp-`));
    await chmod(tmp, 0o755); // mkdtemp creates 0700
    for (const [name, data] of files) await writeDurably(join(tmp, name), data);
    if (existsSync(target)) {
      const old = `${tmp}.old`;
      await rename(target, old);
      await rename(tmp, target);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(tmp, target);
    }
    tmp = undefined;
    const dh = await open(parent, 'r');
    try {
      await dh.sync();
    } catch {
      // Directory fsync is not supported on every platform; the rename itself is atomic.
    } finally {
      await dh.close();
    }
  } catch (e) {
    if (tmp) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e instanceof SwitchyardError ? e : ioError(`${fn}() could not write ${target}`, e);
  }
}

function invalid(dir: string, msg: string, cause?: unknown): SwitchyardError {
  return new SwitchyardError(
    'CHECKPOINT_INVALID',
    `checkpoint ${dir}: ${msg}`,
    cause === undefined ? {} : { cause },
  );
}

/** Reads every file listed in the manifest, checking size and sha256. */
async function readVerified(dir: string): Promise<Map<string, Buffer>> {
  let manifestText: string;
  try {
    manifestText = await readFile(join(dir, CHECKPOINT_FILES.manifest), 'utf8');
  } catch (e) {
    throw invalid(
      dir,
      `cannot read ${CHECKPOINT_FILES.manifest} (not a checkpoint folder, or an unfinished write)`,
      e,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(manifestText);
  } catch (e) {
    throw invalid(dir, `${CHECKPOINT_FILES.manifest} is not valid JSON (${String(e)})`, e);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success)
    throw invalid(dir, `${CHECKPOINT_FILES.manifest} is malformed:\n${formatZodError(parsed.error, raw)}`);
  const listed = parsed.data.files;
  for (const required of [CHECKPOINT_FILES.config, CHECKPOINT_FILES.weights, CHECKPOINT_FILES.tokenizer]) {
    if (!(required in listed)) throw invalid(dir, `${CHECKPOINT_FILES.manifest} does not list ${required}`);
  }
  const out = new Map<string, Buffer>();
  for (const [name, want] of Object.entries(listed)) {
    if (name.includes('/') || name.includes('\\') || name.startsWith('.')) {
      throw invalid(dir, `${CHECKPOINT_FILES.manifest} lists an invalid file name ${JSON.stringify(name)}`);
    }
    const path = join(dir, name);
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (e) {
      throw invalid(dir, `${name} is missing`, e);
    }
    if (size !== want.bytes) {
      throw invalid(
        dir,
        size < want.bytes
          ? `${name} is truncated: the manifest records ${want.bytes} bytes, the file has ${size}`
          : `${name} has ${size} bytes, the manifest records ${want.bytes} (the file was modified)`,
      );
    }
    const data = await readFile(path);
    const got = sha256(data);
    if (got !== want.sha256) {
      throw invalid(dir, `${name} is corrupted: its sha256 is ${got}, the manifest records ${want.sha256}`);
    }
    out.set(name, data);
  }
  return out;
}

function parseJson(dir: string, name: string, data: Buffer): unknown {
  try {
    return JSON.parse(data.toString('utf8'));
  } catch (e) {
    throw invalid(dir, `${name} is not valid JSON (${String(e)})`, e);
  }
}

/**
 * Loads a checkpoint written by {@link saveCheckpoint}: verifies every file's size and sha256
 * against manifest.json, validates config.json, and checks that model.safetensors holds exactly
 * the tensors the config implies, with the right shapes (the first mismatch is reported by name).
 *
 * When to use: to resume training, evaluate, or serve a saved model.
 *
 * @example
 * ```ts
 * const { model, tokenizer, trainerState } = await loadCheckpoint('runs/a/ckpt-1000');
 * ```
 */
export async function loadCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  const root = resolve(dir);
  const files = await readVerified(root);
  let config: ModelConfig;
  try {
    config = fromHfConfig(
      parseJson(root, CHECKPOINT_FILES.config, files.get(CHECKPOINT_FILES.config)!),
      `${root}/${CHECKPOINT_FILES.config}`,
    );
  } catch (e) {
    if (e instanceof SwitchyardError && e.code === 'CONFIG_INVALID') throw invalid(root, e.message, e);
    throw e;
  }
  let tokenizer: BpeTokenizer;
  try {
    tokenizer = BpeTokenizer.load(files.get(CHECKPOINT_FILES.tokenizer)!.toString('utf8'));
  } catch (e) {
    throw invalid(root, `${CHECKPOINT_FILES.tokenizer}: ${e instanceof Error ? e.message : String(e)}`, e);
  }
  const weights = decodeSafetensors(
    files.get(CHECKPOINT_FILES.weights)!,
    `checkpoint ${root}: ${CHECKPOINT_FILES.weights}`,
  );
  const model = new MoETransformerLM(config, new Rng(0));
  try {
    const seen = new Set<string>();
    const check = (name: string, shape: readonly number[]) => {
      const t = weights.tensors.get(name);
      if (!t)
        throw invalid(
          root,
          `${CHECKPOINT_FILES.weights} lacks tensor \`${name}\` (shape [${shape.join(', ')}]) that config.json implies`,
        );
      if (t.dtype !== 'F32' && t.dtype !== 'F16' && t.dtype !== 'BF16') {
        throw invalid(
          root,
          `tensor \`${name}\` in ${CHECKPOINT_FILES.weights} has dtype ${t.dtype}, expected a float type`,
        );
      }
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw invalid(
          root,
          `tensor \`${name}\` in ${CHECKPOINT_FILES.weights} has shape [${t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`,
        );
      }
      seen.add(name);
      return t.data as Float32Array;
    };
    for (const spec of tensorSpecs(model)) spec.write(check(spec.name, spec.shape));
    model.moeLayerIndices.forEach((layer, i) => {
      const name = selectionBiasTensorName(layer);
      if (weights.tensors.has(name))
        model.setSelectionBias(i, Float32Array.from(check(name, [config.moe.experts.numExperts])));
    });
    for (const name of weights.tensors.keys()) {
      if (!seen.has(name))
        throw invalid(
          root,
          `${CHECKPOINT_FILES.weights} holds tensor \`${name}\`, which config.json does not imply`,
        );
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  let trainerState: Record<string, unknown> | undefined;
  const stateBytes = files.get(CHECKPOINT_FILES.trainerState);
  if (stateBytes) {
    const s = parseJson(root, CHECKPOINT_FILES.trainerState, stateBytes);
    if (s === null || typeof s !== 'object' || Array.isArray(s)) {
      model.dispose();
      throw invalid(root, `${CHECKPOINT_FILES.trainerState} must hold a JSON object`);
    }
    trainerState = s as Record<string, unknown>;
  }
  let extraTensors: Record<string, tf.Tensor> | undefined;
  const extraBytes = files.get(CHECKPOINT_FILES.trainerTensors);
  if (extraBytes) {
    let extra: ReturnType<typeof decodeSafetensors>;
    try {
      extra = decodeSafetensors(extraBytes, `checkpoint ${root}: ${CHECKPOINT_FILES.trainerTensors}`);
    } catch (e) {
      model.dispose();
      throw e;
    }
    extraTensors = {};
    for (const [name, t] of extra.tensors) {
      extraTensors[name] =
        t.data instanceof Int32Array
          ? tf.tensor(t.data, [...t.shape], 'int32')
          : tf.tensor(Float32Array.from(t.data as ArrayLike<number>), [...t.shape], 'float32');
    }
  }
  const standard = new Set<string>(Object.values(CHECKPOINT_FILES));
  const others = [...files].filter(([name]) => !standard.has(name));
  return {
    model,
    tokenizer,
    config,
    ...(trainerState ? { trainerState } : {}),
    ...(extraTensors ? { extraTensors } : {}),
    ...(others.length > 0
      ? { extraFiles: Object.fromEntries(others.map(([name, data]) => [name, new Uint8Array(data)])) }
      : {}),
  };
}
