// Memory-bound kernels of a training step on wasm at the default `small` preset's shapes: ns per
// element of tfjs's kernel (the one Switchyard's replaces; for UnsortedSegmentSum, which tfjs lacks
// on wasm, the JavaScript kernel it replaces) and of the replacement, one run, interleaved.
//   pnpm --filter @switchyard/tensor bench        (this part: tsx bench/kernels.bench.ts)
// Elements: of the output, except Sum (of the input it reads). Also prints Exp's largest error
// against the correctly rounded exp over 4M float32 values spread over the range where exp(x) is
// finite and not 0.
import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import { initBackend, tf } from '../src/index';
import { originalWasmKernel } from '../src/internal/wasm-kernels';

await initBackend({ backend: 'wasm' });
const backend = tf.backend();

interface Case {
  readonly kernel: string;
  readonly label: string;
  readonly inputs: Record<string, tf.Tensor>;
  readonly attrs: Record<string, unknown>;
  readonly elements: number;
}

const f32 = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
const ids = (n: number, max: number, seed: number) => tf.randomUniform([n], 0, max, 'int32', seed);
const cases: Case[] = [
  {
    kernel: 'GatherV2',
    label: 'rows [2048,128][1024 ids]',
    inputs: { x: f32([2048, 128], 1), indices: ids(1024, 2048, 2) },
    attrs: { axis: 0, batchDims: 0 },
    elements: 1024 * 128,
  },
  {
    kernel: 'GatherV2',
    label: 'scalars [8192][2048 ids]',
    inputs: { x: f32([8192], 3), indices: ids(2048, 8192, 4) },
    attrs: { axis: 0, batchDims: 0 },
    elements: 2048,
  },
  {
    kernel: 'GatherV2',
    label: 'axis 1 [64,512,32][256 ids]',
    inputs: { x: f32([64, 512, 32], 5), indices: ids(256, 512, 6) },
    attrs: { axis: 1, batchDims: 0 },
    elements: 64 * 256 * 32,
  },
  {
    kernel: 'UnsortedSegmentSum',
    label: '[1024,128] into 2048',
    inputs: { x: f32([1024, 128], 7), segmentIds: ids(1024, 2048, 8) },
    attrs: { numSegments: 2048 },
    elements: 2048 * 128,
  },
  {
    kernel: 'UnsortedSegmentSum',
    label: '[2048,128] into 1024',
    inputs: { x: f32([2048, 128], 9), segmentIds: ids(2048, 1024, 10) },
    attrs: { numSegments: 1024 },
    elements: 1024 * 128,
  },
  {
    kernel: 'Slice',
    label: '[1024,128] columns 0-63',
    inputs: { x: f32([1024, 128], 11) },
    attrs: { begin: [0, 0], size: [1024, 64] },
    elements: 1024 * 64,
  },
  {
    kernel: 'Slice',
    label: '[1024,2] column 1',
    inputs: { x: f32([1024, 2], 12) },
    attrs: { begin: [0, 1], size: [1024, 1] },
    elements: 1024,
  },
  {
    kernel: 'Slice',
    label: '[2048,128] rows 512-1535',
    inputs: { x: f32([2048, 128], 13) },
    attrs: { begin: [512, 0], size: [1024, 128] },
    elements: 1024 * 128,
  },
  {
    kernel: 'Slice',
    label: '[8,128,4,32] head 1',
    inputs: { x: f32([8, 128, 4, 32], 14) },
    attrs: { begin: [0, 0, 1, 0], size: [8, 128, 1, 32] },
    elements: 8 * 128 * 32,
  },
  {
    kernel: 'Exp',
    label: 'attention [8,4,128,128]',
    inputs: { x: f32([8, 4, 128, 128], 15) },
    attrs: {},
    elements: 8 * 4 * 128 * 128,
  },
  {
    // Causal attention scores: the masked half at -1e9.
    kernel: 'Exp',
    label: 'causal scores [8,4,128,128]',
    inputs: {
      x: tf.tidy(() =>
        tf.add(
          f32([8, 4, 128, 128], 20),
          tf.mul(-1e9, tf.sub(1, tf.linalg.bandPart(tf.ones([128, 128]), -1, 0))),
        ),
      ),
    },
    attrs: {},
    elements: 8 * 4 * 128 * 128,
  },
  {
    kernel: 'Exp',
    label: 'logits [1024,2048]',
    inputs: { x: f32([1024, 2048], 16) },
    attrs: {},
    elements: 1024 * 2048,
  },
  {
    kernel: 'Sum',
    label: '[1024,128] over axis 0',
    inputs: { x: f32([1024, 128], 17) },
    attrs: { axis: [0], keepDims: false },
    elements: 1024 * 128,
  },
  {
    kernel: 'Sum',
    label: '[2048,128] over axis 0',
    inputs: { x: f32([2048, 128], 18) },
    attrs: { axis: [0], keepDims: false },
    elements: 2048 * 128,
  },
  {
    kernel: 'Sum',
    label: '[8,128,256] over axes 0,1',
    inputs: { x: f32([8, 128, 256], 19) },
    attrs: { axis: [0, 1], keepDims: false },
    elements: 8 * 128 * 256,
  },
];

/** Median ns per call of `kernel` on `c`, over batches of calls lasting ~20 ms each. */
function timeKernel(kernel: KernelConfig, c: Case): number {
  const call = () => {
    const out = kernel.kernelFunc({ inputs: c.inputs, backend, attrs: c.attrs as never }) as TensorInfo;
    backend.disposeData(out.dataId);
  };
  // Warm-up long enough for V8 to move the kernel from its baseline compiler to its optimizing one
  // (compiled in the background: on a busy machine that can take a while).
  const warm = performance.now();
  while (performance.now() - warm < 150) call();
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) call();
    if (performance.now() - t0 > 20) break;
    reps *= 2;
  }
  const batches: number[] = [];
  for (let b = 0; b < 7; b++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) call();
    batches.push(((performance.now() - t0) * 1e6) / reps);
  }
  batches.sort((p, q) => p - q);
  return batches[3]!;
}

console.log(
  'wasm kernels, ns per element (median of 7 batches), tfjs kernel vs Switchyard replacement, same run',
);
console.log(
  `${'kernel'.padEnd(20)}${'case'.padEnd(30)}${'before'.padStart(9)}${'after'.padStart(9)}${'speed-up'.padStart(10)}`,
);
for (const c of cases) {
  const before = originalWasmKernel(c.kernel);
  const after = tf.getKernel(c.kernel, 'wasm');
  if (!before || !after) {
    console.log(`${c.kernel}: not replaced on this backend`);
    continue;
  }
  const b = timeKernel(before, c) / c.elements;
  const a = timeKernel(after, c) / c.elements;
  console.log(
    `${c.kernel.padEnd(20)}${c.label.padEnd(30)}${b.toFixed(2).padStart(9)}${a.toFixed(2).padStart(9)}${(b / a).toFixed(1).padStart(9)}x`,
  );
}
for (const c of cases) tf.dispose(Object.values(c.inputs));

// Exp's accuracy: 4M values over [-87.3, 88.7] (normal results), random bits in every binade.
const n = 1 << 22;
const xs = new Float32Array(n);
let s = 12345;
for (let i = 0; i < n; i++) {
  s = (Math.imul(s, 1103515245) + 12345) >>> 0;
  xs[i] = -87.3 + (176 * s) / 2 ** 32;
}
const got = tf.tidy(() => tf.exp(tf.tensor1d(xs)).dataSync());
const bits = new Int32Array(new Float32Array(got).buffer);
const want = new Int32Array(Float32Array.from(xs, (v) => Math.exp(v)).buffer);
let worst = 0;
let off = 0;
for (let i = 0; i < n; i++) {
  const d = Math.abs(bits[i]! - want[i]!);
  if (d > worst) worst = d;
  if (d > 0) off++;
}
console.log(
  `Exp: largest error ${worst} ulp against the correctly rounded exp over ${n} values in [-87.3, 88.7]; ${((100 * off) / n).toFixed(1)}% not correctly rounded`,
);
