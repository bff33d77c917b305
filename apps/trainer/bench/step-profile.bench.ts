// Where one training step of the default preset (`small` on the Brown corpus's vocabulary) spends
// its time: a few untimed micro-batches, then one forward + backward under tf.profile, its kernel
// time grouped by kind (products by shape with their GFLOP/s, transposes, gathers and scatters,
// exp/softmax, reductions, other elementwise), the routers' host work (route() wall less the kernels
// it ran), the per-kernel dispatch left over (wall less kernels less host routing), and the
// optimizer update (the trainer's OptimizerStep: clip + AdamW), each as a share of the step
// (gradAccum micro-batches + one update).
//   pnpm --filter switchyard-train bench:step
//   pnpm --filter switchyard-train bench:step -- --json out.json   (or STEP_PROFILE_JSON=out.json)
//   SWITCHYARD_BACKEND=cpu to profile the cpu backend; STEP_WARMUP=3 untimed micro-batches first
// Token ids are uniform random over the vocabulary (the step's shapes and kernels do not depend on
// the text; only which experts are chosen does).
import { writeFileSync } from 'node:fs';
import { createLocalCommunicator } from '@switchyard/parallel';
import type { RouteOptions, RoutingPlan } from '@switchyard/routing';
import { initBackend, Rng, tf, timeOwnKernels } from '@switchyard/tensor';
import { median } from '../src/report/report';
import { OptimizerStep, resolvePlacement } from '../src/train/optimizer-step';
import { defaultRunModel } from './launched';

const backend = (process.env.SWITCHYARD_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm';
const warmup = Number(process.env.STEP_WARMUP ?? 3);
const argJson = process.argv.indexOf('--json');
const jsonPath = argJson >= 0 ? process.argv[argJson + 1] : process.env.STEP_PROFILE_JSON;
const info = await initBackend({ backend });

const { config, model } = await defaultRunModel(backend);
const { seqLen: S, microBatchSize: B, gradAccum: M } = config.train;
const named = model.namedVariables();
const trainable = [...named.values()];

// ---------------------------------------------------------------------------------------------------
// Host routing: each router's route() timed, and the kernels it ran while a profile is active.

/** What tf.profile records of each kernel (the fields read here). */
interface KernelRecord {
  readonly name: string;
  readonly inputShapes: readonly (readonly number[] | undefined)[];
  readonly outputShapes: readonly (readonly number[])[];
  kernelTimeMs: number | { error: string } | Promise<number | { error: string }>;
}
/** The engine's active profile while tf.profile runs (its kernel list grows as kernels run). */
const activeKernels = (): KernelRecord[] | undefined => {
  const state = (tf.engine() as unknown as { state: { activeProfile?: { kernels: KernelRecord[] } } }).state;
  return state.activeProfile?.kernels;
};
/** route() calls of the current measurement: wall ms and the index range of their kernels. */
const routeCalls: { ms: number; from: number; to: number }[] = [];
for (const layer of model.moeLayers()) {
  const router = layer.router;
  const route = router.route.bind(router);
  router.route = (xTD: tf.Tensor2D, options: RouteOptions): RoutingPlan => {
    const from = activeKernels()?.length ?? 0;
    const t = performance.now();
    const plan = route(xTD, options);
    routeCalls.push({ ms: performance.now() - t, from, to: activeKernels()?.length ?? 0 });
    return plan;
  };
}

// ---------------------------------------------------------------------------------------------------
// One micro-batch, forward + backward, as the trainer runs it (LM loss; the gradients disposed).

const ids = (seed: number) =>
  tf.randomUniform([B, S], 0, model.config.vocabSize, 'int32', seed) as tf.Tensor2D;
const xBS = ids(7);
const yBS = ids(8);
let call = 0;
const microBatch = () => {
  const { value, grads } = tf.variableGrads(
    () => model.loss(xBS, yBS, { training: true, rng: new Rng(3 + call++), step: 0, totalSteps: 100 }).loss,
    trainable,
  );
  return { value, grads };
};
const wallOnce = (): number => {
  const t = performance.now();
  const { value, grads } = microBatch();
  value.dataSync();
  tf.dispose([value, ...Object.values(grads)]);
  return performance.now() - t;
};
for (let i = 0; i < warmup; i++) wallOnce();
routeCalls.length = 0;
const unprofiledMs = median(Array.from({ length: 3 }, wallOnce));
const unprofiledRouteMs = routeCalls.reduce((a, c) => a + c.ms, 0) / 3;
routeCalls.length = 0;

let wallMs = 0;
let ownMs = new Map<string, number>();
const profile = await tf.profile(() => {
  const t = performance.now();
  const { result, ms } = timeOwnKernels(microBatch);
  result.value.dataSync();
  wallMs = performance.now() - t;
  ownMs = ms;
  tf.dispose([result.value, ...Object.values(result.grads)]);
});
const kernels = profile.kernels as unknown as KernelRecord[];
const msOf = await Promise.all(
  kernels.map(async (k) => {
    const v = await k.kernelTimeMs;
    return typeof v === 'number' ? v : 0;
  }),
);
// A custom-gradient op is recorded as a scope around its own kernels, which are recorded too (its
// forward as 'unnamed scope', its gradient as 'backward'). Switchyard's own wasm kernels (grouped
// expert products, SwiGLU) are called inside such ops, not through tfjs: they are timed apart.
const isScope = (name: string) => name === 'unnamed scope' || name === 'backward';
// (The others run inside replaced tfjs kernels, whose times already hold them.)
const FUSED_OPS = new Set(['groupedGemm', 'groupedGemmTN', 'swigluForward', 'swigluBackward']);
const fusedMs = new Map([...ownMs].filter(([name]) => FUSED_OPS.has(name)));
const ownKernelMs = [...fusedMs.values()].reduce((a, b) => a + b, 0);
const kernelSum = (from: number, to: number) => {
  let s = 0;
  for (let i = from; i < to; i++) if (!isScope(kernels[i]!.name)) s += msOf[i]!;
  return s;
};
const routeWallMs = routeCalls.reduce((a, c) => a + c.ms, 0);
const routeKernelMs = routeCalls.reduce((a, c) => a + kernelSum(c.from, c.to), 0);
const hostRoutingMs = Math.max(0, routeWallMs - routeKernelMs);

// ---------------------------------------------------------------------------------------------------
// Kernels by category (products by shape).

const CATEGORY: Record<string, readonly string[]> = {
  matmul: ['MatMul', 'BatchMatMul', '_FusedMatMul'],
  transpose: ['Transpose'],
  'gather/scatter': [
    'GatherV2',
    'GatherNd',
    'UnsortedSegmentSum',
    'ScatterNd',
    'Slice',
    'StridedSlice',
    'Concat',
    'Pad',
    'Tile',
    'OneHot',
  ],
  'exp/softmax': ['Exp', 'Softmax', 'Log', 'LogSoftmax', 'Sigmoid'],
  reductions: ['Sum', 'Max', 'Min', 'Mean', 'Prod', 'ArgMax', 'ArgMin', 'All', 'Any'],
  'views (no data moved)': ['Reshape', 'ExpandDims', 'Squeeze', 'Identity'],
};
const categoryOf = (name: string): string => {
  for (const [c, names] of Object.entries(CATEGORY)) if (names.includes(name)) return c;
  return 'other elementwise';
};
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
interface Row {
  ms: number;
  kernels: number;
  flops?: number;
  names?: Map<string, number>;
}
const byCategory = new Map<string, Row>();
const byShape = new Map<string, Row>();
const add = (m: Map<string, Row>, key: string, ms: number, name: string, flops = 0) => {
  const r = m.get(key) ?? { ms: 0, kernels: 0, flops: 0, names: new Map() };
  r.ms += ms;
  r.kernels++;
  r.flops = (r.flops ?? 0) + flops;
  r.names!.set(name, (r.names!.get(name) ?? 0) + ms);
  m.set(key, r);
};
/**
 * A product's row of the table. The routed experts' products (2-D, between the widths D and F and a
 * token count) differ only in the tokens each expert received: one row per form, `n` for the count.
 */
const F = model.config.moe.experts.dFF;
const D = model.config.dModel;
const productKey = (
  a: readonly number[],
  b: readonly number[],
  out: readonly number[],
  k: number,
): string => {
  const plain = `[${a.join(',')}] x [${b.join(',')}] -> [${out.join(',')}]`;
  const dims = [...a, ...b, ...out];
  if (out.length !== 2 || !dims.includes(F) || dims.some((d) => d !== F && d !== D && known.has(d)))
    return plain;
  const [m, n] = out as [number, number];
  const tA = a[0] !== m ? ' A^T' : '';
  const tB = b[0] !== k ? ' B^T' : '';
  // The weight's gradient: [D, F] or [F, D] summed over the tokens; else tokens through a weight.
  if ((m === D && n === F) || (m === F && n === D))
    return `experts dW: [${m},n] x [n,${n}] -> [${m},${n}]${tA}${tB}`;
  // Tokens on the right: a product taken as (W^T x^T)^T.
  if (m === D || m === F) return `experts: [${m},${k}] x [${k},n] -> [${m},n]${tA}${tB}`;
  return `experts: [n,${k}] x [${k},${n}] -> [n,${n}]${tA}${tB}`;
};
/** An elementwise kernel's row: rows of one expert's tokens (2-D, width D or F) written `n`. */
const rowsKey = (name: string, s: readonly number[]): string => {
  const perExpert =
    s.length === 2 && (s[1] === F || s[1] === D) && ![D, F].includes(s[0]!) && !known.has(s[0]!);
  return `${name} [${perExpert ? `n,${s[1]}` : s.join(',')}]${perExpert ? ' (one expert)' : ''}`;
};
const known = new Set([B * S, model.config.vocabSize]);
let counted = 0;
kernels.forEach((k, i) => {
  if (isScope(k.name)) return;
  counted++;
  const c = categoryOf(k.name);
  let flops = 0;
  if (c === 'matmul') {
    // out [..., m, n] from a [..., m|k, k|m]: k = |a| n / |out| (operands broadcast before products).
    const a = k.inputShapes[0] ?? [];
    const b = k.inputShapes[1] ?? [];
    const out = k.outputShapes[0] ?? [];
    const n = out.at(-1) ?? 1;
    const kk = (size(a) * n) / Math.max(1, size(out));
    flops = 2 * size(out) * kk;
    add(byShape, productKey(a, b, out, kk), msOf[i]!, k.name, flops);
  } else if (c === 'exp/softmax' || c === 'transpose') {
    add(byShape, rowsKey(k.name, k.inputShapes[0] ?? []), msOf[i]!, k.name);
  }
  add(byCategory, c, msOf[i]!, k.name, flops);
});
const kernelMs = kernelSum(0, kernels.length);
const dispatchMs = Math.max(0, wallMs - kernelMs - ownKernelMs - hostRoutingMs);

// ---------------------------------------------------------------------------------------------------
// The optimizer update, as the trainer runs it (its placement, clip and AdamW), on real gradients.

const t = config.train;
const placement = resolvePlacement(t.optimizerOn);
const opt = new OptimizerStep(
  createLocalCommunicator(),
  named,
  { beta1: t.beta1, beta2: t.beta2, eps: t.eps, weightDecay: t.weightDecay },
  placement,
  t.clipNorm,
);
const gradsByName = () => {
  const { value, grads } = microBatch();
  value.dispose();
  const byTfName = new Map(trainable.map((v, i) => [v.name, [...named.keys()][i]!]));
  return new Map(Object.entries(grads).map(([k, g]) => [byTfName.get(k) ?? k, g] as [string, tf.Tensor]));
};
const optTimes: number[] = [];
for (let i = 0; i < 4; i++) {
  const g = gradsByName();
  const t0 = performance.now();
  opt.apply(g, 1e-4);
  trainable.at(-1)!.dataSync();
  optTimes.push(performance.now() - t0);
}
const optimizerMs = median(optTimes.slice(1));
opt.dispose();
tf.dispose([xBS, yBS]);

// ---------------------------------------------------------------------------------------------------
// The table: per micro-batch, per step (M micro-batches + one update), share of the step.

const stepMs = M * wallMs + optimizerMs;
const pct = (ms: number) => (100 * ms) / stepMs;
const rows: {
  what: string;
  msPerMicroBatch: number;
  msPerStep: number;
  percent: number;
  kernels?: number;
}[] = [];
const push = (what: string, perMb: number, kernelCount?: number, perStep = M * perMb) =>
  rows.push({
    what,
    msPerMicroBatch: perMb,
    msPerStep: perStep,
    percent: pct(perStep),
    ...(kernelCount === undefined ? {} : { kernels: kernelCount }),
  });
for (const [c, r] of [...byCategory].sort((a, b) => b[1].ms - a[1].ms))
  push(`kernels: ${c}`, r.ms, r.kernels);
if (ownKernelMs > 0) {
  const names = [...fusedMs].sort((a, b) => b[1] - a[1]).map(([n, ms]) => `${n} ${ms.toFixed(1)}`);
  push(`Switchyard's wasm kernels called by fused ops (${names.join(', ')})`, ownKernelMs, undefined);
}
push('host routing (route() wall less its kernels)', hostRoutingMs, undefined);
push(
  `per-kernel dispatch (wall - kernels - own kernels - host routing; ${counted} kernels)`,
  dispatchMs,
  counted,
);
push(`optimizer update (${placement}: clip + AdamW)`, optimizerMs / M, undefined, optimizerMs);
const shapes = [...byShape]
  .sort((a, b) => b[1].ms - a[1].ms)
  .map(([key, r]) => ({
    key,
    ms: r.ms,
    kernels: r.kernels,
    percent: pct(M * r.ms),
    ...(r.flops ? { gflopsPerSec: r.flops / (r.ms / 1e3) / 1e9 } : {}),
  }));

const numParams = trainable.reduce((a, v) => a + v.size, 0);
const f1 = (x: number) => x.toFixed(1);
console.log(`backend: ${info.name} (${info.reason})`);
console.log(
  `preset small: ${(numParams / 1e6).toFixed(2)}M parameters; a step is ${M} micro-batch(es) of ${B} x ${S} = ${B * S} tokens + one optimizer update`,
);
console.log(
  `one micro-batch forward + backward: ${f1(wallMs)} ms under tf.profile (${f1(unprofiledMs)} ms unprofiled, median of 3); ` +
    `kernels ${f1(kernelMs)} ms in ${counted} kernels; route() ${f1(routeWallMs)} ms wall of which host ${f1(hostRoutingMs)} ms ` +
    `(unprofiled route() wall ${f1(unprofiledRouteMs)} ms)`,
);
console.log(`step (profiled): ${f1(stepMs)} ms = ${M} x ${f1(wallMs)} + optimizer ${f1(optimizerMs)}`);
console.log('');
console.log('| where | ms / micro-batch | ms / step | % of step | kernels |');
console.log('|---|---:|---:|---:|---:|');
for (const r of rows)
  console.log(
    `| ${r.what} | ${f1(r.msPerMicroBatch)} | ${f1(r.msPerStep)} | ${f1(r.percent)} | ${r.kernels ?? ''} |`,
  );
console.log('');
console.log(
  '| kernel by shape (products: A x B -> out; n: the tokens of one expert, A^T/B^T: read transposed) | ms / micro-batch | kernels | % of step | GFLOP/s |',
);
console.log('|---|---:|---:|---:|---:|');
for (const s of shapes.filter((s) => s.ms >= 0.5))
  console.log(
    `| ${s.key} | ${f1(s.ms)} | ${s.kernels} | ${f1(s.percent)} | ${s.gflopsPerSec === undefined ? '' : s.gflopsPerSec.toFixed(2)} |`,
  );
const rest = shapes.filter((s) => s.ms < 0.5);
console.log(
  `(${rest.length} more shapes under 0.5 ms each, ${f1(rest.reduce((a, s) => a + s.ms, 0))} ms together)`,
);

if (jsonPath) {
  writeFileSync(
    jsonPath,
    `${JSON.stringify(
      {
        backend: info.name,
        measuredAt: new Date().toISOString(),
        preset: 'small',
        tokensPerMicroBatch: B * S,
        microBatches: M,
        numParams,
        wallMs,
        unprofiledMs,
        kernelMs,
        kernels: counted,
        routeWallMs,
        hostRoutingMs,
        optimizerMs,
        stepMs,
        rows,
        shapes,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`written to ${jsonPath}`);
}
