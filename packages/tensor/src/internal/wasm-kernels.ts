/**
 * Switchyard's own wasm kernels (AssemblyScript sources in `assembly/`), run inside the tfjs wasm
 * backend's heap: the module imports the backend's `WebAssembly.Memory`, so a kernel reads its
 * inputs and writes its outputs where tfjs keeps them, with no copies in or out. The glue here turns
 * tensors into heap offsets and allocates outputs with the backend's own allocator.
 *
 * Loaded once per process by `initBackend` on wasm ({@link prepareWasmKernels}); until then, or on
 * another backend, {@link wasmKernels} is null and callers keep tfjs's kernels.
 */
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { WASM_KERNELS_BASE64 } from './wasm-kernels.generated';

/** The module's exports; every pointer is a byte offset into the tfjs heap. */
export interface WasmKernelExports {
  /** One AdamW update of n floats into fresh outputs w1, m1, v1 (assembly/adamw.ts). */
  adamw(
    w: number,
    m: number,
    v: number,
    g: number,
    w1: number,
    m1: number,
    v1: number,
    n: number,
    beta1: number,
    beta2: number,
    mScale: number,
    vScale: number,
    step: number,
    vNorm: number,
    eps: number,
    keep: number,
    decay: boolean,
  ): void;
  transpose(x: number, out: number, batch: number, rows: number, cols: number, inner: number): void;
  expF32(x: number, out: number, n: number): void;
  firstIndexOutOfRange(indices: number, n: number, dim: number): number;
  gather(x: number, indices: number, out: number, outer: number, dim: number, n: number, slice: number): void;
  segmentSumF32(x: number, ids: number, out: number, n: number, inner: number, segments: number): void;
  segmentSumI32(x: number, ids: number, out: number, n: number, inner: number, segments: number): void;
  copyBlocks(x: number, out: number, d0: number, d1: number, d2: number, s0: number, s1: number): void;
  sumColumnsF32(x: number, out: number, outer: number, rows: number, inner: number): void;
  sumColumnsI32(x: number, out: number, outer: number, rows: number, inner: number): void;
  /** Floats of scratch the products below need (one packed block of B). */
  gemmScratchFloats(): number;
  /** C (+)= A B with A(m, k) at a + m aRow + k aCol and B(k, n) at b + k bRow + n bCol (bytes); C row-major, ldc floats per row. */
  gemm(
    a: number,
    aRow: number,
    aCol: number,
    b: number,
    bRow: number,
    bCol: number,
    c: number,
    ldc: number,
    M: number,
    N: number,
    K: number,
    accumulate: boolean,
    scratch: number,
  ): void;
  /** Per expert e (counts[e] contiguous rows): C_e (+)= A_e B[e], B [E, K, N] or [E, N, K] when transposeB. */
  groupedGemm(
    a: number,
    b: number,
    c: number,
    counts: number,
    E: number,
    K: number,
    N: number,
    transposeB: boolean,
    accumulate: boolean,
    scratch: number,
  ): void;
  /** Per expert e: C[e] (+)= A_e^T G_e with A [S, M], G [S, N], C [E, M, N]; experts without rows get zeros. */
  groupedGemmTN(
    a: number,
    g: number,
    c: number,
    counts: number,
    E: number,
    M: number,
    N: number,
    accumulate: boolean,
    scratch: number,
  ): void;
  /** out = gate s up over n floats (s = sigmoid(gate)). */
  swigluForward(gate: number, s: number, up: number, out: number, n: number): void;
  /** dUp = dOut gate s, dGate = dOut up s (1 + gate (1 - s)) over n floats. */
  swigluBackward(
    dOut: number,
    gate: number,
    s: number,
    up: number,
    dGate: number,
    dUp: number,
    n: number,
  ): void;
}

/** The parts of the WebAssembly JS API used here (the package compiles without the DOM library). */
declare namespace WebAssembly {
  class Module {
    constructor(bytes: Uint8Array);
  }
  class Instance {
    constructor(module: Module, imports: Record<string, Record<string, unknown>>);
    readonly exports: Record<string, unknown>;
  }
  class Memory {
    readonly buffer: ArrayBuffer;
  }
  function compile(bytes: Uint8Array): Promise<Module>;
}

let compiled: WebAssembly.Module | null | undefined;
let instance: { memory: WebAssembly.Memory; exports: WasmKernelExports } | null = null;

function bytes(): Uint8Array {
  if (typeof Buffer !== 'undefined') return Buffer.from(WASM_KERNELS_BASE64, 'base64');
  const s = atob(WASM_KERNELS_BASE64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Compiles the module ahead of {@link installWasmKernels} (asynchronously, as browsers require). */
export async function prepareWasmKernels(): Promise<void> {
  if (compiled !== undefined) return;
  try {
    compiled = await WebAssembly.compile(bytes());
  } catch {
    compiled = null;
  }
}

function heapMemory(backend: BackendWasm): WebAssembly.Memory | undefined {
  const module = (backend as unknown as { wasm?: { asm?: { memory?: unknown } } }).wasm;
  const memory = module?.asm?.memory;
  return memory instanceof WebAssembly.Memory ? memory : undefined;
}

/**
 * Instantiates the kernels against the current wasm backend's heap. Returns false (and leaves every
 * caller on tfjs's kernels) when the backend is not wasm, its heap is not reachable, or the module
 * cannot be compiled here.
 */
export function installWasmKernels(): boolean {
  if (tf.getBackend() !== 'wasm') return false;
  const memory = heapMemory(tf.backend() as BackendWasm);
  if (!memory) return false;
  if (instance?.memory === memory) return true;
  if (compiled === undefined) {
    try {
      compiled = new WebAssembly.Module(bytes());
    } catch {
      compiled = null;
    }
  }
  if (compiled === null) return false;
  const inst = new WebAssembly.Instance(compiled, { env: { memory } });
  instance = { memory, exports: inst.exports as unknown as WasmKernelExports };
  return true;
}

/** The kernels when the wasm backend is active and they are installed, else null. */
export function wasmKernels(): WasmKernelExports | null {
  if (instance === null || tf.getBackend() !== 'wasm') return null;
  return timed ?? instance.exports;
}

/** While {@link timeOwnKernels} runs: the exports wrapped to time each call. */
let timed: WasmKernelExports | null = null;

/**
 * Runs `fn` with every call into Switchyard's own wasm kernels timed, and returns the milliseconds
 * spent in each kernel (by export name) beside `fn`'s result. The kernels are called directly, not
 * through tfjs's kernel registry, so `tf.profile` sees them only inside the op that calls them.
 * Empty when the kernels are not installed (another backend).
 *
 * When to use: profiling a step on wasm, to split a fused op's time from tfjs's kernels.
 *
 * @example
 * ```ts
 * const { result, ms } = timeOwnKernels(() => model.loss(x, y, opts).loss);
 * ms.get('groupedGemm'); // milliseconds in the grouped expert products
 * ```
 */
export function timeOwnKernels<T>(fn: () => T): { result: T; ms: Map<string, number> } {
  const ms = new Map<string, number>();
  if (instance === null || timed !== null) return { result: fn(), ms };
  const raw = instance.exports as unknown as Record<string, unknown>;
  const wrapped: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (typeof value !== 'function') continue;
    const f = value as (...args: unknown[]) => unknown;
    wrapped[name] = (...args: unknown[]) => {
      const t0 = performance.now();
      const out = f(...args);
      ms.set(name, (ms.get(name) ?? 0) + performance.now() - t0);
      return out;
    };
  }
  timed = wrapped as unknown as WasmKernelExports;
  try {
    return { result: fn(), ms };
  } finally {
    timed = null;
  }
}

/** Byte offset of a tensor's data in the wasm heap. */
export function heapOffset(backend: BackendWasm, t: TensorInfo): number {
  return (backend as unknown as { dataIdMap: { get(id: object): { memoryOffset: number } } }).dataIdMap.get(
    t.dataId,
  ).memoryOffset;
}

const originals = new Map<string, KernelConfig>();

/** The registered wasm kernel `name`, unless it is missing or already Switchyard's replacement. */
export function unreplacedWasmKernel(name: string): KernelConfig | undefined {
  const kernel = tf.getKernel(name, 'wasm') as (KernelConfig & { __switchyard?: boolean }) | undefined;
  return kernel && !kernel.__switchyard ? kernel : undefined;
}

/** Registers `kernelFunc` in place of `original`, marked so that it is replaced only once. */
export function replaceWasmKernel(original: KernelConfig, kernelFunc: KernelFunc): void {
  originals.set(original.kernelName, original);
  tf.unregisterKernel(original.kernelName, 'wasm');
  tf.registerKernel({ ...original, kernelFunc, __switchyard: true } as KernelConfig);
}

/** The kernel that Switchyard's wasm replacement of `name` took the place of (for benchmarks). */
export function originalWasmKernel(name: string): KernelConfig | undefined {
  return originals.get(name);
}
