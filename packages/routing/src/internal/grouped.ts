/**
 * The hierarchical router's second level: for each (token, group) assignment a, the logits of the
 * group's experts, out[a] = x[tokenOf[a]] @ W[:, g*M .. (g+1)*M) with g = groupOf[a]. One product
 * per group over the rows that chose it, so the cost is N*D*M multiply-adds, not T*D*E.
 *
 * Shape letters: T tokens, D model width, E experts, G groups, M = E/G experts per group,
 * N assignments (T * groups per token), n_g assignments of group g.
 */
import { customGrad, gatherRows, matMul, type Tensor2D, tf } from '@switchyard/tensor';

/** Assignments sorted by group: `order[offsets[g] .. offsets[g+1])` are group g's assignments. */
export interface GroupedAssignments {
  /** Token of each assignment [N]. */
  readonly tokenOf: Int32Array;
  /** Group of each assignment [N]. */
  readonly groupOf: Int32Array;
  /** Assignment ids sorted by group (stable) [N]. */
  readonly order: Int32Array;
  /** Start of each group in `order` [G + 1]. */
  readonly offsets: Int32Array;
}

/** Sorts assignments by group with a counting sort (stable in assignment order). */
export function groupAssignments(tokenOf: Int32Array, groupOf: Int32Array, G: number): GroupedAssignments {
  const N = groupOf.length;
  const offsets = new Int32Array(G + 1);
  for (let a = 0; a < N; a++) offsets[groupOf[a]! + 1]! += 1;
  for (let g = 0; g < G; g++) offsets[g + 1]! += offsets[g]!;
  const cursor = offsets.slice(0, G);
  const order = new Int32Array(N);
  for (let a = 0; a < N; a++) order[cursor[groupOf[a]!]!++] = a;
  return { tokenOf, groupOf, order, offsets };
}

/**
 * Which implementation runs: `host` packs each group's rows and weight columns on the host and
 * runs one matMul per group (wasm's Slice and Gather kernels cost ~50 ns per element, more than
 * the products here); `ops` uses tensor ops only (gather, slice, concat), for device backends
 * where host reads are expensive. `auto` picks `host` on wasm and cpu.
 */
export type GroupedImpl = 'auto' | 'host' | 'ops';

/** Returns the in-group logits [N, M] in assignment order; differentiable in xTD and wDE. */
export function groupedLogits(
  xTD: Tensor2D,
  wDE: Tensor2D,
  asg: GroupedAssignments,
  G: number,
  impl: GroupedImpl = 'auto',
): Tensor2D {
  const backend = tf.getBackend();
  const useHost = impl === 'host' || (impl === 'auto' && (backend === 'wasm' || backend === 'cpu'));
  return useHost ? groupedLogitsHost(xTD, wDE, asg, G) : groupedLogitsOps(xTD, wDE, asg, G);
}

function groupedLogitsOps(xTD: Tensor2D, wDE: Tensor2D, asg: GroupedAssignments, G: number): Tensor2D {
  const [, D] = xTD.shape;
  const M = wDE.shape[1] / G;
  const N = asg.order.length;
  const sortedToken = new Int32Array(N);
  const invPerm = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    sortedToken[i] = asg.tokenOf[asg.order[i]!]!;
    invPerm[asg.order[i]!] = i;
  }
  const xSortedND = gatherRows(xTD, sortedToken) as Tensor2D;
  const parts: Tensor2D[] = [];
  for (let g = 0; g < G; g++) {
    const n = asg.offsets[g + 1]! - asg.offsets[g]!;
    if (n === 0) continue;
    const xg = tf.slice(xSortedND, [asg.offsets[g]!, 0], [n, D]);
    const wg = tf.slice(wDE, [0, g * M], [D, M]);
    parts.push(matMul(xg, wg) as Tensor2D);
  }
  const sortedNM = parts.length === 1 ? parts[0]! : (tf.concat(parts, 0) as Tensor2D);
  return gatherRows(sortedNM, invPerm) as Tensor2D;
}

/** Host packing + one product per group, with a hand-written gradient of the same structure. */
function groupedLogitsHost(xTD: Tensor2D, wDE: Tensor2D, asg: GroupedAssignments, G: number): Tensor2D {
  const [T, D] = xTD.shape;
  const E = wDE.shape[1];
  const M = E / G;
  const N = asg.order.length;
  const { order, offsets, tokenOf } = asg;

  const f = customGrad((x: tf.Tensor, w: tf.Tensor) => {
    const xs = x.dataSync() as Float32Array;
    const ws = w.dataSync() as Float32Array;
    const packedX: Float32Array[] = []; // group g: [n_g, D]
    const packedW: Float32Array[] = []; // group g: [D, M]
    const out = new Float32Array(N * M);
    for (let g = 0; g < G; g++) {
      const n = offsets[g + 1]! - offsets[g]!;
      const xg = new Float32Array(n * D);
      const wg = new Float32Array(D * M);
      packedX.push(xg);
      packedW.push(wg);
      if (n === 0) continue;
      for (let i = 0; i < n; i++) {
        const t = tokenOf[order[offsets[g]! + i]!]!;
        xg.set(xs.subarray(t * D, t * D + D), i * D);
      }
      for (let d = 0; d < D; d++) wg.set(ws.subarray(d * E + g * M, d * E + g * M + M), d * M);
      const yg = tf.tidy(() => tf.matMul(tf.tensor2d(xg, [n, D]), tf.tensor2d(wg, [D, M])));
      const ys = yg.dataSync();
      yg.dispose();
      for (let i = 0; i < n; i++) out.set(ys.subarray(i * M, i * M + M), order[offsets[g]! + i]! * M);
    }
    return {
      value: tf.tensor2d(out, [N, M], 'float32'),
      gradFunc: (dy) => {
        const dys = dy.dataSync() as Float32Array;
        const dx = new Float32Array(T * D);
        const dw = new Float32Array(D * E);
        for (let g = 0; g < G; g++) {
          const n = offsets[g + 1]! - offsets[g]!;
          if (n === 0) continue;
          const dyg = new Float32Array(n * M);
          for (let i = 0; i < n; i++) {
            const a = order[offsets[g]! + i]!;
            dyg.set(dys.subarray(a * M, a * M + M), i * M);
          }
          // Transposed operands are packed on the host: no transposed product runs.
          const wgT = transposeHost(packedW[g]!, D, M); // [M, D]
          const xgT = transposeHost(packedX[g]!, n, D); // [D, n]
          let dxg!: Float32Array;
          let dwg!: Float32Array;
          tf.tidy(() => {
            const dyT = tf.tensor2d(dyg, [n, M]);
            dxg = tf.matMul(dyT, tf.tensor2d(wgT, [M, D])).dataSync() as Float32Array;
            dwg = tf.matMul(tf.tensor2d(xgT, [D, n]), dyT).dataSync() as Float32Array;
          });
          for (let i = 0; i < n; i++) {
            const t = tokenOf[order[offsets[g]! + i]!]!;
            for (let d = 0; d < D; d++) dx[t * D + d]! += dxg[i * D + d]!;
          }
          for (let d = 0; d < D; d++) dw.set(dwg.subarray(d * M, d * M + M), d * E + g * M);
        }
        return [tf.tensor2d(dx, [T, D], 'float32'), tf.tensor2d(dw, [D, E], 'float32')];
      },
    };
  });
  return f(xTD, wDE);
}

function transposeHost(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]!;
  return out;
}
