// Transposes that swap two adjacent groups of axes: out[b][c][r][i] = x[b][r][c][i] for `batch`
// leading planes, `rows` x `cols` swapped and `inner` contiguous elements moved together. Element
// size is 4 bytes (f32 and i32 alike).

const TILE: i32 = 16;

export function transpose(x: usize, out: usize, batch: i32, rows: i32, cols: i32, inner: i32): void {
  if (inner === 1) transposeScalar(x, out, batch, rows, cols);
  else transposeBlocks(x, out, batch, rows, cols, inner);
}

function transposeScalar(x: usize, out: usize, batch: i32, rows: i32, cols: i32): void {
  const plane = <usize>rows * <usize>cols * 4;
  const inStride = <usize>cols * 4;
  const outStride = <usize>rows * 4;
  const rows4 = rows & ~3;
  const cols4 = cols & ~3;
  for (let b = 0; b < batch; b++) {
    const xb = x + <usize>b * plane;
    const ob = out + <usize>b * plane;
    for (let r0 = 0; r0 < rows; r0 += TILE) {
      const r1 = min(r0 + TILE, rows4);
      for (let c0 = 0; c0 < cols; c0 += TILE) {
        const c1 = min(c0 + TILE, cols4);
        // 4 x 4 blocks through registers.
        for (let r = r0; r < r1; r += 4) {
          const src = xb + <usize>r * inStride;
          for (let c = c0; c < c1; c += 4) {
            const p = src + <usize>c * 4;
            const a0 = v128.load(p);
            const a1 = v128.load(p + inStride);
            const a2 = v128.load(p + 2 * inStride);
            const a3 = v128.load(p + 3 * inStride);
            const t0 = v128.shuffle<f32>(a0, a1, 0, 4, 1, 5);
            const t1 = v128.shuffle<f32>(a0, a1, 2, 6, 3, 7);
            const t2 = v128.shuffle<f32>(a2, a3, 0, 4, 1, 5);
            const t3 = v128.shuffle<f32>(a2, a3, 2, 6, 3, 7);
            const q = ob + <usize>c * outStride + <usize>r * 4;
            v128.store(q, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
            v128.store(q + outStride, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
            v128.store(q + 2 * outStride, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
            v128.store(q + 3 * outStride, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
          }
        }
      }
    }
    // The edges: rows past the last multiple of 4, and columns past it.
    for (let r = 0; r < rows; r++) {
      const src = xb + <usize>r * inStride;
      const cFrom = r < rows4 ? cols4 : 0;
      for (let c = cFrom; c < cols; c++) {
        store<u32>(ob + <usize>c * outStride + <usize>r * 4, load<u32>(src + <usize>c * 4));
      }
    }
  }
}

function transposeBlocks(x: usize, out: usize, batch: i32, rows: i32, cols: i32, inner: i32): void {
  const block = <usize>inner * 4;
  const plane = <usize>rows * <usize>cols * block;
  for (let b = 0; b < batch; b++) {
    const xb = x + <usize>b * plane;
    const ob = out + <usize>b * plane;
    for (let r = 0; r < rows; r++) {
      const src = xb + <usize>r * <usize>cols * block;
      for (let c = 0; c < cols; c++) {
        memory.copy(ob + (<usize>c * <usize>rows + <usize>r) * block, src + <usize>c * block, block);
      }
    }
  }
}
