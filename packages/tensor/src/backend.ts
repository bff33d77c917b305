/**
 * Backend resolution: the fastest TensorFlow.js backend that loads, unless the user names one.
 *
 * Order: `tensorflow` (native TensorFlow through @tensorflow/tfjs-node-gpu, CUDA; else through
 * @tensorflow/tfjs-node, native CPU), then `wasm` (SIMD), then `cpu` (pure JS). The native packages
 * are optional peer dependencies: install one and the same code runs on it.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { SwitchyardError } from './errors';
import { installKernelFixes } from './internal/kernels';
import { prepareWasmKernels } from './internal/wasm-kernels';

/** Names a user can pass as `backend` or `SWITCHYARD_BACKEND`. */
export const BACKEND_NAMES = ['tensorflow', 'wasm', 'cpu'] as const;
/** A backend Switchyard can run on. */
export type BackendName = (typeof BACKEND_NAMES)[number];

/** One attempt made while resolving the backend. */
export interface BackendAttempt {
  readonly backend: BackendName;
  /** The npm package tried. */
  readonly package: string;
  readonly ok: boolean;
  /** Why it failed, when it did. */
  readonly error?: string;
}

/** What {@link initBackend} chose and why. */
export interface BackendInfo {
  readonly name: BackendName;
  /** The npm package providing the backend. */
  readonly package: string;
  /** True when tensors live on a GPU (tfjs-node-gpu). */
  readonly isGpu: boolean;
  /** One sentence: why this backend was chosen. */
  readonly reason: string;
  /** Every package tried, in order. */
  readonly attempts: readonly BackendAttempt[];
}

/** Options for {@link initBackend}. */
export interface InitBackendOptions {
  /** Backend to use; `auto` (default) takes SWITCHYARD_BACKEND, else the fastest that loads. */
  readonly backend?: BackendName | 'auto';
}

const NATIVE_PACKAGES = [
  { pkg: '@tensorflow/tfjs-node-gpu', isGpu: true },
  { pkg: '@tensorflow/tfjs-node', isGpu: false },
] as const;

/** Each native package is imported at most once per process: a failed import must not be retried. */
const nativeAttempts = new Map<string, Promise<BackendAttempt>>();
let current: BackendInfo | undefined;

async function tryNative(pkg: string): Promise<BackendAttempt> {
  let attempt = nativeAttempts.get(pkg);
  if (!attempt) {
    attempt = (async (): Promise<BackendAttempt> => {
      try {
        const name = pkg; // a variable keeps bundlers from resolving the optional peer at build time
        await import(/* @vite-ignore */ name);
        const ok = tf.findBackend('tensorflow') !== null && (await tf.setBackend('tensorflow'));
        return ok
          ? { backend: 'tensorflow', package: pkg, ok: true }
          : {
              backend: 'tensorflow',
              package: pkg,
              ok: false,
              error: 'loaded but did not register a working backend',
            };
      } catch (e) {
        const msg = e instanceof Error ? e.message.split('\n')[0]! : String(e);
        return { backend: 'tensorflow', package: pkg, ok: false, error: msg };
      }
    })();
    nativeAttempts.set(pkg, attempt);
  }
  return attempt;
}

/**
 * TensorFlow.js's cpu backend prints an advertisement for tfjs-node on its first tensor write in
 * Node ("Hi, looks like you are running TensorFlow.js in Node.js..."). Switchyard picks cpu on
 * purpose and says why in {@link BackendInfo.reason}, so that first write happens here, with
 * TensorFlow.js's own warnings muted for its duration only.
 */
function writeFirstCpuTensorQuietly(): void {
  const env = tf.env();
  const prod = env.getBool('PROD');
  env.set('PROD', true);
  try {
    tf.scalar(0).dispose();
  } finally {
    env.set('PROD', prod);
  }
}

async function trySimple(name: 'wasm' | 'cpu'): Promise<BackendAttempt> {
  const pkg = name === 'wasm' ? '@tensorflow/tfjs-backend-wasm' : '@tensorflow/tfjs (cpu)';
  try {
    const ok = await tf.setBackend(name);
    if (ok && name === 'cpu') writeFirstCpuTensorQuietly();
    if (ok && name === 'wasm') await prepareWasmKernels();
    return ok
      ? { backend: name, package: pkg, ok }
      : { backend: name, package: pkg, ok, error: 'failed to initialise' };
  } catch (e) {
    return { backend: name, package: pkg, ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

function parseRequested(options: InitBackendOptions): { name: BackendName | 'auto'; from: string } {
  if (options.backend !== undefined && options.backend !== 'auto')
    return { name: options.backend, from: 'option' };
  const env = process.env.SWITCHYARD_BACKEND?.trim();
  if (env) return { name: env as BackendName, from: 'SWITCHYARD_BACKEND' };
  return { name: 'auto', from: 'default' };
}

function installHint(failed: readonly BackendAttempt[]): string {
  return failed
    .map((a) => `  - ${a.package}: ${a.error ?? 'failed'}`)
    .concat([
      '  To use native TensorFlow, install @tensorflow/tfjs-node (CPU) or @tensorflow/tfjs-node-gpu (CUDA 11.8 + cuDNN 8)',
      '  next to Switchyard: `pnpm add @tensorflow/tfjs-node-gpu`. Its install step downloads libtensorflow.',
    ])
    .join('\n');
}

/**
 * Selects and initialises the backend; safe to call repeatedly (later calls with the same request
 * return the current backend). Installs Switchyard's kernel and gradient fixes on it.
 *
 * When to use: once at program start, before creating tensors.
 *
 * @example
 * ```ts
 * const info = await initBackend();           // fastest available, or SWITCHYARD_BACKEND
 * const wasm = await initBackend({ backend: 'wasm' });
 * const { name, isGpu, reason } = wasm;
 * ```
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<BackendInfo> {
  const req = parseRequested(options);
  if (req.name !== 'auto' && !(BACKEND_NAMES as readonly string[]).includes(req.name)) {
    throw new SwitchyardError(
      'BACKEND_UNAVAILABLE',
      `backend ${JSON.stringify(req.name)} (from ${req.from}) is not known; expected one of ${BACKEND_NAMES.join(', ')} or auto`,
      { details: { requested: req.name } },
    );
  }
  if (current && (req.name === 'auto' || req.name === current.name) && tf.getBackend() === current.name) {
    return current;
  }

  const attempts: BackendAttempt[] = [];
  const order: BackendName[] = req.name === 'auto' ? ['tensorflow', 'wasm', 'cpu'] : [req.name];
  for (const name of order) {
    if (name === 'tensorflow') {
      for (const { pkg, isGpu } of NATIVE_PACKAGES) {
        const a = await tryNative(pkg);
        attempts.push(a);
        if (a.ok) return finish(name, pkg, isGpu, req, attempts);
      }
    } else {
      const a = await trySimple(name);
      attempts.push(a);
      if (a.ok) return finish(name, a.package, false, req, attempts);
    }
  }
  const failed = attempts.filter((a) => !a.ok);
  throw new SwitchyardError(
    'BACKEND_UNAVAILABLE',
    `backend ${JSON.stringify(req.name)} (from ${req.from}) could not be loaded. Available here: ${(await availableBackends()).join(', ') || 'none'}.\n${installHint(failed)}`,
    { details: { requested: req.name, attempts } },
  );
}

function finish(
  name: BackendName,
  pkg: string,
  isGpu: boolean,
  req: { name: string; from: string },
  attempts: BackendAttempt[],
): BackendInfo {
  installKernelFixes(name);
  const skipped = attempts.filter((a) => !a.ok).map((a) => a.package);
  const reason =
    req.from === 'default'
      ? `fastest backend that loaded${skipped.length ? ` (not available: ${skipped.join(', ')})` : ''}`
      : `requested by ${req.from}`;
  current = { name, package: pkg, isGpu, reason, attempts };
  return current;
}

/**
 * Which backend is in use, why, and whether it is a GPU.
 * Throws BACKEND_NOT_READY before {@link initBackend} has run.
 */
export function backendInfo(): BackendInfo {
  if (!current) {
    throw new SwitchyardError(
      'BACKEND_NOT_READY',
      'backendInfo() was called before initBackend(); await initBackend() first',
    );
  }
  return current;
}

/**
 * Lists the backends that can load in this process (imports each native package at most once).
 * Leaves the current backend selected.
 */
export async function availableBackends(): Promise<BackendName[]> {
  const out: BackendName[] = [];
  const before = tf.getBackend();
  for (const { pkg } of NATIVE_PACKAGES) {
    if ((await tryNative(pkg)).ok) {
      out.push('tensorflow');
      break;
    }
  }
  if (tf.findBackendFactory('wasm')) out.push('wasm');
  out.push('cpu');
  if (before && tf.getBackend() !== before) await tf.setBackend(before);
  return out;
}
