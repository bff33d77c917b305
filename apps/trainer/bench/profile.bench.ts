// "This machine": a short measured profile of the host backend (GEMM rate at the default preset's
// forward and backward shapes, per-kernel dispatch, bytes/s of the model's memory-bound kernel kinds
// with operands in L2, in L3 and in memory, weighted by where the step's own reads find their
// operands (LRU stack distances of a traced step against this machine's cache sizes), the optimizer update as a primitive, the kernels and bytes of one training
// micro-batch and of one optimizer update counted with tf.profile on the real model, all-reduce
// latency and bandwidth between 2 worker ranks, the slowdown of GEMMs and of memory-bound kernels
// when 2 ranks run at once),
// written as a MachineProfile; then @switchyard/plan's simulator predicts the default run's step
// on --ranks 1 and --ranks 2 from that profile alone, beside the step measured through launch().
//   pnpm --filter switchyard-train bench:profile
//   SWITCHYARD_PROFILE_OUT=path.json (default benchmarks/machine-profile-node2core.json),
//   PROFILE_STEPS=12 (steps of each real run; the first PROFILE_WARMUP=4 are left out)
// Nothing is fitted to the measured step: the profile's measurements are the prediction's only inputs.
import { writeFileSync } from 'node:fs';
import { createLocalCommunicator, launch } from '@switchyard/parallel';
import {
  type ElementwiseBytes,
  type GemmSample,
  linkFromAllReduce,
  type MachineProfile,
  machinePreset,
  parseModelConfig,
  type SimulationReport,
  simulateCluster,
} from '@switchyard/plan';
import { initBackend, Rng, tf } from '@switchyard/tensor';
import type { StepPhases } from '../src/report/records';
import { median } from '../src/report/report';
import { AdamW, gradientClip } from '../src/train/adamw';
import { OptimizerStep } from '../src/train/optimizer-step';
import { defaultRunModel, launchRun } from './launched';
import {
  COLD_POOL_BYTES,
  type GemmArgs,
  type GemmShape,
  gemmOperands,
  type MemoryArgs,
  memoryPrimitives,
  type TransportArgs,
} from './profile-rank';
import { cacheSizes, readTiers, TIERS, type Tier, traceKernels } from './reuse';

const t0 = performance.now();
const backend = 'wasm';
const steps = Number(process.env.PROFILE_STEPS ?? 12);
const warmup = Number(process.env.PROFILE_WARMUP ?? 4);
const outPath =
  process.env.SWITCHYARD_PROFILE_OUT ??
  new URL('../../../benchmarks/machine-profile-node2core.json', import.meta.url).pathname;
const RANKS = 2;
const info = await initBackend({ backend });
const PROFILE_RANK_URL = new URL(
  `./profile-rank.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`,
  import.meta.url,
);

// The default run and its model (the tokenizer fixes the vocabulary).
const { config, modelConfig, model } = await defaultRunModel(backend);
const { seqLen: S, microBatchSize: B, gradAccum: M } = config.train;
const spec = parseModelConfig(JSON.parse(JSON.stringify(modelConfig)), 'small');
const Br = B / RANKS;

// ---------------------------------------------------------------------------------------------------
// GEMMs at the model's shapes: one forward's products at T tokens (the backward's are the same
// sizes, transposed explicitly).

/** The forward's GEMM shapes of one micro-batch of `b` sequences. */
function modelGemms(b: number): GemmShape[] {
  const T = b * S;
  const D = spec.hidden;
  const a = spec.attention;
  if (a.kind !== 'gqa') throw new Error('expected grouped-query attention');
  const L = spec.layers;
  const Te = Math.max(1, Math.round((T * spec.topK) / spec.experts));
  const F = spec.expertIntermediate;
  return [
    { batch: 1, m: T, k: D, n: a.heads * a.headDim, count: 2 * L }, // q and (transposed) o
    { batch: 1, m: T, k: D, n: a.kvHeads * a.headDim, count: 2 * L }, // k, v
    { batch: b * a.heads, m: S, k: a.headDim, n: S, count: L }, // scores
    { batch: b * a.heads, m: S, k: S, n: a.headDim, count: L }, // values
    { batch: 1, m: T, k: D, n: spec.experts, count: L }, // router
    { batch: 1, m: Te, k: D, n: F, count: 2 * spec.experts * L }, // expert gate, up
    { batch: 1, m: Te, k: F, n: D, count: spec.experts * L }, // expert down
    { batch: 1, m: T, k: D, n: spec.vocab, count: 1 }, // head
  ];
}
/**
 * The backward's products of each forward product Y[m, n] = X[m, k] W[k, n], as tf's matMul
 * gradient runs them: dX = dY Wᵀ ([m, n] x [n, k], W read transposed) and dW = Xᵀ dY ([k, m] x
 * [m, n], X read transposed).
 */
function backwardGemms(forward: readonly GemmShape[]): GemmShape[] {
  return forward.flatMap((s) => [
    { batch: s.batch, m: s.m, k: s.n, n: s.k, count: s.count, transposeB: true },
    { batch: s.batch, m: s.k, k: s.m, n: s.n, count: s.count, transposeA: true },
  ]);
}
const flopsOf = (s: Omit<GemmShape, 'count'>) => 2 * s.batch * s.m * s.k * s.n;
const stepGemms = (b: number) => {
  const f = modelGemms(b);
  return [...f, ...backwardGemms(f)];
};

function timeGemm(s: Omit<GemmShape, 'count'>, minMs: number): number {
  const [a, b] = gemmOperands(s);
  const once = () => {
    const t = performance.now();
    const c = tf.matMul(a, b, s.transposeA ?? false, s.transposeB ?? false);
    c.dataSync();
    c.dispose();
    return performance.now() - t;
  };
  once();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 5 || performance.now() - start < minMs) times.push(once());
  tf.dispose([a, b]);
  return median(times) / 1000;
}

const samples: GemmSample[] = [];
let gemmFlops = 0;
let gemmSeconds = 0;
for (const b of [Br, B]) {
  for (const s of stepGemms(b)) {
    const sec = timeGemm(s, 60);
    const { count: _, ...shape } = s;
    samples.push({ ...shape, flopsPerSec: flopsOf(s) / sec });
    gemmFlops += s.count * flopsOf(s);
    gemmSeconds += s.count * sec;
  }
}
const ref1024 =
  flopsOf({ batch: 1, m: 1024, k: 1024, n: 1024 }) / timeGemm({ batch: 1, m: 1024, k: 1024, n: 1024 }, 500);

// ---------------------------------------------------------------------------------------------------
// Per-kernel dispatch (many tiny kernels) and elementwise bytes/s (large add and exp, less dispatch).

function kernelOverhead(): number {
  const x = tf.scalar(1);
  const per: number[] = [];
  for (let r = 0; r < 7; r++) {
    const n = 2000;
    const t = performance.now();
    tf.tidy(() => {
      let y: tf.Tensor = x;
      for (let i = 0; i < n; i++) y = tf.add(y, x);
      y.dataSync();
    });
    per.push((performance.now() - t) / 1000 / n);
  }
  x.dispose();
  return median(per);
}
const overhead = kernelOverhead();

/**
 * Bytes/s of the model's memory-bound kernel kinds (transposes, broadcast multiplies, reductions,
 * scatter-adds, gathers, exp...) at the small preset's activation shapes, less the dispatch, with
 * their operands in each tier: pools of half the L2, of half the L3, and larger than the caches.
 * { tier -> kernel name -> bytes and seconds } (bytes by the tally's rule).
 */
const dims = (() => {
  const a = spec.attention;
  if (a.kind !== 'gqa') throw new Error('expected grouped-query attention');
  return {
    b: Br,
    s: S,
    d: spec.hidden,
    h: a.heads,
    g: a.kvHeads,
    a: a.headDim,
    e: spec.experts,
    k: spec.topK,
    v: spec.vocab,
  };
})();
type Rate = { bytes: number; seconds: number };
function primitiveRates(poolBytes: number): Map<string, Rate> {
  const out = new Map<string, Rate>();
  for (const p of memoryPrimitives(dims, poolBytes)) {
    const times: number[] = [];
    for (let i = 0; i < 41; i++) {
      const t = performance.now();
      const y = p.run();
      y.dataSync();
      times.push((performance.now() - t) / 1000);
      y.dispose();
    }
    p.dispose();
    const r = out.get(p.kernel) ?? { bytes: 0, seconds: 0 };
    out.set(p.kernel, {
      bytes: r.bytes + p.bytes,
      seconds: r.seconds + Math.max(median(times) - overhead, 1e-7),
    });
  }
  return out;
}
const caches = cacheSizes();
const primitives: Record<Tier, Map<string, Rate>> = {
  l2: caches ? primitiveRates(caches.l2 / 2) : new Map(),
  l3: caches ? primitiveRates(caches.l3 / 2) : new Map(),
  dram: primitiveRates(Math.max(COLD_POOL_BYTES, 4 * (caches?.l3 ?? 0))),
};

// ---------------------------------------------------------------------------------------------------
// The workload, counted on the real model: kernels and non-GEMM bytes of one micro-batch of the
// 2-rank share (forward, then forward + backward) and of one optimizer update.

const GEMM_KERNELS = new Set(['MatMul', 'BatchMatMul', '_FusedMatMul']);
/** Kernels that only relabel their input (no bytes move on wasm). */
const VIEW_KERNELS = new Set(['Reshape', 'ExpandDims', 'Squeeze', 'Identity']);
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
/** What tf.profile reports of each kernel (the fields used here). */
interface KernelRecord {
  readonly name: string;
  readonly inputShapes: readonly (readonly number[] | undefined)[];
  readonly outputShapes: readonly (readonly number[])[];
  readonly kernelTimeMs: number | { error: string } | Promise<number | { error: string }>;
}
/** Diagnostics only (not profile inputs): tf.profile's own kernel times, GEMM and the rest, ms. */
const kernelMs = (kernels: readonly KernelRecord[]) => {
  const out = { gemm: 0, other: 0 };
  for (const k of kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    out[GEMM_KERNELS.has(k.name) ? 'gemm' : 'other'] += ms;
  }
  return out;
};
/** Kernels that evaluate a transcendental function per element (exp's rate); the rest run at add's. */
const TRANSCENDENTAL = new Set([
  'Exp',
  'Log',
  'Log1p',
  'Expm1',
  'Softmax',
  'Sigmoid',
  'Tanh',
  'Erf',
  'Pow',
  'Sin',
  'Cos',
  'Softplus',
  'Elu',
  'Selu',
]);
/** Whether a kernel's bytes are memory-bound work (not a product, a view or a custom-gradient scope). */
const memoryBound = (name: string) =>
  !GEMM_KERNELS.has(name) && !VIEW_KERNELS.has(name) && name !== 'unnamed scope';
function tally(kernels: readonly KernelRecord[]): { kernels: number; bytes: ElementwiseBytes } {
  const bytes = { cheap: 0, transcendental: 0 };
  for (const k of kernels) {
    if (GEMM_KERNELS.has(k.name) || VIEW_KERNELS.has(k.name)) continue;
    // A custom-gradient op (softmax, log-softmax) is recorded as a scope around its own kernels,
    // which are recorded too: its bytes would count twice.
    if (k.name === 'unnamed scope') continue;
    const out = k.outputShapes.reduce((a: number, s) => a + size(s), 0);
    // A gather reads its rows (as many as it writes) and the indices, not the whole table.
    const inputs =
      k.name === 'GatherV2'
        ? out + size(k.inputShapes[1] ?? [])
        : k.inputShapes.reduce((a: number, s) => a + size(s ?? []), 0);
    bytes[TRANSCENDENTAL.has(k.name) ? 'transcendental' : 'cheap'] += 4 * (inputs + out);
  }
  return { kernels: kernels.length, bytes };
}

const ids = () => tf.randomUniform([Br, S], 0, spec.vocab, 'int32', 7) as tf.Tensor2D;
const xBS = ids();
const yBS = ids();
const named = model.namedVariables();
const trainable = [...named.values()];
const lossOf = () => model.loss(xBS, yBS, { training: true, rng: new Rng(3), step: 0, totalSteps: 100 }).loss;
// Once untimed, so that lazy kernel setup is not counted.
tf.dispose(tf.variableGrads(lossOf, trainable).grads);
const fwd = tally((await tf.profile(() => tf.tidy(() => void lossOf()))).kernels);
const bothKernels = (
  await tf.profile(() => {
    const { value, grads } = tf.variableGrads(lossOf, trainable);
    tf.dispose([value, ...Object.values(grads)]);
  })
).kernels;
const both = tally(bothKernels);

/**
 * Bytes of each kernel name in one forward + backward, split by the tier its reads find their
 * operands in (the engine's kernels traced, LRU stack distances against the cache sizes; every read
 * from memory where the sizes are unknown). The bytes of a kernel follow the tally's rule.
 */
const bytesByKernel = new Map<string, Record<Tier, number>>();
{
  const trace = traceKernels(() => {
    const { value, grads } = tf.variableGrads(lossOf, trainable);
    tf.dispose([value, ...Object.values(grads)]);
  });
  const tiers = readTiers(trace, caches ?? { l2: 0, l3: 0 }, memoryBound);
  let i = 0;
  for (const k of trace) {
    if (!memoryBound(k.name)) continue;
    const { share } = tiers[i++]!;
    const out = k.writes.reduce((a, w) => a + w.bytes, 0);
    const reads =
      k.name === 'GatherV2' ? out + (k.reads[1]?.bytes ?? 0) : k.reads.reduce((a, r) => a + r.bytes, 0);
    const into = bytesByKernel.get(k.name) ?? { l2: 0, l3: 0, dram: 0 };
    for (const t of TIERS) into[t] += share[t] * (reads + out);
    bytesByKernel.set(k.name, into);
  }
}
const tierBytes = (t: Tier) => [...bytesByKernel.values()].reduce((a, b) => a + b[t], 0);

/**
 * Each class's rate over the model's own mix: the bytes of each kernel name in each tier at its
 * primitive's rate in that tier (names without a primitive at the class's pooled rate of the tier).
 */
function mixRate(transcendental: boolean): number {
  const of = (name: string) => TRANSCENDENTAL.has(name) === transcendental;
  const pooled = (t: Tier) => {
    const timed = [...primitives[t]].filter(([name]) => of(name));
    return timed.reduce((a, [, r]) => a + r.bytes, 0) / timed.reduce((a, [, r]) => a + r.seconds, 0);
  };
  let bytes = 0;
  let seconds = 0;
  for (const [name, byTier] of bytesByKernel) {
    if (!of(name)) continue;
    for (const t of TIERS) {
      if (byTier[t] === 0) continue;
      const r = primitives[t].get(name);
      bytes += byTier[t];
      seconds += byTier[t] / (r ? r.bytes / r.seconds : pooled(t));
    }
  }
  return bytes > 0 ? bytes / seconds : pooled('dram');
}
const elementwise: ElementwiseBytes = { cheap: mixRate(false), transcendental: mixRate(true) };
const timed = kernelMs(bothKernels);
const t = config.train;
const opt = new OptimizerStep(
  createLocalCommunicator(),
  named,
  { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay },
  'backend',
  t.clipNorm,
);
const zeroGrads = () => new Map([...named].map(([k, v]) => [k, tf.zerosLike(v)] as [string, tf.Tensor]));
opt.apply(zeroGrads(), 1e-4);
const optTally = tally((await tf.profile(() => void opt.apply(zeroGrads(), 1e-4))).kernels);
opt.dispose();
tf.dispose([xBS, yBS]);
const numParams = trainable.reduce((a, v) => a + v.size, 0);

/**
 * The optimizer update as a primitive: the clip's norm and AdamW's tensor ops over random variables
 * and gradients of the model's parameter shapes (its names, for the decay rule), median seconds.
 */
function optimizerPrimitive(): number {
  const vars = new Map(
    [...named].map(([k, v], i) => [k, tf.variable(tf.randomNormal(v.shape, 0, 0.02, 'float32', 100 + i))]),
  );
  const grads = new Map(
    [...named].map(([k, v], i) => [k, tf.randomNormal(v.shape, 0, 1e-3, 'float32', 500 + i)]),
  );
  const adam = new AdamW(vars, { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay });
  const times: number[] = [];
  for (let i = 0; i < 9; i++) {
    const t0 = performance.now();
    const clip = gradientClip(grads, t.clipNorm);
    adam.step(grads, 1e-4, clip.scale);
    [...vars.values()].at(-1)!.dataSync();
    times.push((performance.now() - t0) / 1000);
  }
  adam.dispose();
  tf.dispose([...vars.values(), ...grads.values()]);
  return median(times.slice(1));
}
const optimizerSeconds = optimizerPrimitive();

// ---------------------------------------------------------------------------------------------------
// Between worker ranks: all-reduce latency and bandwidth; GEMMs on 1 rank alone and on 2 at once.

const transport = await launch<TransportArgs, { bytes: number; seconds: number }[]>({
  module: PROFILE_RANK_URL,
  exportName: 'transportRank',
  ranks: RANKS,
  inProcess: false,
  backend,
  args: {
    sizes: [
      { values: 2, reps: 200 },
      { values: 4 << 20, reps: 12 },
    ],
  },
  timeoutMs: 120_000,
});
const allReduce = transport.results[0]!;
const link = linkFromAllReduce(allReduce, RANKS);

const gemmArgs: GemmArgs = { shapes: stepGemms(Br), rounds: 5 };
const gemmOn = async (ranks: number) =>
  (
    await launch<GemmArgs, number>({
      module: PROFILE_RANK_URL,
      exportName: 'gemmRank',
      ranks,
      inProcess: false,
      backend,
      args: gemmArgs,
      timeoutMs: 120_000,
    })
  ).results;
const alone = (await gemmOn(1))[0]!;
const together = await gemmOn(RANKS);
const slowdown = Math.max(1, together.reduce((a, b) => a + b, 0) / together.length / alone);

const memoryArgs: MemoryArgs = { dims, calls: 8, rounds: 7 };
const memoryOn = async (ranks: number) =>
  (
    await launch<MemoryArgs, number>({
      module: PROFILE_RANK_URL,
      exportName: 'memoryRank',
      ranks,
      inProcess: false,
      backend,
      args: memoryArgs,
      timeoutMs: 120_000,
    })
  ).results;
const memAlone = (await memoryOn(1))[0]!;
const memTogether = await memoryOn(RANKS);
const memorySlowdown = Math.max(1, memTogether.reduce((a, b) => a + b, 0) / memTogether.length / memAlone);

const profile: MachineProfile = {
  name: 'node2core',
  backend: info.name,
  measuredAt: new Date().toISOString(),
  ranks: RANKS,
  matmul: { flopsPerSec: gemmFlops / gemmSeconds, shapes: samples, reference1024: ref1024 },
  kernelOverhead: overhead,
  elementwiseBytesPerSec: elementwise,
  workload: {
    model: `small (${(numParams / 1e6).toFixed(2)}M parameters, vocabulary ${spec.vocab})`,
    layers: spec.layers,
    tokens: Br * S,
    kernelsForward: fwd.kernels,
    kernelsBackward: both.kernels - fwd.kernels,
    elementwiseBytesForward: fwd.bytes,
    elementwiseBytesBackward: {
      cheap: both.bytes.cheap - fwd.bytes.cheap,
      transcendental: both.bytes.transcendental - fwd.bytes.transcendental,
    },
    optimizerKernels: optTally.kernels,
    optimizerBytesPerParam: {
      cheap: optTally.bytes.cheap / numParams,
      transcendental: optTally.bytes.transcendental / numParams,
    },
  },
  concurrencySlowdown: slowdown,
  memorySlowdown,
  optimizerUpdate: { parameters: numParams, seconds: optimizerSeconds },
  transport: { latency: link.alpha, bandwidth: link.beta, allReduce },
};
writeFileSync(outPath, `${JSON.stringify(profile, null, 2)}\n`);
const profileSeconds = (performance.now() - t0) / 1000;

const g = (x: number) => `${(x / 1e9).toFixed(2)}`;
console.log(
  `backend: ${info.name} (${info.reason}); profile written to ${outPath} in ${profileSeconds.toFixed(0)} s`,
);
console.log(
  `matmul at the small preset's GEMM shapes (T = ${Br * S} and ${B * S}): ${g(profile.matmul.flopsPerSec)} GFLOP/s; 1024^3: ${g(ref1024)} GFLOP/s`,
);
for (const s of samples) {
  const tr = s.transposeA ? ' (A^T, dW)' : s.transposeB ? ' (B^T, dX)' : '';
  console.log(`  [${s.batch}] ${s.m}x${s.k}x${s.n}${tr}: ${g(s.flopsPerSec)} GFLOP/s`);
}
console.log(
  `per-kernel dispatch: ${(overhead * 1e6).toFixed(1)} us; memory-bound primitives at the model's shapes (GB/s):`,
);
const poolOf: Record<Tier, string> = caches
  ? {
      l2: `operands in L2 (pools of ${caches.l2 >> 11} KiB)`,
      l3: `operands in L3 (pools of ${caches.l3 >> 21} MiB)`,
      dram: 'operands in memory',
    }
  : { l2: '', l3: '', dram: 'operands in memory (cache sizes unknown: every read counted from memory)' };
for (const t of TIERS) {
  if (primitives[t].size === 0) continue;
  console.log(
    `  ${poolOf[t]}: ${[...primitives[t]].map(([k, r]) => `${k} ${g(r.bytes / r.seconds)}`).join(', ')}`,
  );
}
const allTierBytes = TIERS.reduce((a, t) => a + tierBytes(t), 0);
console.log(
  `  the step's memory-bound bytes by where their reads find the operands: ` +
    TIERS.map((t) => `${t} ${((100 * tierBytes(t)) / allTierBytes).toFixed(1)}%`).join(', ') +
    (caches ? ` (L2 ${caches.l2 >> 10} KiB, L3 ${caches.l3 >> 20} MiB)` : '') +
    `; over the model's mix: cheap ${g(elementwise.cheap)} GB/s, transcendental ${g(elementwise.transcendental)} GB/s`,
);
const mb = (b: ElementwiseBytes) => `${(b.cheap / 1e6).toFixed(1)} + ${(b.transcendental / 1e6).toFixed(1)}`;
console.log(
  `one micro-batch of ${Br} x ${S} tokens: ${fwd.kernels} kernels forward, ${both.kernels - fwd.kernels} backward; ` +
    `non-GEMM bytes (cheap + transcendental) ${mb(fwd.bytes)} MB forward, ${mb(profile.workload.elementwiseBytesBackward)} MB backward`,
);
console.log(
  `  (diagnostic, not an input) tf.profile's kernel times of that forward + backward: GEMM ${timed.gemm.toFixed(1)} ms, other kernels ${timed.other.toFixed(1)} ms`,
);
console.log(
  `optimizer update (clip + AdamW, ${(numParams / 1e6).toFixed(2)}M parameters): ${optTally.kernels} kernels, ${profile.workload.optimizerBytesPerParam.cheap.toFixed(1)} + ${profile.workload.optimizerBytesPerParam.transcendental.toFixed(1)} bytes per parameter; timed as a primitive on random tensors of those shapes: ${(optimizerSeconds * 1e3).toFixed(1)} ms`,
);
console.log(
  `all-reduce between ${RANKS} worker ranks: ${allReduce.map((s) => `${s.bytes} B in ${(s.seconds * 1e3).toFixed(3)} ms`).join(', ')} ` +
    `-> latency ${(link.alpha * 1e6).toFixed(1)} us, bandwidth ${g(link.beta)} GB/s`,
);
console.log(
  `GEMM round on 1 rank alone ${(alone * 1e3).toFixed(1)} ms, on each of ${RANKS} at once ${together.map((x) => (x * 1e3).toFixed(1)).join(' / ')} ms: slowdown ${slowdown.toFixed(2)}`,
);
console.log(
  `memory-bound round on 1 rank alone ${(memAlone * 1e3).toFixed(1)} ms, on each of ${RANKS} at once ${memTogether.map((x) => (x * 1e3).toFixed(1)).join(' / ')} ms: slowdown ${memorySlowdown.toFixed(2)}`,
);

// ---------------------------------------------------------------------------------------------------
// Prediction from the profile, beside the real runs through launch().

const hardware = machinePreset(profile);
function predict(ranks: number): SimulationReport {
  return simulateCluster({
    model: spec,
    cluster: { hardware, gpus: ranks },
    pp: 1,
    ep: 1,
    dp: ranks,
    microBatches: M,
    schedule: '1f1b',
    seqLen: S,
    globalBatch: B * M,
    efficiency: 1,
    dpCollective: 'all-reduce',
  });
}

async function measured(
  ranks: number,
): Promise<{ stepMs: number; phases: Record<keyof StepPhases, number> }> {
  const run = await launchRun({ ranks, backend, runSteps: steps, measuredSteps: steps, warmup });
  const tokens = B * S * M;
  return { stepMs: median(run.measured.map((s) => (tokens / s.tokensPerSec) * 1000)), phases: run.phases };
}

const ms = (s: number) => (s * 1e3).toFixed(1);
for (const ranks of [1, RANKS]) {
  const p = predict(ranks);
  const m = await measured(ranks);
  const predictedMs = p.stepTime * 1e3;
  console.log(
    `--ranks ${ranks}: predicted ${predictedMs.toFixed(1)} ms, measured ${m.stepMs.toFixed(1)} ms, predicted/measured ${(predictedMs / m.stepMs).toFixed(2)}`,
  );
  const c = p.computeTerms;
  console.log(
    `  predicted: compute ${ms(p.pipelineTime)} ms (GEMM ${ms(c.gemm)}, kernel dispatch ${ms(c.kernels)}, elementwise ${ms(c.elementwise)}), ` +
      `sync ${ms(p.dpSync.time)} ms, optimizer (clip + AdamW) ${ms(p.optimizerTime)} ms`,
  );
  const ph = m.phases;
  console.log(
    `  measured (rank 0 medians): compute ${ph.compute.toFixed(1)} ms, sync ${ph.sync.toFixed(1)} ms, ` +
      `optimizer (clip + AdamW) ${(ph.clip + ph.optimizer).toFixed(1)} ms (clip ${ph.clip.toFixed(1)}); steps ${warmup + 1}..${steps}`,
  );
}
console.log(`total ${((performance.now() - t0) / 1000).toFixed(0)} s`);
