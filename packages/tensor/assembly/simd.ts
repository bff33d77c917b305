// Register-level helpers shared by the kernels.

/**
 * Transposes one 4 x 4 block of floats through registers: row i of the block at `src` (rows
 * `srcStride` bytes apart) becomes column i of the block at `dst` (rows `dstStride` bytes apart).
 */
export function transpose4x4(src: usize, srcStride: usize, dst: usize, dstStride: usize): void {
  const a0 = v128.load(src);
  const a1 = v128.load(src + srcStride);
  const a2 = v128.load(src + 2 * srcStride);
  const a3 = v128.load(src + 3 * srcStride);
  const t0 = v128.shuffle<f32>(a0, a1, 0, 4, 1, 5);
  const t1 = v128.shuffle<f32>(a0, a1, 2, 6, 3, 7);
  const t2 = v128.shuffle<f32>(a2, a3, 0, 4, 1, 5);
  const t3 = v128.shuffle<f32>(a2, a3, 2, 6, 3, 7);
  v128.store(dst, v128.shuffle<f32>(t0, t2, 0, 1, 4, 5));
  v128.store(dst + dstStride, v128.shuffle<f32>(t0, t2, 2, 3, 6, 7));
  v128.store(dst + 2 * dstStride, v128.shuffle<f32>(t1, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * dstStride, v128.shuffle<f32>(t1, t3, 2, 3, 6, 7));
}
