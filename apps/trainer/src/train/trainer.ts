/**
 * The training job: data, model, AdamW with warm-up and cosine decay, gradient accumulation and
 * clipping, the configured balancing method, periodic evaluation and checkpoints, a guard against
 * non-finite losses, exact resumption, and the run's metrics, plots and report.
 *
 * Under data parallelism (a `comm` of R ranks) every rank draws the same global micro-batches and
 * trains on its contiguous share of their sequences; gradients, balance counts and logged metrics are
 * reduced over ranks, and only rank 0 writes the output folder.
 *
 * Shape letters: B sequences per (global) micro-batch, S sequence length, L MoE layers, E routed experts.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { maxVio } from '@switchyard/balance';
import {
  type BpeTokenizer,
  defineModelConfig,
  loadCheckpoint,
  type ModelConfig,
  type ModelConfigInput,
  MoETransformerLM,
  presets,
  saveCheckpoint,
} from '@switchyard/model';
import {
  broadcastVariables,
  type Communicator,
  createLocalCommunicator,
  shardRange,
  sumOverRanks,
} from '@switchyard/parallel';
import { type RouterConfig, resolveRouterConfig } from '@switchyard/routing';
import {
  type BackendInfo,
  initBackend,
  isSwitchyardError,
  Rng,
  SwitchyardError,
  scoped,
  tf,
} from '@switchyard/tensor';
import type { TrainConfig } from '../config/schema';
import { Batcher, type DomainStream, type MicroBatch } from '../data/batcher';
import { type PreparedData, prepareData } from '../data/prepare';
import { buildEvalSet, type EvalSet, evaluateModel } from '../eval/evaluate';
import { UnigramModel } from '../eval/unigram';
import { appendJsonl, type EvalRecord, readJsonl, type StepRecord } from '../report/records';
import { median, writeRunReport } from '../report/report';
import { createReporter, formatDuration, formatRate, type Reporter } from '../reporter';
import {
  checkOutDirFree,
  checkpointName,
  defaultOutDir,
  listCheckpoints,
  RUN_FILES,
  resolveResume,
} from '../run/outdir';
import { GradAccumulator } from './adamw';
import { BalanceController } from './balance';
import { OptimizerStep, resolvePlacement } from './optimizer-step';
import { learningRate } from './schedule';
import { parseTrainerState, TRAINER_STATE_FORMAT, type TrainerState } from './state';

/** Options of {@link train}. */
export interface TrainOptions {
  /** The run's configuration (ignored when resuming: the checkpoint's own configuration is used). */
  readonly config: TrainConfig;
  /** A run folder or checkpoint folder to continue. */
  readonly resume?: string;
  /** Where messages go (default: a reporter following `config.log.progress`; ranks other than 0 stay quiet). */
  readonly reporter?: Reporter;
  /** Collectives among data-parallel ranks (from `launch()`); default: one rank in this thread. */
  readonly comm?: Communicator;
}

/** What a finished run returns. */
export interface TrainResult {
  readonly config: TrainConfig;
  readonly outDir: string;
  readonly finalCheckpoint: string;
  /** Validation loss at the last step. */
  readonly finalValLoss: number;
  /** Validation loss of the unigram model over the same tokens, same tokenizer. */
  readonly unigramValLoss: number;
  readonly steps: readonly StepRecord[];
  readonly evals: readonly EvalRecord[];
  /** Median training tokens/s (global batch, all ranks together) over the steps of this process. */
  readonly tokensPerSec: number;
  /** Data-parallel ranks the run trained on. */
  readonly ranks: number;
  /** Model forward FLOPs per token at the training sequence length. */
  readonly flopsPerToken: number;
  readonly numParams: number;
  readonly backend: BackendInfo;
  readonly reportPath: string | undefined;
}

/**
 * Builds the model configuration of a run: the model preset, the run's overrides, the tokenizer's
 * vocabulary size and a context of at least `train.seqLen`. Throws CONFIG_INVALID naming `model.*` keys.
 *
 * @example
 * ```ts
 * const mc = buildModelConfig(config, tokenizer.vocabSize);
 * ```
 */
export function buildModelConfig(config: TrainConfig, vocabSize: number): ModelConfig {
  const m = config.model;
  const base = presets[m.preset];
  const defined = <T extends object>(o: T): Partial<T> =>
    Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
  const input = {
    ...defined({
      dModel: m.dModel,
      numLayers: m.numLayers,
      numHeads: m.numHeads,
      numKvHeads: m.numKvHeads,
      dFF: m.dFF,
      initStd: m.initStd,
    }),
    vocabSize,
    maxSeqLen: Math.max(base.maxSeqLen, config.train.seqLen),
    moe: {
      ...defined({ every: m.moe.every, firstDense: m.moe.firstDense }),
      router: defined(m.moe.router),
      experts: defined(m.moe.experts),
    },
  } as ModelConfigInput;
  try {
    return defineModelConfig(input, base);
  } catch (e) {
    if (isSwitchyardError(e, 'CONFIG_INVALID')) {
      const body = e.message
        .split('\n')
        .slice(1)
        .join('\n')
        .replace(/^ {2}(\S)/gm, '  model.$1');
      throw new SwitchyardError(
        'CONFIG_INVALID',
        `invalid model configuration (model preset ${m.preset}):\n${body}`,
        {
          cause: e,
        },
      );
    }
    throw e;
  }
}

/** Experts per token K and routed experts E of a model configuration. */
export function routingShape(mc: ModelConfig): { k: number; numExperts: number } {
  const r = resolveRouterConfig({
    ...mc.moe.router,
    numExperts: mc.moe.experts.numExperts,
    dModel: mc.dModel,
  } as RouterConfig);
  return { k: r.k, numExperts: r.numExperts };
}

/** Where a non-finite value was found. */
interface NonFiniteSite {
  readonly layer: string;
  readonly detail: string;
}

function blockOf(name: string): string {
  const m = /^layers\.(\d+)\./.exec(name);
  if (m) return `layer ${m[1]}`;
  if (name === 'embed_tokens') return 'the token embedding';
  return `the output head (${name})`;
}

function allFinite(t: tf.Tensor): boolean {
  return tf.tidy(() => t.isFinite().all().dataSync()[0] === 1);
}

/**
 * Finds where non-finite values first show: the first variable holding NaN or Infinity, else the
 * first MoE layer whose router input or logits are non-finite in an inference-mode forward of the
 * batch, else the output head.
 */
function locateNonFinite(model: MoETransformerLM, mb: MicroBatch): NonFiniteSite {
  for (const [name, v] of model.namedVariables()) {
    if (!allFinite(v)) return { layer: blockOf(name), detail: `weights of ${name} hold NaN or Infinity` };
  }
  let reached = -1;
  const track = (l: number): undefined => {
    reached = l;
    return undefined;
  };
  try {
    return scoped((): NonFiniteSite => {
      const x = tf.tensor2d(mb.inputsBS, [mb.batchSize, mb.seqLen], 'int32');
      const { logitsBSV, plans } = model.forward(x, { training: false, selectionBias: track });
      for (let l = 0; l < plans.length; l++) {
        if (!allFinite(plans[l]!.logitsTE)) return routerSite(model, l, 'router logits');
      }
      if (!allFinite(logitsBSV)) return { layer: 'the output head', detail: 'the logits are non-finite' };
      return {
        layer: 'an unknown layer',
        detail:
          'an inference-mode forward of the same batch is finite: the overflow happens in training mode only',
      };
    });
  } catch (e) {
    if (isSwitchyardError(e, 'NON_FINITE') && reached >= 0) return routerSite(model, reached, 'router input');
    throw e;
  }
}

function routerSite(model: MoETransformerLM, moeLayer: number, what: string): NonFiniteSite {
  const block = model.moeLayerIndices[moeLayer]!;
  return { layer: `layer ${block}`, detail: `${what} of MoE layer ${moeLayer} (block ${block}) non-finite` };
}

function nonFiniteError(
  what: string,
  step: number,
  site: NonFiniteSite,
  lastCheckpoint: string | undefined,
): SwitchyardError {
  const keep = lastCheckpoint
    ? `the last good checkpoint ${lastCheckpoint} is intact`
    : 'no checkpoint had been written yet';
  return new SwitchyardError(
    'NON_FINITE',
    `${what} at step ${step}, first appearing in ${site.layer} (${site.detail}); training stopped, ${keep}`,
    { details: { step, layer: site.layer } },
  );
}

/** Writes a NaN into one weight of a block (the `debug.nanAtStep` switch). */
function poisonWeight(model: MoETransformerLM, block: number): void {
  const name = `layers.${block}.attn.q`;
  const v = model.namedVariables().get(name);
  if (!v) throw new SwitchyardError('CONFIG_INVALID', `debug.nanLayer: the model has no block ${block}`);
  const values = v.dataSync().slice() as Float32Array;
  values[0] = Number.NaN;
  tf.tidy(() => v.assign(tf.tensor(values, v.shape, 'float32')));
}

function fingerprint(streams: readonly DomainStream[]): [string, number][] {
  return streams.map((s) => [s.domain, s.tokens.length]);
}

/** The backend saved in a checkpoint's trainer state, read before the checkpoint is loaded and verified. */
function savedBackend(checkpointDir: string): TrainConfig['backend'] | undefined {
  try {
    const raw = JSON.parse(readFileSync(join(checkpointDir, 'trainer_state.json'), 'utf8')) as {
      config?: { backend?: unknown };
    };
    const b = raw.config?.backend;
    return b === 'auto' || b === 'tensorflow' || b === 'wasm' || b === 'cpu' ? b : undefined;
  } catch {
    return undefined;
  }
}

/** Keeps only the records of steps up to `step` (resuming after a crash past the checkpoint). */
function truncateJsonl(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readJsonl<{ step: number }>(path).filter((r) => r.step <= step);
  writeFileSync(path, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

interface RunJson {
  readonly format: 'switchyard-run';
  readonly version: 1;
  readonly name: string;
  readonly description: string;
  readonly createdAt: string;
  status: 'running' | 'finished' | 'failed';
  updatedAt: string;
  error?: string;
  finalCheckpoint?: string;
  /** The unigram baseline's validation loss (same tokenizer and tokens), set when the run finishes. */
  unigramValLoss?: number;
  readonly config: TrainConfig;
}

function readRunJson(outDir: string): RunJson {
  const path = join(outDir, RUN_FILES.run);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as RunJson;
  } catch (e) {
    throw new SwitchyardError('STATE_INVALID', `--resume: ${path} is missing or unreadable`, { cause: e });
  }
}

function writeRunJson(outDir: string, run: RunJson): void {
  run.updatedAt = new Date().toISOString();
  writeFileSync(join(outDir, RUN_FILES.run), `${JSON.stringify(run, null, 2)}\n`);
}

/**
 * Trains a model as configured (or continues a run) and writes its output folder.
 *
 * When to use: the `switchyard-train` command's job; also callable from scripts and tests.
 *
 * @example
 * ```ts
 * const result = await train({ config: resolveConfig({ preset: 'tiny' }) });
 * console.log(result.finalValLoss, result.unigramValLoss, result.finalCheckpoint);
 * ```
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  const comm = options.comm ?? createLocalCommunicator();
  const R = comm.worldSize;
  const rank = comm.rank;
  const lead = rank === 0;
  let resumeFrom: { checkpointDir: string; runDir: string } | undefined;
  let state: TrainerState | undefined;
  let loaded: Awaited<ReturnType<typeof loadCheckpoint>> | undefined;
  let config = options.config;
  if (options.resume !== undefined) {
    resumeFrom = resolveResume(options.resume);
    // Load the tensors on the backend the run was trained on.
    await initBackend({ backend: savedBackend(resumeFrom.checkpointDir) ?? config.backend });
    loaded = await loadCheckpoint(resumeFrom.checkpointDir);
    try {
      state = parseTrainerState(loaded.trainerState, resumeFrom.checkpointDir);
    } catch (e) {
      loaded.model.dispose();
      tf.dispose(Object.values(loaded.extraTensors ?? {}));
      throw e;
    }
    config = state.config;
    if (state.step >= config.train.steps) {
      loaded.model.dispose();
      tf.dispose(Object.values(loaded.extraTensors ?? {}));
      throw new SwitchyardError(
        'STATE_INVALID',
        `--resume: the run in ${resumeFrom.runDir} already finished all ${config.train.steps} steps`,
      );
    }
  }
  const reporter =
    options.reporter ??
    createReporter({ mode: lead ? config.log.progress : 'quiet', every: config.log.every });
  const outDir = resumeFrom ? resumeFrom.runDir : defaultOutDir(config.out, config.name);
  if (!resumeFrom && lead) checkOutDirFree(outDir);
  if (config.train.microBatchSize < R) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `train.microBatchSize: expected >= the number of ranks (${R}), got ${config.train.microBatchSize}`,
    );
  }

  const backend = await initBackend({ backend: config.backend });
  const t0 = performance.now();
  const data: PreparedData = await prepareData(config, loaded ? { tokenizer: loaded.tokenizer } : {});
  const tokenizer: BpeTokenizer = data.tokenizer;
  if (state) {
    const now = JSON.stringify(fingerprint(data.trainStreams));
    if (now !== JSON.stringify(state.dataFingerprint)) {
      loaded?.model.dispose();
      throw new SwitchyardError(
        'CHECKPOINT_INVALID',
        `--resume: the training data differs from the data the checkpoint was trained on (tokens per domain ${now} vs ${JSON.stringify(state.dataFingerprint)})`,
      );
    }
  }
  const prepSec = (performance.now() - t0) / 1000;

  const { seqLen: S, microBatchSize: B, gradAccum, steps: totalSteps } = config.train;
  const modelConfig = loaded ? loaded.config : buildModelConfig(config, tokenizer.vocabSize);
  if (modelConfig.maxSeqLen < S) {
    throw new SwitchyardError(
      'CONFIG_INVALID',
      `train.seqLen: expected <= the model's maxSeqLen (${modelConfig.maxSeqLen}), got ${S}`,
    );
  }
  // This rank's sequences of every global micro-batch, and its loss weight: with weight
  // R * B_r / B the mean over ranks of the weighted per-rank means is the global mean.
  const shard = shardRange(B, rank, R);
  const Br = shard.end - shard.start;
  const shardWeight = (R * Br) / B;
  const batcher = new Batcher(data.trainStreams, {
    seqLen: S,
    batchSize: B,
    mode: config.data.batching,
    seed: config.seed,
  });
  const evalSet: EvalSet = buildEvalSet(
    data.valStreams,
    S,
    config.eval.tokensPerDomain,
    config.eval.batchSize,
  );
  const unigram = UnigramModel.fit(
    data.trainStreams.map((s) => s.tokens),
    tokenizer.vocabSize,
  );
  const unigramValLoss = unigram.crossEntropy(evalSet.targets);

  const model = loaded ? loaded.model : new MoETransformerLM(modelConfig, new Rng(config.seed).fork('init'));
  const L = model.moeLayerIndices.length;
  const { k: K, numExperts: E } = routingShape(modelConfig);
  const named = model.namedVariables();
  const trainable = [...named.values()];
  const modelName = new Map<string, string>();
  for (const [name, v] of named) modelName.set(v.name, name);
  const optimizer = new OptimizerStep(
    comm,
    named,
    {
      beta1: config.train.beta1,
      beta2: config.train.beta2,
      eps: config.train.eps,
      weightDecay: config.train.weightDecay,
    },
    resolvePlacement(config.train.optimizerOn),
    config.train.clipNorm,
  );
  const balance = new BalanceController({
    method: config.balance.method,
    alpha: config.balance.alpha,
    localRatio: config.balance.localRatio,
    biasUpdateRate: config.balance.biasUpdateRate,
    zLoss: config.balance.zLoss,
    numLayers: L,
    numExperts: E,
    seqLen: S,
    seed: config.seed,
    ...(R > 1
      ? {
          allReduce: sumOverRanks(comm),
          allGather: (values: Int32Array): Int32Array => {
            const parts = comm.allGather(values);
            const all = new Int32Array(parts.reduce((a, p) => a + p.length, 0));
            let off = 0;
            for (const p of parts) {
              all.set(p, off);
              off += p.length;
            }
            return all;
          },
        }
      : {}),
  });
  // Identical replicas: the same seed builds the same weights, the broadcast makes it certain.
  if (R > 1) broadcastVariables(comm, named);
  let noiseRng = new Rng(config.seed).fork('routing-noise');
  let startStep = 0;
  let elapsedBefore = 0;
  let tokensSeen = 0;
  if (state && loaded) {
    try {
      optimizer.loadState(state.optimizerSteps, loaded.extraTensors ?? {});
    } finally {
      tf.dispose(Object.values(loaded.extraTensors ?? {}));
    }
    batcher.setState(state.batcher);
    noiseRng = Rng.fromState(state.noiseRng);
    balance.loadState(state.balance);
    startStep = state.step;
    elapsedBefore = state.elapsedSec;
    tokensSeen = state.tokensSeen;
  }

  const metricsPath = join(outDir, RUN_FILES.metrics);
  const evalPath = join(outDir, RUN_FILES.evals);
  const run: RunJson = resumeFrom
    ? { ...readRunJson(outDir), status: 'running' }
    : {
        format: 'switchyard-run',
        version: 1,
        name: config.name,
        description: config.description,
        createdAt: new Date().toISOString(),
        updatedAt: '',
        status: 'running',
        config,
      };
  // From here on the output folder is written.
  if (lead) {
    if (resumeFrom) {
      truncateJsonl(metricsPath, startStep);
      truncateJsonl(evalPath, startStep);
    }
    mkdirSync(outDir, { recursive: true });
    writeRunJson(outDir, run);
  }

  const syncBiases = (): void => {
    for (let l = 0; l < L; l++) {
      const b = balance.selectionBias(l);
      if (b) model.setSelectionBias(l, b);
    }
  };
  const info = { numMoELayers: L, numExperts: E, k: K };
  let lastCheckpoint: string | undefined = resumeFrom?.checkpointDir;

  const saveRunCheckpoint = async (dir: string, step: number, elapsedSec: number): Promise<void> => {
    syncBiases();
    const trainerState: TrainerState = {
      format: TRAINER_STATE_FORMAT,
      version: 1,
      step,
      config,
      batcher: batcher.getState(),
      noiseRng: noiseRng.getState(),
      balance: balance.state(),
      optimizerSteps: optimizer.stepCount,
      elapsedSec,
      tokensSeen,
      dataFingerprint: fingerprint(data.trainStreams),
    };
    const moments = optimizer.stateTensors();
    try {
      if (lead) await saveCheckpoint(dir, { model, tokenizer, trainerState, extraTensors: moments });
    } finally {
      optimizer.releaseState(moments);
    }
    lastCheckpoint = dir;
  };

  const flopsPerToken = model.flopsPerToken(S);
  const tokensPerStep = B * S * gradAccum;
  if (startStep === 0) {
    reporter.info(`switchyard-train: run ${config.name} -> ${outDir}`);
  } else {
    reporter.info(
      `switchyard-train: resuming ${outDir} at step ${startStep} from ${resumeFrom!.checkpointDir}`,
    );
  }
  reporter.info(`backend: ${backend.name} (${backend.reason})`);
  if (R > 1) {
    reporter.info(
      `data parallel: ${R} ranks (${comm.transport}), ${B} sequences per micro-batch split ${Array.from(
        { length: R },
        (_, r) => {
          const sr = shardRange(B, r, R);
          return sr.end - sr.start;
        },
      ).join(
        '/',
      )}; AdamW ${optimizer.placement === 'host' ? `sharded ${R} ways (ZeRO-1, on the host)` : 'on every rank (backend)'}`,
    );
  }
  const trainTokens = data.trainStreams.reduce((a, s) => a + s.tokens.length, 0);
  reporter.info(
    `data: ${data.source}: ${data.split.train.length} training / ${data.split.val.length} validation texts in ` +
      `${data.split.domains.length} domains; ${trainTokens} training tokens; tokenizer vocab ${tokenizer.vocabSize} ` +
      `(prepared in ${prepSec.toFixed(1)} s)`,
  );
  reporter.info(
    `model: ${config.model.preset} preset, ${(model.numParams() / 1e6).toFixed(2)}M parameters ` +
      `(${(model.activeParamsPerToken() / 1e6).toFixed(2)}M active per token), ${modelConfig.numLayers} blocks, ` +
      `${L} MoE layers of ${E} experts (${modelConfig.moe.router.type}, top-${K})`,
  );
  reporter.info(
    `training: ${totalSteps} steps x ${gradAccum} micro-batch(es) x ${B} x ${S} = ${tokensPerStep} tokens/step, ` +
      `${config.data.batching} batches, balance ${config.balance.method}` +
      `${config.balance.method === 'loss-free' ? ` (u ${config.balance.biasUpdateRate})` : config.balance.method === 'none' ? '' : ` (alpha ${config.balance.alpha})`}` +
      `; validation ${evalSet.tokens} tokens; unigram val_loss ${unigramValLoss.toFixed(4)}`,
  );

  const sched = {
    lr: config.train.lr,
    minLrRatio: config.train.minLrRatio,
    warmupSteps: config.train.warmupSteps,
    totalSteps,
  };
  const acc = new GradAccumulator();
  const stepRecords: StepRecord[] = resumeFrom
    ? readJsonl<StepRecord>(metricsPath).filter((r) => r.step <= startStep)
    : [];
  const evals: EvalRecord[] = resumeFrom
    ? readJsonl<EvalRecord>(evalPath).filter((r) => r.step <= startStep)
    : [];
  const runStart = performance.now();
  const thisRunRates: number[] = [];
  const lossFree = config.balance.method === 'loss-free' && L > 0;
  const selectionBias = (l: number): Float32Array | undefined => balance.selectionBias(l);

  // Each rank scores every R-th validation batch on its identical replica and one all-reduce combines
  // the sums, so every rank returns the record of the whole set.
  const evalShard =
    R > 1 ? { rank, worldSize: R, sum: (buf: Float32Array) => comm.allReduce(buf, 'sum') } : undefined;
  const evaluateAt = (step: number): EvalRecord => {
    syncBiases();
    const rec = evaluateModel(model, evalSet, info, step, evalShard);
    if (lead) appendJsonl(evalPath, rec);
    evals.push(rec);
    reporter.info(
      `eval step ${step}: val_loss ${rec.valLoss.toFixed(4)} | MaxVio_global ${Number.isFinite(rec.maxVioGlobal) ? rec.maxVioGlobal.toFixed(3) : 'n/a'}` +
        ` | specialisation peak ${Number.isFinite(rec.specializationPeak) ? rec.specializationPeak.toFixed(2) : 'n/a'}x uniform` +
        `${rec.dropRate > 0 ? ` | drop rate ${rec.dropRate.toFixed(3)}` : ''}`,
    );
    return rec;
  };

  try {
    for (let step = startStep; step < totalSteps; step++) {
      if (config.debug.nanAtStep === step + 1) poisonWeight(model, config.debug.nanLayer);
      const tStep = performance.now();
      const lr = learningRate(sched, step);
      let lossSum = 0;
      let auxSum = 0;
      // Each micro-batch's per-layer counts and kept counts ([gradAccum][L][E] flattened).
      const microCountsMLE = new Float64Array(gradAccum * L * E);
      const microKeptMLE = new Float64Array(gradAccum * L * E);
      for (let m = 0; m < gradAccum; m++) {
        const mb = batcher.next();
        const rng = noiseRng.split();
        // Filled inside the gradient tape: the LM and balance losses (kept) and each layer's counts.
        const out: {
          lm?: tf.Scalar;
          aux?: tf.Scalar;
          counts: { countsE: Int32Array; keptCountsE: Int32Array }[];
        } = { counts: [] };
        const x =
          R > 1
            ? tf.tensor2d(mb.inputsBS.subarray(shard.start * S, shard.end * S), [Br, S], 'int32')
            : tf.tensor2d(mb.inputsBS, [B, S], 'int32');
        const y =
          R > 1
            ? tf.tensor2d(mb.targetsBS.subarray(shard.start * S, shard.end * S), [Br, S], 'int32')
            : tf.tensor2d(mb.targetsBS, [B, S], 'int32');
        let computed: ReturnType<typeof tf.variableGrads>;
        try {
          computed = tf.variableGrads(() => {
            const { loss, plans } = model.loss(x, y, {
              training: true,
              rng,
              step,
              totalSteps,
              ...(lossFree ? { selectionBias } : {}),
            });
            balance.observe(plans, m);
            const aux = balance.loss(plans, m);
            out.counts = plans.map((p) => ({ countsE: p.countsE, keptCountsE: p.keptCountsE }));
            out.lm = tf.keep(loss);
            if (aux) out.aux = tf.keep(aux);
            const sum = aux ? tf.add(loss, aux) : loss;
            const total = R > 1 ? tf.mul(sum, shardWeight) : sum;
            return (gradAccum > 1 ? tf.div(total, gradAccum) : total) as tf.Scalar;
          }, trainable);
        } catch (e) {
          x.dispose();
          y.dispose();
          acc.reset();
          // The model's own checks refuse non-finite activations (e.g. at a router's input).
          if (isSwitchyardError(e, 'NON_FINITE')) {
            throw nonFiniteError(
              `non-finite activations (micro-batch ${m + 1} of ${gradAccum})`,
              step + 1,
              locateNonFinite(model, mb),
              lastCheckpoint,
            );
          }
          throw e;
        }
        const { value, grads } = computed;
        x.dispose();
        y.dispose();
        value.dispose();
        const lmLoss = out.lm!.dataSync()[0]!;
        const auxLoss = out.aux ? out.aux.dataSync()[0]! : 0;
        out.lm?.dispose();
        out.aux?.dispose();
        if (!Number.isFinite(lmLoss) || !Number.isFinite(auxLoss)) {
          tf.dispose(Object.values(grads));
          acc.reset();
          const what = !Number.isFinite(lmLoss) ? `loss is ${lmLoss}` : `balance loss is ${auxLoss}`;
          throw nonFiniteError(
            `${what} (micro-batch ${m + 1} of ${gradAccum})`,
            step + 1,
            locateNonFinite(model, mb),
            lastCheckpoint,
          );
        }
        const renamed: Record<string, tf.Tensor> = {};
        for (const [tfName, g] of Object.entries(grads)) renamed[modelName.get(tfName) ?? tfName] = g;
        acc.add(renamed);
        lossSum += lmLoss;
        auxSum += auxLoss;
        out.counts.forEach((p, l) => {
          const off = (m * L + l) * E;
          for (let e = 0; e < E; e++) {
            microCountsMLE[off + e] = p.countsE[e]!;
            microKeptMLE[off + e] = p.keptCountsE[e]!;
          }
        });
      }
      const tComputed = performance.now();
      let syncMs = 0;
      if (R > 1) {
        // One all-reduce per step for the logged metrics: shard-weighted losses (their sum is the
        // global mean) and every micro-batch's counts summed over ranks.
        const n = gradAccum * L * E;
        const buf = new Float32Array(2 + 2 * n);
        buf[0] = (lossSum * Br) / B;
        buf[1] = (auxSum * Br) / B;
        buf.set(microCountsMLE, 2);
        buf.set(microKeptMLE, 2 + n);
        comm.allReduce(buf, 'sum', { inPlace: true });
        lossSum = buf[0]!;
        auxSum = buf[1]!;
        microCountsMLE.set(buf.subarray(2, 2 + n));
        microKeptMLE.set(buf.subarray(2 + n));
        syncMs += performance.now() - tComputed;
      }
      const countsLE = Array.from({ length: L }, () => new Float64Array(E));
      const keptL = new Float64Array(L);
      let microVioSum = 0;
      for (let m = 0; m < gradAccum; m++) {
        let vio = 0;
        for (let l = 0; l < L; l++) {
          const off = (m * L + l) * E;
          const c = countsLE[l]!;
          for (let e = 0; e < E; e++) {
            c[e]! += microCountsMLE[off + e]!;
            keptL[l]! += microKeptMLE[off + e]!;
          }
          vio += maxVio(microCountsMLE.subarray(off, off + E));
        }
        microVioSum += L > 0 ? vio / L : Number.NaN;
      }
      const applied = optimizer.apply(acc.take(), lr);
      if (applied.nonFinite.length > 0) {
        const name = applied.nonFinite[0]!;
        throw nonFiniteError(
          'gradient is non-finite',
          step + 1,
          { layer: blockOf(name), detail: `gradient of ${name}` },
          lastCheckpoint,
        );
      }
      const tBalance = performance.now();
      balance.afterStep();
      const tEnd = performance.now();
      tokensSeen += tokensPerStep;
      const dt = (performance.now() - tStep) / 1000;
      const tokensPerSec = tokensPerStep / dt;
      thisRunRates.push(tokensPerSec);
      const elapsed = elapsedBefore + (performance.now() - runStart) / 1000;
      let vioBatch = 0;
      let dropped = 0;
      let assigned = 0;
      const expertLoad = countsLE.map((c, l) => {
        const total = c.reduce((a, b) => a + b, 0);
        vioBatch += maxVio(c);
        assigned += total;
        dropped += total - keptL[l]!;
        return Array.from(c, (v) => (total > 0 ? Number((v / total).toFixed(5)) : 0));
      });
      const rec: StepRecord = {
        step: step + 1,
        loss: lossSum / gradAccum,
        auxLoss: auxSum / gradAccum,
        lr,
        gradNorm: applied.norm,
        tokensPerSec,
        tokens: tokensSeen,
        maxVioBatch: L > 0 ? vioBatch / L : Number.NaN,
        maxVioMicro: microVioSum / gradAccum,
        dropRate: assigned > 0 ? dropped / assigned : 0,
        expertLoad,
        time: elapsed,
        phaseMs: {
          compute: round1(tComputed - tStep),
          sync: round1(syncMs + applied.syncMs),
          clip: round1(applied.clipMs),
          optimizer: round1(applied.optimizerMs + tEnd - tBalance),
        },
      };
      if (lead) appendJsonl(metricsPath, rec);
      stepRecords.push(rec);
      reporter.progress({
        step: step + 1,
        totalSteps,
        loss: rec.loss,
        lr,
        tokensPerSec,
        maxVioBatch: rec.maxVioBatch,
        elapsedSec: (performance.now() - runStart) / 1000,
        stepsThisRun: step + 1 - startStep,
      });
      const done = step + 1;
      if (config.eval.every > 0 && done % config.eval.every === 0 && done < totalSteps) evaluateAt(done);
      if (config.checkpoint.every > 0 && done % config.checkpoint.every === 0 && done < totalSteps) {
        const dir = join(outDir, RUN_FILES.checkpoints, checkpointName(done));
        await saveRunCheckpoint(dir, done, elapsed);
        if (lead) {
          const periodic = listCheckpoints(outDir);
          for (const old of periodic.slice(0, Math.max(0, periodic.length - config.checkpoint.keep))) {
            rmSync(old.dir, { recursive: true, force: true });
          }
        }
        reporter.info(`checkpoint: ${dir}`);
      }
    }
    reporter.close();
    const finalEval = evaluateAt(totalSteps);
    const finalDir = join(outDir, RUN_FILES.checkpoints, RUN_FILES.finalCheckpoint);
    const elapsed = elapsedBefore + (performance.now() - runStart) / 1000;
    await saveRunCheckpoint(finalDir, totalSteps, elapsed);
    run.status = 'finished';
    run.finalCheckpoint = finalDir;
    run.unigramValLoss = unigramValLoss;
    if (lead) writeRunJson(outDir, run);
    let reportPath: string | undefined;
    if (config.log.plots && lead) {
      reportPath = await writeRunReport(outDir, stepRecords, evals, {
        name: config.name,
        description: config.description,
        setup: [
          [
            'data',
            `${data.source}; ${data.split.domains.length} domains; ${config.data.batching} micro-batches`,
          ],
          ['tokenizer', `byte-level BPE, ${tokenizer.vocabSize} ids`],
          [
            'model',
            `${config.model.preset} preset: ${modelConfig.numLayers} blocks, width ${modelConfig.dModel}, ` +
              `${E} experts top-${K} (${modelConfig.moe.router.type}), ${(model.numParams() / 1e6).toFixed(2)}M parameters`,
          ],
          ['batch', `${gradAccum} x ${B} sequences x ${S} tokens per optimizer step`],
          [
            'optimizer',
            `AdamW lr ${config.train.lr} (warm-up ${config.train.warmupSteps}, cosine to ${config.train.minLrRatio}x), ` +
              `wd ${config.train.weightDecay}, clip ${config.train.clipNorm}, on the ${optimizer.placement}` +
              (optimizer.placement === 'host' && R > 1 ? ` (sharded over ${R} ranks)` : ''),
          ],
          [
            'balance',
            `${config.balance.method}, alpha ${config.balance.alpha}, u ${config.balance.biasUpdateRate}, z-loss ${config.balance.zLoss}`,
          ],
          ['backend', R > 1 ? `${backend.name}, ${R} data-parallel ranks` : backend.name],
          ['seed', String(config.seed)],
        ],
        unigramValLoss,
        finalCheckpoint: finalDir,
        uniformFrequency: E > 0 ? K / E : Number.NaN,
        numMoELayers: L,
      });
    }
    const tokensPerSec = median(thisRunRates);
    reporter.info(
      `done: ${totalSteps} steps in ${formatDuration(elapsed)}, ${formatRate(tokensPerSec)} tokens/s (median)` +
        (reportPath ? `; report ${reportPath}` : ''),
    );
    return {
      config,
      outDir,
      finalCheckpoint: finalDir,
      finalValLoss: finalEval.valLoss,
      unigramValLoss,
      steps: stepRecords,
      evals,
      tokensPerSec,
      ranks: R,
      flopsPerToken,
      numParams: model.numParams(),
      backend,
      reportPath,
    };
  } catch (e) {
    reporter.close();
    run.status = 'failed';
    run.error = e instanceof Error ? e.message : String(e);
    if (lead) writeRunJson(outDir, run);
    throw e;
  } finally {
    acc.reset();
    optimizer.dispose();
    model.dispose();
  }
}

/** Milliseconds to 0.1 ms, as metrics.jsonl records them. */
function round1(ms: number): number {
  return Math.round(ms * 10) / 10;
}
