/**
 * Data parallelism: every rank holds the replicated weights, computes gradients on its share of the
 * global batch, and the gradients are averaged over ranks (bucketed all-reduce) before the optimizer
 * step, so the replicas stay identical bit for bit. Weights an expert-parallel layer shards across
 * ranks are never all-reduced: each rank's shard already holds the gradient of every rank's tokens.
 */
import {
  checkInt,
  checkNumber,
  checkOneOf,
  invalidArgument,
  readInto,
  type Tensor,
  tf,
} from '@switchyard/tensor';
import type { Communicator } from '../comm/types';

const shards = new WeakSet<tf.Variable>();
/** Bucket buffers kept between steps (wasm only: other backends may keep a reference to a tensor's source array). */
const bucketCache = new WeakMap<Communicator, Float32Array[]>();

/** Marks a variable as one rank's shard (expert-parallel experts): gradient sync scales it instead of all-reducing it. */
export function markShard(v: tf.Variable): void {
  shards.add(v);
}

/**
 * True when `v` holds this rank's shard of an expert-parallel layer (see `expertParallel`), false
 * for replicated weights.
 *
 * When to use: to treat sharded weights apart, e.g. when saving or clipping per rank.
 *
 * @example
 * ```ts
 * const local = model.trainableVariables().filter(isShardedVariable);
 * ```
 */
export function isShardedVariable(v: tf.Variable): boolean {
  return shards.has(v);
}

/** How {@link allReduceGradients} averages gradients. */
export interface GradientSyncConfig {
  /** Largest all-reduce message in bytes; gradients are packed into buckets up to this size. */
  readonly bucketBytes: number;
  /** `mean`: each rank's loss is a mean over its share of the batch (the usual); `sum`: losses are sums. */
  readonly reduce: 'mean' | 'sum';
}

/** Defaults of {@link GradientSyncConfig}: 4 MiB buckets, mean over ranks. */
export const defaultGradientSyncConfig: GradientSyncConfig = { bucketBytes: 4 * 1024 * 1024, reduce: 'mean' };

/** The sync config with defaults filled in and checked. */
export function resolveSync(
  config: Partial<GradientSyncConfig>,
  fn = 'allReduceGradients',
): GradientSyncConfig {
  const c = { ...defaultGradientSyncConfig, ...config };
  checkNumber(fn, 'config.bucketBytes', c.bucketBytes, { min: 4 });
  checkOneOf(fn, 'config.reduce', c.reduce, ['mean', 'sum'] as const);
  return c;
}

/** Variables as a list (gradients keyed by `v.name`) or a map from the names gradients are keyed by. */
export type VariableSet = readonly tf.Variable[] | ReadonlyMap<string, tf.Variable>;

/** Gradients by name, as a record (what `tf.variableGrads` returns) or a map. */
export type GradientSet = Readonly<Record<string, Tensor>> | ReadonlyMap<string, Tensor>;

/** [key, variable] pairs in order: list entries are keyed by the variable's own name. */
export function entriesOf(fn: string, variables: VariableSet): [string, tf.Variable][] {
  const entries: [string, tf.Variable][] =
    variables instanceof Map
      ? [...variables.entries()]
      : Array.isArray(variables)
        ? (variables as tf.Variable[]).map((v) => [v?.name, v] as [string, tf.Variable])
        : [];
  if (!(variables instanceof Map) && !Array.isArray(variables)) {
    throw invalidArgument(fn, 'variables', 'an array of tf.Variable or a Map of them by name', variables);
  }
  entries.forEach(([key, v], i) => {
    if (!(v instanceof tf.Variable)) {
      throw invalidArgument(
        fn,
        variables instanceof Map ? `variables.get(${JSON.stringify(key)})` : `variables[${i}]`,
        'a tf.Variable',
        v,
      );
    }
  });
  return entries;
}

/** The gradient stored under `key`, if any. */
export function lookup(grads: GradientSet, key: string): Tensor | undefined {
  return grads instanceof Map ? grads.get(key) : (grads as Readonly<Record<string, Tensor>>)[key];
}

/** Groups consecutive entries into buckets of at most `bucketBytes` (a larger single entry gets its own). */
function buckets<T extends { size: number }>(items: readonly T[], bucketBytes: number): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const it of items) {
    if (cur.length > 0 && bytes + 4 * it.size > bucketBytes) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(it);
    bytes += 4 * it.size;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/**
 * Averages (or sums) gradients over ranks: replicated weights' gradients are packed in `variables`
 * order into buckets of `bucketBytes` and all-reduced; sharded weights' gradients (expert-parallel
 * experts) are only scaled by 1/R under `mean`. A variable missing from `grads` (no gradient on this
 * rank, e.g. an expert that saw no token) counts as zeros, so every rank packs the same buckets.
 * `variables` is a list (gradients keyed by each variable's `name`, as `tf.variableGrads` returns
 * them) or a map from the names the gradients use (e.g. `model.namedVariables()`). Returns new
 * tensors under the same names, as a Map when `grads` is a Map; `grads` is left as it is.
 *
 * When to use: between `tf.variableGrads` and `optimizer.applyGradients` on every rank of a
 * data-parallel run. Every rank must pass the same variables in the same order.
 *
 * @example
 * ```ts
 * const { value, grads } = tf.variableGrads(() => model.loss(x, y, { training: true }).loss);
 * const synced = allReduceGradients(ctx.comm, grads, model.trainableVariables());
 * optimizer.applyGradients(synced);
 * tf.dispose([value, grads, synced]);
 * ```
 */
export function allReduceGradients<G extends GradientSet>(
  comm: Communicator,
  grads: G,
  variables: VariableSet,
  config: Partial<GradientSyncConfig> = {},
): G extends ReadonlyMap<string, Tensor> ? Map<string, Tensor> : Record<string, Tensor> {
  const fn = 'allReduceGradients';
  const entries = entriesOf(fn, variables);
  if (grads === null || typeof grads !== 'object')
    throw invalidArgument(fn, 'grads', 'gradients by name', grads);
  const c = resolveSync(config);
  const R = comm.worldSize;
  const out = new Map<string, Tensor>();
  const gradOf = (key: string, v: tf.Variable): Tensor | undefined => {
    const g = lookup(grads, key);
    if (g !== undefined && (g.size !== v.size || g.dtype !== 'float32')) {
      throw invalidArgument(
        fn,
        `grads[${JSON.stringify(key)}]`,
        `a float32 tensor of shape [${v.shape.join(', ')}]`,
        g,
      );
    }
    return g;
  };
  const replicated: { key: string; v: tf.Variable; size: number }[] = [];
  for (const [key, v] of entries) {
    if (!shards.has(v)) {
      replicated.push({ key, v, size: v.size });
      continue;
    }
    const g = gradOf(key, v);
    out.set(
      key,
      tf.tidy(() => {
        if (g === undefined) return tf.zeros(v.shape);
        return c.reduce === 'mean' && R > 1 ? tf.mul(g, 1 / R) : tf.clone(g);
      }),
    );
  }
  const reuse = tf.getBackend() === 'wasm';
  const cache = bucketCache.get(comm) ?? [];
  if (reuse) bucketCache.set(comm, cache);
  buckets(replicated, c.bucketBytes).forEach((bucket, b) => {
    const total = bucket.reduce((s, e) => s + e.size, 0);
    let flat = reuse ? cache[b] : undefined;
    if (flat?.length !== total) {
      flat = new Float32Array(total);
      if (reuse) cache[b] = flat;
    }
    let off = 0;
    for (const { key, v } of bucket) {
      const g = gradOf(key, v);
      if (g !== undefined) readInto(g, flat, off);
      else flat.fill(0, off, off + v.size);
      off += v.size;
    }
    if (R > 1) comm.allReduce(flat, c.reduce, { inPlace: true });
    off = 0;
    for (const { key, v } of bucket) {
      out.set(key, tf.tensor(flat.subarray(off, off + v.size), v.shape, 'float32'));
      off += v.size;
    }
  });
  const result = grads instanceof Map ? out : Object.fromEntries(out);
  return result as G extends ReadonlyMap<string, Tensor> ? Map<string, Tensor> : Record<string, Tensor>;
}

/**
 * The global L2 norm of gradients synced by {@link allReduceGradients}: replicated gradients (equal
 * on every rank) count once, sharded ones are summed over ranks. A collective: every rank calls it.
 *
 * When to use: for gradient clipping under data/expert parallelism, so every rank clips by the
 * same factor.
 *
 * @example
 * ```ts
 * const norm = globalGradNorm(ctx.comm, synced, model.trainableVariables());
 * const scale = Math.min(1, maxNorm / (norm + 1e-6));
 * ```
 */
export function globalGradNorm(comm: Communicator, grads: GradientSet, variables: VariableSet): number {
  const entries = entriesOf('globalGradNorm', variables);
  const sumSq = (list: [string, tf.Variable][]): number => {
    const gs = list.map(([key]) => lookup(grads, key)).filter((g): g is Tensor => g !== undefined);
    if (gs.length === 0) return 0;
    return tf.tidy(() => tf.addN(gs.map((g) => tf.sum(tf.square(g))))).dataSync()[0]!;
  };
  const replicated = sumSq(entries.filter(([, v]) => !shards.has(v)));
  const local = sumSq(entries.filter(([, v]) => shards.has(v)));
  const sharded = comm.worldSize > 1 ? comm.allReduce(Float32Array.of(local), 'sum')[0]! : local;
  return Math.sqrt(replicated + sharded);
}

/**
 * Copies rank `root`'s values of the replicated variables to every rank (bucketed broadcast);
 * sharded variables are left alone. A collective: every rank calls it with the same variables.
 *
 * When to use: once after building the model on every rank (or after loading a checkpoint on the
 * root only), so the replicas start identical.
 *
 * @example
 * ```ts
 * broadcastVariables(ctx.comm, model.trainableVariables());
 * ```
 */
export function broadcastVariables(
  comm: Communicator,
  variables: VariableSet,
  root = 0,
  config: Pick<Partial<GradientSyncConfig>, 'bucketBytes'> = {},
): void {
  const entries = entriesOf('broadcastVariables', variables);
  checkInt('broadcastVariables', 'root', root, { min: 0, max: comm.worldSize - 1 });
  if (comm.worldSize === 1) return;
  const bucketBytes = resolveSync(config, 'broadcastVariables').bucketBytes;
  const replicated = entries.filter(([, v]) => !shards.has(v)).map(([, v]) => v);
  for (const bucket of buckets(replicated, bucketBytes)) {
    const flat = new Float32Array(bucket.reduce((s, v) => s + v.size, 0));
    let off = 0;
    for (const v of bucket) {
      if (comm.rank === root) readInto(v, flat, off);
      off += v.size;
    }
    const got = comm.broadcast(flat, root);
    off = 0;
    for (const v of bucket) {
      if (comm.rank !== root)
        tf.tidy(() => v.assign(tf.tensor(got.subarray(off, off + v.size), v.shape, 'float32')));
      off += v.size;
    }
  }
}

/**
 * A function summing a Float32Array over ranks, in the form the balance package's global-batch aux
 * loss and loss-free balancer take as `allReduce` (their per-step expert counts).
 *
 * When to use: to pool balance counts over data-parallel ranks once per (micro-)step.
 *
 * @example
 * ```ts
 * const gb = new GlobalAuxLoss({ numExperts: 8, alpha: 1e-2, allReduce: sumOverRanks(ctx.comm) });
 * const lf = new LossFreeBalancer({ numLayers: 4, numExperts: 8, allReduce: sumOverRanks(ctx.comm) });
 * ```
 */
export function sumOverRanks(comm: Communicator): (valuesE: Float32Array) => Float32Array {
  return (valuesE) => comm.allReduce(valuesE, 'sum');
}

/**
 * This rank's contiguous share `[start, end)` of `n` items split over `worldSize` ranks (sizes differ
 * by at most one, the larger shares first).
 *
 * When to use: to split a global batch of sequences between data-parallel ranks.
 *
 * @example
 * ```ts
 * shardRange(10, 1, 4); // { start: 3, end: 6 }
 * ```
 */
export function shardRange(n: number, rank: number, worldSize: number): { start: number; end: number } {
  checkInt('shardRange', 'n', n, { min: 0 });
  checkInt('shardRange', 'worldSize', worldSize, { min: 1 });
  checkInt('shardRange', 'rank', rank, { min: 0, max: worldSize - 1 });
  const base = Math.floor(n / worldSize);
  const extra = n % worldSize;
  const start = rank * base + Math.min(rank, extra);
  return { start, end: start + base + (rank < extra ? 1 : 0) };
}
