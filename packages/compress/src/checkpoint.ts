/**
 * Compressed checkpoints: a standard checkpoint folder (model.safetensors holds every expert in
 * full, materialised as `S_g + U_i V_i^T`, so every reader loads it and computes the same function)
 * plus two files listed in its manifest: `compression.json` (rank, groups, how they were made) and
 * `compression.safetensors` (the shared bases and low-rank factors, PyTorch [out, in] orientation,
 * LoRA-style names), from which {@link loadCompressedCheckpoint} rebuilds the compressed banks.
 *
 * Shape letters: E experts, G groups, R rank, I = d_in, O = d_out of a matrix.
 */
import { RoutedExperts } from '@switchyard/experts';
import {
  type BpeTokenizer,
  decodeSafetensors,
  encodeSafetensors,
  type LoadedCheckpoint,
  loadCheckpoint,
  type MoETransformerLM,
  type SafetensorsEntry,
  type SaveCheckpointOptions,
  saveCheckpoint,
} from '@switchyard/model';
import { invalidArgument, SwitchyardError, tf } from '@switchyard/tensor';
import { CompressedExperts, type CompressedExpertsOptions } from './bank';
import { groupingFromAssignment } from './cluster';
import { layerFactors, type MatrixFactors, type MatrixName, matrixShapes } from './factorize';

/** File names a compressed checkpoint adds to a checkpoint folder. */
export const COMPRESSION_FILES = {
  record: 'compression.json',
  tensors: 'compression.safetensors',
} as const;

/** The compression.json layout. */
export interface CompressionRecord {
  readonly format: 'switchyard-compression';
  readonly version: 1;
  /** R: rank of every residual. */
  readonly rank: number;
  /** Per MoE layer: its block index, the group of each expert, and (after two-level renumbering) the original index of each expert. */
  readonly layers: readonly {
    readonly layer: number;
    readonly groupOf: readonly number[];
    readonly originalExpert?: readonly number[];
  }[];
  /** How the compression was made (groups, lambda, init, two-level routing, ...), as the writer reports it. */
  readonly made: Readonly<Record<string, unknown>>;
}

/** Names in compression.safetensors. */
export const compressionTensorNames = {
  /** Shape `[E]`, int32: the group of each expert. */
  group: (layer: number) => `model.layers.${layer}.block_sparse_moe.expert_group`,
  /** Shape `[O, I]`: the shared basis S_g^T of group g. */
  shared: (layer: number, g: number, m: MatrixName) =>
    `model.layers.${layer}.block_sparse_moe.groups.${g}.${m}.weight`,
  /** Shape `[R, I]`: U_i^T of expert e. */
  loraA: (layer: number, e: number, m: MatrixName) =>
    `model.layers.${layer}.block_sparse_moe.experts.${e}.${m}.lora_A`,
  /** Shape `[O, R]`: V_i of expert e (W_i^T = S_g^T + lora_B lora_A). */
  loraB: (layer: number, e: number, m: MatrixName) =>
    `model.layers.${layer}.block_sparse_moe.experts.${e}.${m}.lora_B`,
} as const;

/** Block b of a [n * rows, cols] row-major array, transposed to [cols, rows]. */
function transposedBlock(src: Float32Array, b: number, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  const base = b * rows * cols;
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[base + r * cols + c]!;
  return out;
}

/** Options of {@link saveCompressedCheckpoint}. */
export interface SaveCompressedOptions {
  /** A model whose MoE layers all hold {@link CompressedExperts} banks. */
  readonly model: MoETransformerLM;
  readonly tokenizer: BpeTokenizer;
  /** trainer_state.json, as saveCheckpoint takes it. */
  readonly trainerState?: object;
  /** trainer_state.safetensors (optimizer moments, ...), as saveCheckpoint takes them. */
  readonly extraTensors?: SaveCheckpointOptions['extraTensors'];
  /** Per MoE layer, the original index of each expert (from routeByGroup), recorded in compression.json. */
  readonly originalExperts?: readonly (readonly number[])[];
  /** Facts about how the compression was made, recorded in compression.json. */
  readonly made?: Readonly<Record<string, unknown>>;
}

function compressedBanks(fn: string, model: MoETransformerLM): CompressedExperts[] {
  const layers = model.moeLayers();
  if (layers.length === 0)
    throw new SwitchyardError(
      'INVALID_ARGUMENT',
      `\`model\` passed to ${fn}() has no MoE layers: nothing is compressed`,
    );
  return layers.map((l, i) => {
    if (!(l.experts instanceof CompressedExperts))
      throw invalidArgument(
        fn,
        `model (MoE layer in block ${model.moeLayerIndices[i]})`,
        'CompressedExperts banks in every MoE layer',
        l.experts.constructor.name,
      );
    return l.experts;
  });
}

/**
 * Saves a model with compressed experts as a checkpoint: model.safetensors with every expert
 * materialised (what Hugging Face tools and every loader read), plus compression.json and
 * compression.safetensors with the groups, bases and factors. The model is unchanged afterwards.
 *
 * When to use: after {@link compressModel} (and fine-tuning), to keep or ship the compressed model.
 *
 * @example
 * ```ts
 * await saveCompressedCheckpoint('runs/a/compressed', { model, tokenizer, made: { groups: 2 } });
 * ```
 */
export async function saveCompressedCheckpoint(dir: string, options: SaveCompressedOptions): Promise<void> {
  const fn = 'saveCompressedCheckpoint';
  const { model, tokenizer } = options;
  const banks = compressedBanks(fn, model);
  const tensors = new Map<string, SafetensorsEntry>();
  const record: CompressionRecord = {
    format: 'switchyard-compression',
    version: 1,
    rank: banks[0]!.rank,
    layers: banks.map((bank, i) => ({
      layer: model.moeLayerIndices[i]!,
      groupOf: [...bank.grouping.groupOf],
      ...(options.originalExperts?.[i] ? { originalExpert: [...options.originalExperts[i]!] } : {}),
    })),
    made: options.made ?? {},
  };
  banks.forEach((bank, i) => {
    const L = model.moeLayerIndices[i]!;
    const f = bank.factors();
    const R = f.rank;
    tensors.set(compressionTensorNames.group(L), {
      shape: [f.numExperts],
      data: Int32Array.from(f.grouping.groupOf),
    });
    for (const [m, I, O] of matrixShapes(f.activation, f.dModel, f.dFF)) {
      const mf = f.matrices[m]!;
      for (let g = 0; g < f.grouping.numGroups; g++)
        tensors.set(compressionTensorNames.shared(L, g, m), {
          shape: [O, I],
          data: transposedBlock(mf.sharedGIO, g, I, O),
        });
      for (let e = 0; e < f.numExperts; e++) {
        tensors.set(compressionTensorNames.loraA(L, e, m), {
          shape: [R, I],
          data: transposedBlock(mf.uEIR, e, I, R),
        });
        tensors.set(compressionTensorNames.loraB(L, e, m), {
          shape: [O, R],
          data: transposedBlock(mf.vtERO, e, R, O),
        });
      }
    }
  });
  // Full experts for model.safetensors: swap materialised banks in through the seam, then back.
  const layers = model.moeLayers();
  const swapped: RoutedExperts[] = [];
  try {
    for (const [i, layer] of layers.entries()) {
      const bank = banks[i]!;
      const w = bank.materializedWeights();
      try {
        const full = new RoutedExperts(
          { numExperts: bank.numExperts, dModel: bank.dModel, dFF: bank.dFF, activation: bank.activation },
          w,
        );
        layer.setExperts(full);
        swapped.push(full);
      } finally {
        tf.dispose(Object.values(w));
      }
    }
    await saveCheckpoint(dir, {
      model,
      tokenizer,
      ...(options.trainerState !== undefined ? { trainerState: options.trainerState } : {}),
      ...(options.extraTensors !== undefined ? { extraTensors: options.extraTensors } : {}),
      extraFiles: {
        [COMPRESSION_FILES.record]: `${JSON.stringify(record, null, 2)}\n`,
        [COMPRESSION_FILES.tensors]: encodeSafetensors(tensors),
      },
    });
  } finally {
    swapped.forEach((full, i) => {
      layers[i]!.setExperts(banks[i]!);
      full.dispose();
    });
  }
}

/** What {@link loadCompressedCheckpoint} returns: a loaded checkpoint whose model holds compressed banks. */
export interface LoadedCompressedCheckpoint extends LoadedCheckpoint {
  readonly compression: CompressionRecord;
}

function invalid(dir: string, msg: string): SwitchyardError {
  return new SwitchyardError('CHECKPOINT_INVALID', `checkpoint ${dir}: ${msg}`);
}

function parseRecord(dir: string, bytes: Uint8Array | undefined): CompressionRecord {
  if (!bytes)
    throw invalid(
      dir,
      `${COMPRESSION_FILES.record} is missing: not a compressed checkpoint (saveCompressedCheckpoint writes one)`,
    );
  let r: CompressionRecord;
  try {
    r = JSON.parse(new TextDecoder().decode(bytes)) as CompressionRecord;
  } catch (e) {
    throw invalid(dir, `${COMPRESSION_FILES.record} is not valid JSON (${String(e)})`);
  }
  if (r?.format !== 'switchyard-compression' || r.version !== 1)
    throw invalid(dir, `${COMPRESSION_FILES.record} must have format "switchyard-compression" and version 1`);
  if (!Number.isInteger(r.rank) || r.rank < 1 || !Array.isArray(r.layers))
    throw invalid(dir, `${COMPRESSION_FILES.record} must hold an integer rank >= 1 and a list of layers`);
  return r;
}

/**
 * Loads a checkpoint written by {@link saveCompressedCheckpoint} and installs a
 * {@link CompressedExperts} bank (built from compression.safetensors, optionally offloaded) in every
 * MoE layer. Every file is verified against the manifest first; a missing or misshapen factor is
 * reported by name.
 *
 * When to use: to evaluate, fine-tune or serve a compressed model with its factored experts (any
 * plain checkpoint loader reads the same folder with the experts materialised).
 *
 * @example
 * ```ts
 * const { model, compression } = await loadCompressedCheckpoint(dir, { offload: { residentGroups: 1 } });
 * ```
 */
export async function loadCompressedCheckpoint(
  dir: string,
  options: CompressedExpertsOptions = {},
): Promise<LoadedCompressedCheckpoint> {
  const loaded = await loadCheckpoint(dir);
  const { model } = loaded;
  try {
    const record = parseRecord(dir, loaded.extraFiles?.[COMPRESSION_FILES.record]);
    const bytes = loaded.extraFiles?.[COMPRESSION_FILES.tensors];
    if (!bytes) throw invalid(dir, `${COMPRESSION_FILES.tensors} is missing`);
    const file = decodeSafetensors(bytes, `checkpoint ${dir}: ${COMPRESSION_FILES.tensors}`);
    const layers = model.moeLayers();
    if (record.layers.length !== layers.length)
      throw invalid(
        dir,
        `${COMPRESSION_FILES.record} lists ${record.layers.length} MoE layers, the model has ${layers.length}`,
      );
    const R = record.rank;
    const banks: CompressedExperts[] = [];
    const bankOf = (i: number): CompressedExperts => {
      const layer = layers[i]!;
      const L = model.moeLayerIndices[i]!;
      const { numExperts: E, dModel: D, dFF: F, activation } = layer.experts;
      const read = (name: string, shape: readonly number[]): Float32Array | Int32Array => {
        const t = file.tensors.get(name);
        if (!t)
          throw invalid(
            dir,
            `${COMPRESSION_FILES.tensors} lacks tensor \`${name}\` (shape [${shape.join(', ')}])`,
          );
        if (t.shape.length !== shape.length || t.shape.some((d, k) => d !== shape[k]))
          throw invalid(
            dir,
            `tensor \`${name}\` in ${COMPRESSION_FILES.tensors} has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`,
          );
        return t.data instanceof Int32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>);
      };
      const grouping = groupingFromAssignment(Array.from(read(compressionTensorNames.group(L), [E])));
      const G = grouping.numGroups;
      const matrices: Partial<Record<MatrixName, MatrixFactors>> = {};
      for (const [m, I, O] of matrixShapes(activation, D, F)) {
        const sharedGIO = new Float32Array(G * I * O);
        const uEIR = new Float32Array(E * I * R);
        const vtERO = new Float32Array(E * R * O);
        for (let g = 0; g < G; g++)
          sharedGIO.set(
            transposedBlock(read(compressionTensorNames.shared(L, g, m), [O, I]) as Float32Array, 0, O, I),
            g * I * O,
          );
        for (let e = 0; e < E; e++) {
          uEIR.set(
            transposedBlock(read(compressionTensorNames.loraA(L, e, m), [R, I]) as Float32Array, 0, R, I),
            e * I * R,
          );
          vtERO.set(
            transposedBlock(read(compressionTensorNames.loraB(L, e, m), [O, R]) as Float32Array, 0, O, R),
            e * R * O,
          );
        }
        matrices[m] = { dIn: I, dOut: O, sharedGIO, uEIR, vtERO };
      }
      return new CompressedExperts(layerFactors(layer.experts, R, grouping, matrices), options);
    };
    try {
      for (let i = 0; i < layers.length; i++) banks.push(bankOf(i));
    } catch (e) {
      for (const b of banks) b.dispose();
      throw e;
    }
    layers.forEach((layer, i) => {
      layer.setExperts(banks[i]!).dispose();
    });
    return { ...loaded, compression: record };
  } catch (e) {
    model.dispose();
    tf.dispose(Object.values(loaded.extraTensors ?? {}));
    throw e;
  }
}
