// Switchyard's own wasm kernels: the committed module matches its sources, runs only on wasm, and
// every kernel it replaces gives tfjs's results bit for bit (checked against the cpu backend's
// kernels, which are plain JavaScript).
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tf } from './index';
import { swapOfGroups } from './internal/kernels';
import { timeOwnKernels, wasmKernels } from './internal/wasm-kernels';
import { expectNoLeaks } from './memory';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const onWasm = tf.getBackend() === 'wasm';

/** Reference transpose in plain JavaScript. */
function transposeRef(values: Float32Array, shape: number[], perm: number[]): Float32Array {
  const outShape = perm.map((p) => shape[p]!);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  const out = new Float32Array(values.length);
  const idx = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    let rest = o;
    for (let d = outShape.length - 1; d >= 0; d--) {
      idx[d] = rest % outShape[d]!;
      rest = Math.floor(rest / outShape[d]!);
    }
    let src = 0;
    for (let d = 0; d < perm.length; d++) src += idx[d]! * strides[perm[d]!]!;
    out[o] = values[src]!;
  }
  return out;
}

describe('wasm kernel module', () => {
  it('is built from the committed sources', () => {
    const out = execFileSync(process.execPath, [join(root, 'scripts/build-wasm.mjs'), '--check'], {
      encoding: 'utf8',
    });
    expect(out).toMatch(/up to date/);
  }, 60_000);

  it('is installed on wasm and absent elsewhere', () => {
    expect(wasmKernels() !== null).toBe(onWasm);
  });
});

describe('swapOfGroups', () => {
  it('recognises swaps of adjacent axis groups', () => {
    expect(swapOfGroups([3, 4], [1, 0])).toEqual({ batch: 1, rows: 3, cols: 4, inner: 1 });
    expect(swapOfGroups([2, 3, 4, 5], [0, 2, 1, 3])).toEqual({ batch: 2, rows: 3, cols: 4, inner: 5 });
    expect(swapOfGroups([2, 3, 4, 5], [2, 3, 0, 1])).toEqual({ batch: 1, rows: 6, cols: 20, inner: 1 });
    expect(swapOfGroups([2, 3, 4], [0, 2, 1])).toEqual({ batch: 2, rows: 3, cols: 4, inner: 1 });
    expect(swapOfGroups([2, 3, 4], [1, 2, 0])).toEqual({ batch: 1, rows: 2, cols: 12, inner: 1 });
  });
  it('rejects identity and other permutations', () => {
    expect(swapOfGroups([2, 3], [0, 1])).toBeNull();
    expect(swapOfGroups([2, 3, 4], [2, 1, 0])).toBeNull();
    expect(swapOfGroups([2, 3, 4, 5], [1, 0, 3, 2])).toBeNull();
  });
});

describe('Transpose', () => {
  const cases: [number[], number[]][] = [
    [
      [37, 53],
      [1, 0],
    ],
    [
      [1024, 128],
      [1, 0],
    ],
    [
      [3, 65, 33],
      [0, 2, 1],
    ],
    [
      [2, 5, 3, 7],
      [0, 2, 1, 3],
    ],
    [
      [2, 5, 3, 7],
      [2, 3, 0, 1],
    ],
    [
      [4, 3, 2],
      [2, 1, 0],
    ],
    [
      [0, 5],
      [1, 0],
    ],
  ];
  for (const [shape, perm] of cases) {
    it(`matches the reference for ${JSON.stringify(shape)} by ${JSON.stringify(perm)}`, async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const values = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 1000);
      const expected = transposeRef(values, shape, perm);
      await expectNoLeaks(() =>
        tf.tidy(() => {
          expect(tf.transpose(tf.tensor(values, shape), perm).dataSync()).toEqual(expected);
          const ints = tf.transpose(tf.tensor(Int32Array.from(values), shape, 'int32'), perm);
          expect(ints.dataSync()).toEqual(Int32Array.from(expected));
        }),
      );
    });
  }
});

describe('timeOwnKernels', () => {
  it("times Switchyard's kernels on wasm and nothing elsewhere", () => {
    const x = tf.randomNormal([64, 48]);
    const { result, ms } = timeOwnKernels(() => tf.transpose(x));
    expect(result.shape).toEqual([48, 64]);
    if (onWasm) expect(ms.get('transpose')).toBeGreaterThanOrEqual(0);
    else expect(ms.size).toBe(0);
    // Outside the call the kernels run unwrapped: nothing more is added.
    const before = ms.get('transpose');
    tf.transpose(x).dispose();
    expect(ms.get('transpose')).toBe(before);
    tf.dispose([x, result]);
  });
});
