import { transpose4x4 } from './simd';

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
            transpose4x4(src + <usize>c * 4, inStride, ob + <usize>c * outStride + <usize>r * 4, outStride);
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
