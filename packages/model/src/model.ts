/**
 * The decoder-only MoE transformer language model.
 *
 * Shape letters: B batch, S sequence positions, T = B * S token rows, V vocabulary, D model width,
 * E routed experts, H query heads, A head width.
 */
import { DenseFFN, MoELayer } from '@switchyard/experts';
import { disposeRoutingPlan, type RouterConfig, type RoutingPlan } from '@switchyard/routing';
import {
  checkDtype,
  checkInt,
  checkShape,
  gatherRows,
  invalidArgument,
  logSoftmax,
  matMul,
  type Rng,
  type Scalar,
  SwitchyardError,
  type Tensor2D,
  type Tensor3D,
  takeAlongLastAxis,
  tf,
} from '@switchyard/tensor';
import { isMoELayer, type ModelConfig, validateModelConfig } from './config';
import {
  CausalSelfAttention,
  causalMask,
  type LayerKV,
  normalVariable,
  type RaggedSegment,
  RMSNorm,
  RotaryEmbedding,
  tidy,
} from './internal/layers';
import { type GenerateOptions, sampleNext, validateGenerateOptions } from './internal/sampling';

/** Per-call options of {@link MoETransformerLM.forward} and {@link MoETransformerLM.loss}. */
export interface ForwardOptions {
  /** Training mode (router jitter, random routing, training capacity). */
  readonly training: boolean;
  /** Randomness for the routers; each MoE layer takes `rng.split()`, so the generator advances per call. */
  readonly rng?: Rng;
  /** Optimizer step (router warm-up schedules). */
  readonly step?: number;
  /** Total optimizer steps of the run. */
  readonly totalSteps?: number;
  /**
   * Selection-only bias of MoE layer `moeLayerIndex` (0-based among MoE layers), e.g. from the
   * loss-free balancing controller; when it returns undefined the bias stored in the model (if any) is used.
   */
  readonly selectionBias?: (moeLayerIndex: number) => Float32Array | undefined;
}

/** What {@link MoETransformerLM.forward} returns. */
export interface ForwardResult {
  /** Next-token logits [B, S, V], float32. */
  readonly logitsBSV: Tensor3D;
  /** One routing plan per MoE layer, in layer order (dispose with the logits). */
  readonly plans: RoutingPlan[];
}

/** What {@link MoETransformerLM.loss} returns. */
export interface LossResult {
  /** Mean next-token cross-entropy over all target positions (nats). */
  readonly loss: Scalar;
  /** One routing plan per MoE layer, in layer order. */
  readonly plans: RoutingPlan[];
}

/** Options of {@link MoETransformerLM.forwardBlocks}: the forward options plus the batch's shape. */
export interface BlockRangeOptions extends ForwardOptions {
  /** B: sequences in the batch (`xTD` holds B * S rows). */
  readonly batch: number;
  /** S: positions per sequence. */
  readonly seqLen: number;
  /**
   * The batch's token ids [B * S] (row-major); needed only by routers that route on token ids (the
   * `balanced` router with hash assignment), whose stage may not see the tokens otherwise.
   */
  readonly tokenIds?: Int32Array;
}

/** What {@link MoETransformerLM.forwardBlocks} returns. */
export interface BlockRangeResult {
  /** The residual stream after the last block of the range [B * S, D]. */
  readonly xTD: Tensor2D;
  /** One routing plan per MoE layer inside the range, in layer order. */
  readonly plans: RoutingPlan[];
}

/** One sequence of a {@link MoETransformerLM.forwardRagged} batch. */
export interface RaggedSequence {
  /** The sequence's new token ids (one when decoding, a prompt chunk when prefilling). */
  readonly tokens: readonly number[];
  /** The sequence's own cache (batch 1, or empty); extended with the new positions. */
  readonly cache: KVCache;
}

/**
 * Time spent in each part of {@link MoETransformerLM.forwardRagged} calls, in milliseconds, summed
 * over the calls that were given this object. Routing is measured by running each MoE layer's router
 * once more on the same input (its result discarded); experts are the rest of the MoE layer
 * (dispatch, grouped expert compute, combine, shared experts).
 */
export interface StepProfile {
  /** Calls measured. */
  steps: number;
  /** Whole calls, cache updates included. */
  totalMs: number;
  /** Self-attention: projections, RoPE, cache concatenation, scores, output projection. */
  attentionMs: number;
  /** The MoE layers' routers. */
  routingMs: number;
  /** The MoE layers minus routing, plus dense FFN blocks. */
  expertsMs: number;
}

/** Options of {@link MoETransformerLM.forwardRagged}. */
export interface RaggedOptions {
  /** Selection-only bias per MoE layer, as in {@link ForwardOptions.selectionBias}. */
  readonly selectionBias?: (moeLayerIndex: number) => Float32Array | undefined;
  /** When given, the call's phases are timed into it (adds synchronisation; for benchmarks). */
  readonly profile?: StepProfile;
}

/** What {@link MoETransformerLM.forwardRagged} returns. */
export interface RaggedResult {
  /** Next-token logits [B, V] after each sequence's last new token, float32. */
  readonly logitsBV: Tensor2D;
  /** Per MoE layer (in order), the routed assignments each expert received in this call (countsE). */
  readonly expertCounts: Int32Array[];
}

type FFNBlock =
  | { readonly kind: 'moe'; readonly layer: MoELayer }
  | { readonly kind: 'dense'; readonly ffn: DenseFFN };

interface Block {
  readonly inputNorm: RMSNorm;
  readonly attn: CausalSelfAttention;
  readonly postAttentionNorm: RMSNorm;
  readonly ffn: FFNBlock;
}

/**
 * Keys and values of every attention layer for the positions decoded so far; grows with each
 * {@link MoETransformerLM.forwardCached} call. Dispose it when done.
 *
 * @example
 * ```ts
 * const cache = model.createCache();
 * model.forwardCached(tf.tensor2d([[1, 2, 3]], undefined, 'int32'), cache).dispose();
 * cache.dispose();
 * ```
 */
export class KVCache {
  /** Number of cached positions. */
  length = 0;
  /** Batch size fixed by the first call (0 before it). */
  batch = 0;
  /** Per attention layer, or undefined before the first call. */
  layers: LayerKV[] | undefined;

  /** Releases the cached tensors. */
  dispose(): void {
    for (const kv of this.layers ?? []) {
      kv.kBGPA.dispose();
      kv.vBGPA.dispose();
    }
    this.layers = undefined;
    this.length = 0;
    this.batch = 0;
  }
}

const FN = 'MoETransformerLM';

/**
 * A decoder-only language model: token embedding, N blocks of RMSNorm -> causal grouped-query
 * attention with rotary embeddings -> residual -> RMSNorm -> MoE layer or dense FFN -> residual,
 * a final RMSNorm and the LM head (optionally tied to the embedding). Configured as Mixtral it
 * computes what Hugging Face's MixtralForCausalLM computes.
 *
 * When to use: to train (with `loss` under tf.variableGrads / an optimizer), evaluate, or generate.
 *
 * @example
 * ```ts
 * const model = new MoETransformerLM(presets.tiny, new Rng(0));
 * const inputs = tf.tensor2d([[1, 2, 3, 4]], undefined, 'int32');
 * const targets = tf.tensor2d([[2, 3, 4, 5]], undefined, 'int32');
 * const { loss, plans } = model.loss(inputs, targets, { training: false });
 * ```
 */
export class MoETransformerLM {
  /** The validated configuration. */
  readonly config: ModelConfig;
  /** Block index of each MoE layer, in order (plans[i] comes from block moeLayerIndices[i]). */
  readonly moeLayerIndices: number[];
  private readonly embedVD: tf.Variable;
  private readonly lmHeadDV: tf.Variable | undefined;
  private readonly blocks: Block[];
  private readonly finalNorm: RMSNorm;
  private readonly rope: RotaryEmbedding;
  private readonly selectionBiases: (Float32Array | undefined)[];
  /** Per block: its index among the MoE layers, or -1 for a dense block. */
  private readonly moeIndexOfBlock: number[] = [];
  private readonly tableCache = new Map<string, { cosSA: Tensor2D; sinSA: Tensor2D; maskST: Tensor2D }>();
  private readonly needsTokenIds: boolean;
  private disposed = false;

  constructor(config: ModelConfig, rng: Rng) {
    const c = validateModelConfig(config, `config passed to ${FN}()`);
    this.config = c;
    const D = c.dModel;
    this.embedVD = normalVariable(rng.fork('embed_tokens'), [c.vocabSize, D], c.initStd);
    this.lmHeadDV = c.tieEmbeddings
      ? undefined
      : normalVariable(rng.fork('lm_head'), [D, c.vocabSize], c.initStd);
    this.rope = new RotaryEmbedding(D / c.numHeads, c.ropeTheta);
    this.moeLayerIndices = [];
    this.blocks = [];
    for (let l = 0; l < c.numLayers; l++) {
      const lr = rng.fork(`layers.${l}`);
      let ffn: FFNBlock;
      this.moeIndexOfBlock.push(isMoELayer(c, l) ? this.moeLayerIndices.length : -1);
      if (isMoELayer(c, l)) {
        this.moeLayerIndices.push(l);
        ffn = {
          kind: 'moe',
          layer: new MoELayer(
            {
              dModel: D,
              router: { ...c.moe.router, numExperts: c.moe.experts.numExperts, dModel: D } as RouterConfig,
              experts: { ...c.moe.experts, dModel: D, initStd: c.initStd },
              ...(c.moe.shared ? { shared: c.moe.shared } : {}),
              ...(c.moe.computeMode ? { computeMode: c.moe.computeMode } : {}),
            },
            lr.fork('moe'),
          ),
        };
      } else {
        ffn = {
          kind: 'dense',
          ffn: new DenseFFN(
            { dModel: D, dFF: c.dFF, activation: c.activation, initStd: c.initStd },
            lr.fork('mlp'),
          ),
        };
      }
      this.blocks.push({
        inputNorm: new RMSNorm(D, c.rmsNormEps),
        attn: new CausalSelfAttention(D, c.numHeads, c.numKvHeads, c.initStd, lr.fork('attn')),
        postAttentionNorm: new RMSNorm(D, c.rmsNormEps),
        ffn,
      });
    }
    this.finalNorm = new RMSNorm(D, c.rmsNormEps);
    this.selectionBiases = this.moeLayerIndices.map(() => undefined);
    const r = c.moe.router as { type: string; assignment?: string };
    this.needsTokenIds = r.type === 'balanced' && r.assignment === 'hash';
  }

  /**
   * Next-token logits for a batch of token sequences, plus one routing plan per MoE layer.
   * Token ids must lie in [0, vocabSize) (they are not range-checked: that would need a device read).
   *
   * @example
   * ```ts
   * const { logitsBSV, plans } = model.forward(tokensBS, { training: false });
   * ```
   */
  forward(tokensBS: Tensor2D, opts: ForwardOptions): ForwardResult {
    const [B, S] = this.checkTokens('forward', 'tokensBS', tokensBS);
    return tidy(() => {
      const { xTD, plans } = this.trunk(tokensBS, B, S, opts);
      return { logitsBSV: this.headLogits(xTD, B, S), plans };
    });
  }

  /**
   * Mean next-token cross-entropy (float32, log-softmax over V) of `targetsBS` given `inputsBS`
   * (usually the same sequences shifted by one), plus the routing plans for balance losses.
   *
   * @example
   * ```ts
   * const { value, grads } = tf.variableGrads(() => model.loss(x, y, { training: true }).loss);
   * ```
   */
  loss(inputsBS: Tensor2D, targetsBS: Tensor2D, opts: ForwardOptions): LossResult {
    const [B, S] = this.checkTokens('loss', 'inputsBS', inputsBS);
    this.checkTargets('loss', targetsBS, B, S);
    return tidy(() => {
      const { xTD, plans } = this.trunk(inputsBS, B, S, opts);
      return { loss: this.headLoss(xTD, targetsBS), plans };
    });
  }

  /**
   * The MoE layers, in layer order (`moeLayers()[i]` sits in block `moeLayerIndices[i]`).
   *
   * When to use: to apply a strategy to every MoE layer from outside, e.g. swap each layer's
   * `ExpertBank` with `layer.setExperts(...)` for expert parallelism or compression.
   *
   * @example
   * ```ts
   * const banks = model.moeLayers().map((layer) => layer.experts); // one ExpertBank per MoE layer
   * ```
   */
  moeLayers(): MoELayer[] {
    this.assertLive('moeLayers');
    return this.blocks.flatMap((b) => (b.ffn.kind === 'moe' ? [b.ffn.layer] : []));
  }

  /**
   * The token embedding of a batch: the residual stream entering block 0, [B * S, D] (row
   * `b * S + s` is sequence b, position s). With {@link forwardBlocks} and {@link headLoss} or
   * {@link headLogits} it is the model's forward cut into parts: calling the three in order
   * computes exactly what {@link loss} and {@link forward} compute.
   *
   * When to use: to run a model in stages (a pipeline stage holds a range of blocks).
   *
   * @example
   * ```ts
   * const x0 = model.embed(inputsBS);
   * const { xTD: x1 } = model.forwardBlocks(x0, 0, 2, { training: true, batch: B, seqLen: S });
   * const { xTD: x2 } = model.forwardBlocks(x1, 2, model.config.numLayers, { training: true, batch: B, seqLen: S });
   * const loss = model.headLoss(x2, targetsBS);
   * ```
   */
  embed(tokensBS: Tensor2D): Tensor2D {
    const [B, S] = this.checkTokens('embed', 'tokensBS', tokensBS);
    return tf.tidy(() => gatherRows(this.embedVD, tokensBS.reshape([B * S]) as tf.Tensor1D) as Tensor2D);
  }

  /**
   * Runs blocks `[from, to)` on the residual stream `xTD` [B * S, D] and returns the stream after
   * them, with the routing plans of the MoE layers in the range. Each MoE layer takes
   * `opts.rng.split()` in block order, so running the ranges in order draws what one forward does.
   *
   * When to use: a pipeline stage's part of the forward (see {@link embed}).
   *
   * @example
   * ```ts
   * const { xTD, plans } = model.forwardBlocks(x0, 0, 2, { training: false, batch: 1, seqLen: 4 });
   * ```
   */
  forwardBlocks(xTD: Tensor2D, from: number, to: number, opts: BlockRangeOptions): BlockRangeResult {
    this.assertLive('forwardBlocks');
    const fn = `${FN}.forwardBlocks`;
    const N = this.config.numLayers;
    checkInt(fn, 'from', from, { min: 0, max: N });
    checkInt(fn, 'to', to, { min: from, max: N });
    if (opts === null || typeof opts !== 'object')
      throw invalidArgument(fn, 'opts', 'a BlockRangeOptions object', opts);
    const B = checkInt(fn, 'opts.batch', opts.batch, { min: 1 });
    const S = checkInt(fn, 'opts.seqLen', opts.seqLen, { min: 1, max: this.config.maxSeqLen });
    this.checkStream(fn, xTD, B, S);
    if (this.needsTokenIds && !(opts.tokenIds instanceof Int32Array && opts.tokenIds.length === B * S)) {
      throw invalidArgument(
        fn,
        'opts.tokenIds',
        `an Int32Array of the batch's ${B * S} token ids (the hash router routes on them)`,
        opts.tokenIds,
      );
    }
    return tidy(() => {
      const r = this.runBlocks(xTD, from, to, B, S, opts, opts.tokenIds, undefined);
      return { xTD: r.xTD, plans: r.plans };
    });
  }

  /**
   * Next-token logits [B, S, V] from the residual stream after the last block: final RMSNorm and
   * the LM head.
   *
   * When to use: the last pipeline stage's output at inference (see {@link embed}).
   *
   * @example
   * ```ts
   * const logitsBSV = model.headLogits(xTD, B, S);
   * ```
   */
  headLogits(xTD: Tensor2D, batch: number, seqLen: number): Tensor3D {
    this.assertLive('headLogits');
    const fn = `${FN}.headLogits`;
    checkInt(fn, 'batch', batch, { min: 1 });
    checkInt(fn, 'seqLen', seqLen, { min: 1 });
    this.checkStream(fn, xTD, batch, seqLen);
    return tf.tidy(() => this.logitsOf(xTD).reshape([batch, seqLen, this.config.vocabSize]) as Tensor3D);
  }

  /**
   * Mean next-token cross-entropy of `targetsBS` [B, S] from the residual stream after the last
   * block: final RMSNorm, LM head, log-softmax over V in float32.
   *
   * When to use: the last pipeline stage's loss in training (see {@link embed}).
   *
   * @example
   * ```ts
   * const loss = model.headLoss(xTD, targetsBS);
   * ```
   */
  headLoss(xTD: Tensor2D, targetsBS: Tensor2D): Scalar {
    this.assertLive('headLoss');
    const fn = `${FN}.headLoss`;
    if (!(targetsBS instanceof tf.Tensor) || targetsBS.rank !== 2)
      throw invalidArgument(fn, 'targetsBS', 'a 2-D int32 tensor [batch, seqLen]', targetsBS);
    const [B, S] = targetsBS.shape;
    this.checkTargets('headLoss', targetsBS, B, S);
    this.checkStream(fn, xTD, B, S);
    return tf.tidy(() => {
      const logProbsTV = logSoftmax(this.logitsOf(xTD)) as Tensor2D;
      const pickedT1 = takeAlongLastAxis(logProbsTV, targetsBS.reshape([B * S, 1]) as Tensor2D);
      return tf.neg(tf.mean(pickedT1)) as Scalar;
    });
  }

  /**
   * A new, empty KV cache for {@link forwardCached}.
   *
   * @example
   * ```ts
   * const cache = model.createCache();
   * ```
   */
  createCache(): KVCache {
    return new KVCache();
  }

  /**
   * Logits [B, S, V] of S new positions given everything already in `cache`, which is extended with
   * their keys and values. Runs in evaluation mode; routing plans are released. Equal to the
   * matching rows of a full {@link forward} when routing is dropless.
   *
   * @example
   * ```ts
   * const cache = model.createCache();
   * const prefill = model.forwardCached(promptBS, cache);     // all prompt positions
   * const next = model.forwardCached(nextTokenB1, cache);     // one more position
   * ```
   */
  forwardCached(tokensBS: Tensor2D, cache: KVCache, opts: Omit<ForwardOptions, 'training'> = {}): Tensor3D {
    const [B, S] = this.checkTokens('forwardCached', 'tokensBS', tokensBS, cache.length);
    if (cache.layers && cache.batch !== B) {
      throw invalidArgument(
        `${FN}.forwardCached`,
        'tokensBS',
        `a batch of ${cache.batch} sequences like the cache`,
        tokensBS,
      );
    }
    const P = cache.length;
    const { logitsBSV, kvs } = tidy(() => {
      const tokenIds = this.needsTokenIds ? (tokensBS.dataSync() as Int32Array) : undefined;
      const x0TD = gatherRows(this.embedVD, tokensBS.reshape([B * S]) as tf.Tensor1D) as Tensor2D;
      const past = cache.layers ?? [];
      const r = this.runBlocks(
        x0TD,
        0,
        this.blocks.length,
        B,
        S,
        { ...opts, training: false },
        tokenIds,
        past,
      );
      for (const plan of r.plans) disposeRoutingPlan(plan);
      return {
        logitsBSV: this.logitsOf(r.xTD).reshape([B, S, this.config.vocabSize]) as Tensor3D,
        kvs: r.kvs,
      };
    });
    cache.dispose();
    cache.layers = kvs;
    cache.length = P + S;
    cache.batch = B;
    return logitsBSV;
  }

  /**
   * One step over a ragged batch: each sequence brings its own cache (any length) and any number of
   * new tokens, and gets the logits after its last new token. Norms, projections, MoE layers and the
   * head run over all rows at once; attention keeps sequences apart (decoding rows together, masked
   * to each cache's length). Each sequence's logits equal what {@link forwardCached} gives it alone
   * (up to float rounding) when routing is dropless, whatever else shares the batch. Evaluation mode.
   *
   * When to use: continuous batching, where sequences join and leave a running batch between steps
   * and long prompts are prefilled in chunks alongside decoding sequences.
   *
   * @example
   * ```ts
   * const a = model.createCache();
   * const b = model.createCache();
   * const { logitsBV } = model.forwardRagged([
   *   { tokens: [5, 6, 7], cache: a }, // a prompt chunk
   *   { tokens: [9], cache: b },       // one decoding step
   * ]);
   * ```
   */
  forwardRagged(seqs: readonly RaggedSequence[], opts: RaggedOptions = {}): RaggedResult {
    this.assertLive('forwardRagged');
    const fn = `${FN}.forwardRagged`;
    if (!Array.isArray(seqs) || seqs.length === 0)
      throw invalidArgument(fn, 'seqs', 'a non-empty array of { tokens, cache }', seqs);
    const V = this.config.vocabSize;
    const seen = new Set<KVCache>();
    const ids: number[] = [];
    const positions: number[] = [];
    seqs.forEach((q, i) => {
      if (q === null || typeof q !== 'object' || !(q.cache instanceof KVCache) || seen.has(q.cache))
        throw invalidArgument(fn, `seqs[${i}].cache`, 'a KVCache of its own', q?.cache);
      seen.add(q.cache);
      if (q.cache.batch > 1)
        throw invalidArgument(fn, `seqs[${i}].cache`, 'a cache of one sequence', q.cache.batch);
      if (!Array.isArray(q.tokens) || q.tokens.length === 0)
        throw invalidArgument(fn, `seqs[${i}].tokens`, 'a non-empty array of token ids', q.tokens);
      if (q.cache.length + q.tokens.length > this.config.maxSeqLen) {
        throw invalidArgument(
          fn,
          `seqs[${i}].tokens`,
          `at most maxSeqLen (${this.config.maxSeqLen}) positions including ${q.cache.length} cached`,
          q.cache.length + q.tokens.length,
        );
      }
      q.tokens.forEach((id: number, j: number) => {
        checkInt(fn, `seqs[${i}].tokens[${j}]`, id, { min: 0, max: V - 1 });
        ids.push(id);
        positions.push(q.cache.length + j);
      });
    });
    const profile = opts.profile;
    const started = profile ? performance.now() : 0;
    const { logitsBV, expertCounts, kvsBySeq } = tidy(() => {
      const tokenIds = Int32Array.from(ids);
      let xTD = gatherRows(this.embedVD, tf.tensor1d(tokenIds, 'int32')) as Tensor2D;
      const { cosSA: cosTA, sinSA: sinTA } = this.rope.tablesAt(positions);
      const kvsBySeq: LayerKV[][] = seqs.map(() => []);
      const expertCounts: Int32Array[] = [];
      const lap = (t: tf.Tensor, since: number) => {
        t.dataSync();
        return performance.now() - since;
      };
      for (let l = 0; l < this.blocks.length; l++) {
        const block = this.blocks[l]!;
        const segments: RaggedSegment[] = seqs.map((q) => ({
          rows: q.tokens.length,
          past: q.cache.layers?.[l],
        }));
        const hTD = block.inputNorm.forward(xTD);
        let t0 = profile ? performance.now() : 0;
        const { yTD, kvs } = block.attn.forwardRagged(hTD, segments, this.rope, cosTA, sinTA);
        if (profile) profile.attentionMs += lap(yTD, t0);
        kvs.forEach((kv, i) => {
          kvsBySeq[i]!.push(kv);
        });
        xTD = tf.add(xTD, yTD);
        const h2TD = block.postAttentionNorm.forward(xTD);
        t0 = profile ? performance.now() : 0;
        if (block.ffn.kind === 'moe') {
          const moeIndex = this.moeIndexOfBlock[l]!;
          const bias = opts.selectionBias?.(moeIndex) ?? this.selectionBiases[moeIndex];
          const routeOpts = {
            training: false,
            ...(bias ? { selectionBiasE: bias } : {}),
            ...(this.needsTokenIds ? { tokenIds } : {}),
          };
          const { yTD: moeTD, plan } = block.ffn.layer.forward(h2TD, routeOpts);
          if (profile) {
            const moeMs = lap(moeTD, t0);
            const r0 = performance.now();
            disposeRoutingPlan(block.ffn.layer.router.route(h2TD, routeOpts));
            const routeMs = performance.now() - r0;
            profile.routingMs += routeMs;
            profile.expertsMs += Math.max(0, moeMs - routeMs);
          }
          expertCounts.push(Int32Array.from(plan.countsE));
          disposeRoutingPlan(plan);
          xTD = tf.add(xTD, moeTD);
        } else {
          const ffnTD = block.ffn.ffn.forward(h2TD);
          if (profile) profile.expertsMs += lap(ffnTD, t0);
          xTD = tf.add(xTD, ffnTD);
        }
      }
      // The row after each sequence's last new token.
      const lastRows: number[] = [];
      let end = 0;
      for (const q of seqs) {
        end += q.tokens.length;
        lastRows.push(end - 1);
      }
      const lastBD =
        lastRows.length === end ? xTD : (tf.gather(xTD, tf.tensor1d(lastRows, 'int32')) as Tensor2D);
      return { logitsBV: this.logitsOf(lastBD), expertCounts, kvsBySeq };
    });
    seqs.forEach((q, i) => {
      const length = q.cache.length + q.tokens.length;
      q.cache.dispose();
      q.cache.layers = kvsBySeq[i]!;
      q.cache.length = length;
      q.cache.batch = 1;
    });
    if (profile) {
      logitsBV.dataSync();
      profile.totalMs += performance.now() - started;
      profile.steps++;
    }
    return { logitsBV, expertCounts };
  }

  /**
   * Generates a continuation of `promptIds` with a KV cache: greedy, or sampling with temperature,
   * top-k and top-p (nucleus), from a seeded generator. Stops after `maxNewTokens`, at a stop token
   * (not included in the result) or when the sequence reaches `maxSeqLen`. Returns the new tokens.
   *
   * @example
   * ```ts
   * const ids = model.generate(tok.encode('The'), { maxNewTokens: 20, temperature: 0.8, topP: 0.9, seed: 1 });
   * ```
   */
  generate(promptIds: readonly number[], opts: GenerateOptions): number[] {
    this.assertLive('generate');
    const o = validateGenerateOptions(`${FN}.generate`, opts);
    const V = this.config.vocabSize;
    if (!Array.isArray(promptIds) || promptIds.length === 0) {
      throw invalidArgument(`${FN}.generate`, 'promptIds', 'a non-empty array of token ids', promptIds);
    }
    promptIds.forEach((id, i) => {
      checkInt(`${FN}.generate`, `promptIds[${i}]`, id, { min: 0, max: V - 1 });
    });
    if (promptIds.length > this.config.maxSeqLen) {
      throw invalidArgument(
        `${FN}.generate`,
        'promptIds',
        `at most maxSeqLen (${this.config.maxSeqLen}) tokens`,
        promptIds.length,
      );
    }
    const stops = new Set(o.stopTokens);
    const out: number[] = [];
    const cache = this.createCache();
    try {
      let input = [...promptIds];
      while (out.length < o.maxNewTokens && promptIds.length + out.length < this.config.maxSeqLen) {
        const ids = tf.tensor2d(input, [1, input.length], 'int32');
        const logitsBSV = this.forwardCached(ids, cache);
        const last = tf.slice(logitsBSV, [0, input.length - 1, 0], [1, 1, V]);
        const logitsV = last.dataSync() as Float32Array;
        tf.dispose([ids, logitsBSV, last]);
        const next = sampleNext(logitsV, o);
        if (stops.has(next)) break;
        out.push(next);
        input = [next];
      }
    } finally {
      cache.dispose();
    }
    return out;
  }

  /** Every trainable variable, in a fixed order (embedding, blocks in order, final norm, LM head). */
  trainableVariables(): tf.Variable[] {
    return [...this.namedVariables().values()];
  }

  /**
   * Trainable variables by name: `embed_tokens` [V, D]; per block `layers.N.input_norm`,
   * `layers.N.attn.{q,k,v,o}` ([in, out]), `layers.N.post_attention_norm`, then
   * `layers.N.moe.<MoE layer variable>` or `layers.N.mlp.<dense FFN variable>`; `norm`; `lm_head` [D, V]
   * unless tied. Checkpoints map these to Hugging Face names (see the checkpoint format docs).
   *
   * @example
   * ```ts
   * model.namedVariables().get('layers.0.attn.q')!.shape; // [D, H * A]
   * ```
   */
  namedVariables(): Map<string, tf.Variable> {
    this.assertLive('namedVariables');
    const m = new Map<string, tf.Variable>();
    m.set('embed_tokens', this.embedVD);
    this.blocks.forEach((b, l) => {
      m.set(`layers.${l}.input_norm`, b.inputNorm.weightD);
      m.set(`layers.${l}.attn.q`, b.attn.wqDX);
      m.set(`layers.${l}.attn.k`, b.attn.wkDY);
      m.set(`layers.${l}.attn.v`, b.attn.wvDY);
      m.set(`layers.${l}.attn.o`, b.attn.woXD);
      m.set(`layers.${l}.post_attention_norm`, b.postAttentionNorm.weightD);
      const vars = b.ffn.kind === 'moe' ? b.ffn.layer.variables : b.ffn.ffn.variables;
      const prefix = b.ffn.kind === 'moe' ? 'moe' : 'mlp';
      for (const [name, v] of Object.entries(vars)) m.set(`layers.${l}.${prefix}.${name}`, v);
    });
    m.set('norm', this.finalNorm.weightD);
    if (this.lmHeadDV) m.set('lm_head', this.lmHeadDV);
    return m;
  }

  /**
   * The selection-only bias stored for MoE layer `moeLayerIndex` (used when the forward options give
   * none), or undefined. Saved in checkpoints so a served model routes as it did in training.
   */
  getSelectionBias(moeLayerIndex: number): Float32Array | undefined {
    checkInt(`${FN}.getSelectionBias`, 'moeLayerIndex', moeLayerIndex, {
      min: 0,
      max: this.moeLayerIndices.length - 1,
    });
    return this.selectionBiases[moeLayerIndex];
  }

  /**
   * Stores (a copy of) a selection-only bias for MoE layer `moeLayerIndex`; undefined removes it.
   *
   * @example
   * ```ts
   * model.setSelectionBias(0, controller.bias(0));
   * ```
   */
  setSelectionBias(moeLayerIndex: number, biasE: Float32Array | undefined): void {
    checkInt(`${FN}.setSelectionBias`, 'moeLayerIndex', moeLayerIndex, {
      min: 0,
      max: this.moeLayerIndices.length - 1,
    });
    const E = this.config.moe.experts.numExperts;
    if (biasE !== undefined && (!(biasE instanceof Float32Array) || biasE.length !== E)) {
      throw invalidArgument(`${FN}.setSelectionBias`, 'biasE', `a Float32Array of ${E} values`, biasE);
    }
    this.selectionBiases[moeLayerIndex] = biasE ? Float32Array.from(biasE) : undefined;
  }

  /** Number of trainable parameters (the tied embedding counted once). */
  numParams(): number {
    let n = 0;
    for (const v of this.trainableVariables()) n += v.size;
    return n;
  }

  /** Parameters used per token: all but the routed experts, plus the MoE layers' active share. */
  activeParamsPerToken(): number {
    let n = 0;
    for (const [name, v] of this.namedVariables()) if (!/^layers\.\d+\.moe\./.test(name)) n += v.size;
    for (const b of this.blocks) if (b.ffn.kind === 'moe') n += b.ffn.layer.activeParamsPerToken();
    return n;
  }

  /**
   * Forward FLOPs per token at sequence length `seqLen` (default maxSeqLen): 2 per multiply-add of
   * every projection, the full S x S attention products, the FFN/MoE layers' own counts and the LM head.
   * Training costs about 3x this.
   */
  flopsPerToken(seqLen = this.config.maxSeqLen): number {
    checkInt(`${FN}.flopsPerToken`, 'seqLen', seqLen, { min: 1 });
    const c = this.config;
    const A = c.dModel / c.numHeads;
    let f = 2 * c.vocabSize * c.dModel;
    for (const b of this.blocks) {
      for (const v of b.attn.variables()) f += 2 * v.size;
      f += 4 * c.numHeads * A * seqLen;
      f += b.ffn.kind === 'moe' ? b.ffn.layer.flopsPerToken() : b.ffn.ffn.flopsPerToken();
    }
    return f;
  }

  /** Releases every variable and cached table; the model cannot be used afterwards. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.embedVD.dispose();
    this.lmHeadDV?.dispose();
    for (const b of this.blocks) {
      b.inputNorm.dispose();
      b.attn.dispose();
      b.postAttentionNorm.dispose();
      if (b.ffn.kind === 'moe') b.ffn.layer.dispose();
      else b.ffn.ffn.dispose();
    }
    this.finalNorm.dispose();
    this.rope.dispose();
    for (const t of this.tableCache.values()) tf.dispose([t.cosSA, t.sinSA, t.maskST]);
    this.tableCache.clear();
  }

  /** Embedding and every block: what {@link forward} and {@link loss} share. */
  private trunk(tokensBS: Tensor2D, B: number, S: number, opts: ForwardOptions): BlockRangeResult {
    const tokenIds = this.needsTokenIds ? (tokensBS.dataSync() as Int32Array) : undefined;
    const x0TD = gatherRows(this.embedVD, tokensBS.reshape([B * S]) as tf.Tensor1D) as Tensor2D;
    const { xTD, plans } = this.runBlocks(x0TD, 0, this.blocks.length, B, S, opts, tokenIds, undefined);
    return { xTD, plans };
  }

  /**
   * Blocks `[from, to)` over S new positions per sequence. `past` holds each attention layer's
   * cached keys/values (an empty array: none; undefined: plain training/evaluation without a cache);
   * the result's `kvs` has one entry per block of the range.
   */
  private runBlocks(
    xTD: Tensor2D,
    from: number,
    to: number,
    B: number,
    S: number,
    opts: ForwardOptions,
    tokenIds: Int32Array | undefined,
    past: readonly LayerKV[] | undefined,
  ): BlockRangeResult & { kvs: LayerKV[] } {
    const P = past?.[0]?.kBGPA.shape[2] ?? 0;
    const { cosSA, sinSA, maskST } = this.tables(P, S);
    const plans: RoutingPlan[] = [];
    const kvs: LayerKV[] = [];
    for (let l = from; l < to; l++) {
      const block = this.blocks[l]!;
      const hTD = block.inputNorm.forward(xTD);
      const { yTD, kv } = block.attn.forward(hTD, B, S, this.rope, cosSA, sinSA, maskST, past?.[l]);
      kvs.push(kv);
      xTD = tf.add(xTD, yTD);
      const h2TD = block.postAttentionNorm.forward(xTD);
      if (block.ffn.kind === 'moe') {
        const moeIndex = this.moeIndexOfBlock[l]!;
        const bias = opts.selectionBias?.(moeIndex) ?? this.selectionBiases[moeIndex];
        const { yTD: moeTD, plan } = block.ffn.layer.forward(h2TD, {
          training: opts.training,
          seqLen: S,
          ...(opts.rng ? { rng: opts.rng.split() } : {}),
          ...(opts.step !== undefined ? { step: opts.step } : {}),
          ...(opts.totalSteps !== undefined ? { totalSteps: opts.totalSteps } : {}),
          ...(bias ? { selectionBiasE: bias } : {}),
          ...(tokenIds ? { tokenIds } : {}),
        });
        plans.push(plan);
        xTD = tf.add(xTD, moeTD);
      } else {
        xTD = tf.add(xTD, block.ffn.ffn.forward(h2TD));
      }
    }
    return { xTD, plans, kvs };
  }

  /** Logits [B * S, V] of the residual stream after the last block: final norm, then the LM head. */
  private logitsOf(xTD: Tensor2D): Tensor2D {
    const hTD = this.finalNorm.forward(xTD);
    return (this.lmHeadDV ? matMul(hTD, this.lmHeadDV) : matMul(hTD, this.embedVD, false, true)) as Tensor2D;
  }

  /** Throws unless `xTD` is a float32 residual stream [B * S, D]. */
  private checkStream(fn: string, xTD: Tensor2D, B: number, S: number): void {
    if (!(xTD instanceof tf.Tensor))
      throw invalidArgument(fn, 'xTD', `a float32 tensor [${B * S}, ${this.config.dModel}]`, xTD);
    checkShape(fn, 'xTD', xTD, [B * S, this.config.dModel], 'TD');
    checkDtype(fn, 'xTD', xTD, ['float32']);
  }

  /** Throws unless `targetsBS` is int32 [B, S]. */
  private checkTargets(method: string, targetsBS: Tensor2D, B: number, S: number): void {
    checkDtype(`${FN}.${method}`, 'targetsBS', targetsBS, ['int32']);
    if (targetsBS.rank !== 2 || targetsBS.shape[0] !== B || targetsBS.shape[1] !== S) {
      throw new SwitchyardError(
        'SHAPE_MISMATCH',
        `\`targetsBS\` passed to ${FN}.${method}() must have shape [${B}, ${S}] like inputsBS, got [${targetsBS.shape.join(', ')}]`,
      );
    }
  }

  /** RoPE tables and the causal mask for S positions after P cached ones; those with P = 0 are kept. */
  private tables(P: number, S: number): { cosSA: Tensor2D; sinSA: Tensor2D; maskST: Tensor2D } {
    const key = `${P}:${S}`;
    const hit = this.tableCache.get(key);
    if (hit) return hit;
    const { cosSA, sinSA } = this.rope.tables(P, S);
    const t = { cosSA, sinSA, maskST: causalMask(S, P) };
    if (P === 0 && this.tableCache.size < 16) {
      tf.keep(t.cosSA);
      tf.keep(t.sinSA);
      tf.keep(t.maskST);
      this.tableCache.set(key, t);
    }
    return t;
  }

  private checkTokens(method: string, arg: string, tokensBS: Tensor2D, past = 0): [number, number] {
    this.assertLive(method);
    const fn = `${FN}.${method}`;
    if (!(tokensBS instanceof tf.Tensor) || tokensBS.rank !== 2) {
      throw invalidArgument(fn, arg, 'a 2-D int32 tensor [batch, seqLen]', tokensBS);
    }
    checkDtype(fn, arg, tokensBS, ['int32']);
    const [B, S] = tokensBS.shape;
    if (B < 1 || S < 1) throw invalidArgument(fn, arg, 'a non-empty [batch, seqLen] tensor', tokensBS);
    if (past + S > this.config.maxSeqLen) {
      throw invalidArgument(
        fn,
        arg,
        `at most maxSeqLen (${this.config.maxSeqLen}) positions${past ? ` including ${past} cached` : ''}`,
        past + S,
      );
    }
    return [B, S];
  }

  private assertLive(method: string): void {
    if (this.disposed) {
      throw new SwitchyardError('STATE_INVALID', `${FN}.${method}() was called after dispose()`);
    }
  }
}
