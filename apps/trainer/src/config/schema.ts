/**
 * The trainer's configuration: one zod schema with a default and a description for every option.
 * Config files, presets and `--set key=value` are all checked against it; unknown keys are errors.
 * The defaults are the `small` preset's values.
 */
import { DEFAULT_LAMBDA } from '@switchyard/compress';
import { z } from 'zod';

const posInt = () => z.int().min(1);
const nonNegInt = () => z.int().min(0);
const unit = () => z.number().min(0).max(1);

/** Balancing methods the trainer can apply to every MoE layer. */
export const BALANCE_METHODS = [
  'none',
  'micro',
  'global',
  'shuffled',
  'global+local',
  'sequence',
  'loss-free',
] as const;
/** One of {@link BALANCE_METHODS}. */
export type BalanceMethod = (typeof BALANCE_METHODS)[number];

const dataSchema = z
  .strictObject({
    files: z
      .array(z.string().min(1))
      .default([])
      .describe('text or JSONL files to train on; empty: the built-in corpus named by data.corpus'),
    corpus: z
      .enum(['brown', 'domains'])
      .default('brown')
      .describe(
        'built-in corpus when data.files is empty: brown (15 genres of English), or domains (prose, code, arithmetic, an English cipher)',
      ),
    format: z
      .enum(['auto', 'text', 'jsonl'])
      .default('auto')
      .describe('how data files are read; auto: .jsonl/.ndjson as JSONL, others as text'),
    genres: z.array(z.string().min(1)).default([]).describe('Brown corpus genres to keep; empty: all 15'),
    maxTextsPerDomain: nonNegInt().default(0).describe('keep at most this many texts per domain; 0: all'),
    valFraction: z
      .number()
      .min(0)
      .max(0.5)
      .default(0.1)
      .describe("share of each domain's texts held out for validation"),
    splitSeed: nonNegInt()
      .default(1234)
      .describe(
        "seed of the train/validation split and of the tokenizer's training sample; fixed apart from seed, so runs with different seeds share their validation set",
      ),
    batching: z
      .enum(['mixed', 'domain'])
      .default('mixed')
      .describe('mixed micro-batches, or domain: each micro-batch drawn from one domain'),
  })
  .prefault({});

const tokenizerSchema = z
  .strictObject({
    vocabSize: z
      .int()
      .min(260)
      .max(65536)
      .default(2048)
      .describe("BPE vocabulary size (sets the model's vocabSize)"),
    path: z.string().default('').describe('an existing tokenizer.json to use instead of training one'),
    trainChars: nonNegInt()
      .default(2_000_000)
      .describe('characters of training text the tokenizer learns from; 0: all'),
  })
  .prefault({});

const routerSchema = z
  .strictObject({
    type: z
      .enum(['topk', 'switch', 'gshard', 'sigmoid', 'expert-choice', 'hierarchical', 'balanced'])
      .optional()
      .describe('router kind (a different kind replaces the preset router and its settings)'),
    k: posInt().optional().describe('experts per token K'),
    capacityFactor: z.number().min(0).optional().describe('training capacity factor; 0: dropless'),
    evalCapacityFactor: z.number().min(0).optional().describe('evaluation capacity factor; 0: dropless'),
    dropPolicy: z.enum(['position', 'probs']).optional().describe('which assignments survive an overflow'),
    evalRouting: z
      .enum(['batch', 'causal'])
      .optional()
      .describe(
        "evaluation routing: 'batch' as in training; 'causal' routes each token by itself (expert choice: its top round(c) experts)",
      ),
    jitterEps: z
      .number()
      .min(0)
      .max(0.999)
      .optional()
      .describe('multiplicative router input jitter in training'),
    randomRoutingWarmup: unit().optional().describe('fraction of steps routed uniformly at random first'),
    normTopK: z.boolean().optional().describe('renormalise the K selected scores to sum to 1'),
    routeScale: z.number().positive().optional().describe('factor on the combine weights (sigmoid router)'),
    init: z.enum(['normal', 'switch', 'zeros']).optional().describe('router weight initialisation'),
    decideOn: z
      .enum(['host', 'device'])
      .optional()
      .describe(
        'where routing decides: host (one read per layer; fastest on wasm and cpu) or device (no read: for GPU backends; topk, switch, gshard, sigmoid)',
      ),
  })
  .prefault({});

const expertsSchema = z
  .strictObject({
    numExperts: posInt().optional().describe('routed experts E per MoE layer'),
    dFF: posInt().optional().describe('hidden width of each expert'),
    activation: z.enum(['swiglu', 'gelu', 'relu']).optional().describe('expert activation'),
  })
  .prefault({});

const moeSchema = z
  .strictObject({
    every: posInt().optional().describe('an MoE layer every this many blocks (after the dense ones)'),
    firstDense: nonNegInt().optional().describe('leading dense blocks'),
    router: routerSchema,
    experts: expertsSchema,
  })
  .prefault({});

/** Model presets of @switchyard/model the trainer can start from. */
export const MODEL_PRESETS = ['tiny', 'small'] as const;

const modelSchema = z
  .strictObject({
    preset: z.enum(MODEL_PRESETS).default('small').describe('@switchyard/model preset the model starts from'),
    dModel: posInt().optional().describe('model width'),
    numLayers: posInt().optional().describe('transformer blocks'),
    numHeads: posInt().optional().describe('attention heads'),
    numKvHeads: posInt().optional().describe('key/value heads (grouped-query attention)'),
    dFF: posInt().optional().describe('hidden width of dense (non-MoE) feed-forward blocks'),
    initStd: z.number().positive().optional().describe('standard deviation of the initialisation'),
    moe: moeSchema,
  })
  .prefault({});

const trainSchema = z
  .strictObject({
    steps: posInt().default(250).describe('optimizer steps'),
    seqLen: posInt().default(128).describe('tokens per sequence'),
    microBatchSize: posInt().default(8).describe('sequences per micro-batch'),
    gradAccum: posInt().default(1).describe('micro-batches per optimizer step (gradient accumulation)'),
    lr: z.number().positive().max(1).default(3e-3).describe('peak learning rate (AdamW)'),
    minLrRatio: unit().default(0.1).describe('final learning rate as a fraction of lr (cosine decay)'),
    warmupSteps: nonNegInt().default(25).describe('linear warm-up steps'),
    weightDecay: z
      .number()
      .min(0)
      .max(1)
      .default(0.1)
      .describe('decoupled weight decay on matrices and embeddings'),
    beta1: z.number().min(0).lt(1).default(0.9).describe('AdamW beta1'),
    beta2: z.number().min(0).lt(1).default(0.95).describe('AdamW beta2'),
    eps: z.number().positive().default(1e-8).describe('AdamW epsilon'),
    clipNorm: z.number().min(0).default(1).describe('clip gradients to this global L2 norm; 0: off'),
    optimizerOn: z
      .enum(['auto', 'host', 'backend'])
      .default('auto')
      .describe(
        'where AdamW runs: host (one JavaScript pass, sharded over data-parallel ranks: 1/R of the moments per rank), backend (tensor ops on every rank), auto (backend)',
      ),
  })
  .prefault({});

const balanceSchema = z
  .strictObject({
    method: z
      .enum(BALANCE_METHODS)
      .default('micro')
      .describe(
        'balancing: none, micro, global, shuffled, global+local, sequence, or loss-free (bias controller)',
      ),
    alpha: z
      .number()
      .min(0)
      .default(1e-2)
      .describe('aux loss coefficient (micro, global, shuffled, global+local, sequence)'),
    localRatio: z
      .number()
      .min(0)
      .default(0.01)
      .describe('global+local: micro-batch loss weight as a fraction of alpha'),
    globalPool: z
      .enum(['cumulative', 'step'])
      .default('cumulative')
      .describe(
        "global, global+local: f of micro-batch m from the counts of micro-batches 1..m (cumulative, Megatron's buffer) or of the whole optimizer step (step: a routing-only forward pass over the step's micro-batches first)",
      ),
    biasUpdateRate: z.number().min(0).default(1e-3).describe('loss-free: bias step u per optimizer step'),
    zLoss: z.number().min(0).default(0).describe('router z-loss coefficient; 0: off'),
  })
  .prefault({});

const evalSchema = z
  .strictObject({
    every: nonNegInt()
      .default(125)
      .describe('evaluate every this many steps (and at the end); 0: only at the end'),
    tokensPerDomain: posInt()
      .default(2048)
      .describe('validation tokens scored per domain at each evaluation'),
    batchSize: posInt().default(16).describe('sequences per evaluation batch'),
    routingVariants: z
      .record(
        z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'a name of letters, digits, ".", "_" or "-"'),
        z.strictObject({
          evalCapacityFactor: z
            .number()
            .min(0)
            .optional()
            .describe('evaluation capacity factor; 0: dropless'),
          evalRouting: z.enum(['batch', 'causal']).optional().describe('evaluation routing'),
        }),
      )
      .default({})
      .describe(
        'the final model is also scored under each of these router settings, by name (e.g. {dropless: {evalCapacityFactor: 0}}); eval.jsonl records them with the final evaluation',
      ),
  })
  .prefault({});

const checkpointSchema = z
  .strictObject({
    every: nonNegInt()
      .default(0)
      .describe('save a checkpoint every this many steps (and at the end); 0: only at the end'),
    keep: posInt().default(2).describe('periodic checkpoints kept (the final one always stays)'),
  })
  .prefault({});

const logSchema = z
  .strictObject({
    progress: z
      .enum(['auto', 'bar', 'lines', 'quiet'])
      .default('auto')
      .describe('auto: a live bar on a terminal, plain lines otherwise'),
    every: posInt().default(10).describe('in lines mode, one line every this many steps'),
    plots: z.boolean().default(true).describe('render plots/ and report.md at the end'),
    samplePrompt: z
      .string()
      .min(1)
      .default('The')
      .describe("prompt of the report's text sample from the final model"),
    sampleTokens: nonNegInt()
      .default(48)
      .describe(
        "new tokens in the report's sample (temperature 0.8, top-k 40, the run's seed); 0: no sample",
      ),
  })
  .prefault({});

/** Pipeline schedules the trainer runs (`zb` is ZB-H1, the zero-bubble schedule of Qi et al.). */
export const PIPELINE_SCHEDULES = ['gpipe', '1f1b', 'interleaved', 'zb', 'dualpipe', 'dualpipev'] as const;
/** One of {@link PIPELINE_SCHEDULES}. */
export type PipelineScheduleName = (typeof PIPELINE_SCHEDULES)[number];

const parallelSchema = z
  .strictObject({
    pipeline: posInt()
      .default(1)
      .describe(
        'pipeline parallelism: ranks per pipeline P (1: off); R ranks run R / P data-parallel replicas of the pipeline',
      ),
    schedule: z
      .enum(PIPELINE_SCHEDULES)
      .default('1f1b')
      .describe(
        'pipeline schedule: gpipe, 1f1b, interleaved, zb (ZB-H1), dualpipe or dualpipev; train.gradAccum is its micro-batches',
      ),
    virtualStages: z
      .int()
      .min(2)
      .default(2)
      .describe('interleaved schedule: model stages per rank (v); the model is cut into v * P stages'),
    expertParallel: posInt()
      .default(1)
      .describe(
        'expert parallelism: ranks sharing one copy of the experts (a divisor of the ranks; groups of consecutive ranks, data parallel across groups); 1: every rank holds every expert',
      ),
    redundantExperts: nonNegInt()
      .default(0)
      .describe(
        'with expertParallel > 1: extra expert slots per MoE layer holding copies of the busiest experts, placed by EPLB (numExperts + this must be a multiple of expertParallel)',
      ),
    rebalanceEvery: nonNegInt()
      .default(0)
      .describe(
        'with expertParallel > 1: re-place experts and copies by EPLB from the expert loads of the last this many steps, moving weights and AdamW moments; 0: never',
      ),
  })
  .prefault({});

const debugSchema = z
  .strictObject({
    nanAtStep: nonNegInt()
      .default(0)
      .describe(
        'testing: write a NaN into a weight of block debug.nanLayer before this step (1-based); 0: off',
      ),
    nanLayer: nonNegInt()
      .default(0)
      .describe('testing: the block whose attention weight debug.nanAtStep poisons'),
  })
  .prefault({});

const compressSchema = z
  .strictObject({
    clusterEvery: nonNegInt()
      .default(0)
      .describe(
        'cluster the experts of every MoE layer every this many steps and log the Jaccard stability of the groups in metrics.jsonl; 0: off',
      ),
    groups: posInt().default(2).describe('expert groups G per MoE layer for online clustering'),
    lambda: unit()
      .default(DEFAULT_LAMBDA)
      .describe('weight of structural similarity in the fused similarity (1 - lambda: functional)'),
    equalSize: z.boolean().default(true).describe('cluster into groups of E / G experts each'),
    rank: nonNegInt()
      .default(0)
      .describe(
        'train with compressed experts from the start: compress.groups bases and rank-r residuals per expert, random init; 0: full experts',
      ),
  })
  .prefault({});

/** The zod schema of a trainer configuration. */
export const trainConfigSchema = z.strictObject({
  description: z.string().default('').describe('one line saying what this configuration is for'),
  name: z
    .string()
    .regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, dot, dash or underscore')
    .default('small')
    .describe('run name (the default output folder is runs/<name>-<time>)'),
  out: z.string().default('').describe('output folder; empty: runs/<name>-<time>'),
  seed: z.int().min(0).default(1234).describe('seed of data order, split, initialisation and routing noise'),
  backend: z.enum(['auto', 'tensorflow', 'wasm', 'cpu']).default('auto').describe('TensorFlow.js backend'),
  data: dataSchema,
  tokenizer: tokenizerSchema,
  model: modelSchema,
  train: trainSchema,
  balance: balanceSchema,
  eval: evalSchema,
  checkpoint: checkpointSchema,
  log: logSchema,
  parallel: parallelSchema,
  compress: compressSchema,
  debug: debugSchema,
});

/** A complete, validated trainer configuration. */
export type TrainConfig = z.output<typeof trainConfigSchema>;
/** A partial configuration as written in files and presets. */
export type TrainConfigInput = z.input<typeof trainConfigSchema>;
