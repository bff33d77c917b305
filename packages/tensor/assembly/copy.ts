// Row copies and row sums inside the heap, shared by the data-movement and reduction kernels.

/** Copies `bytes` (a multiple of 4) from `src` to `dst`; the ranges do not overlap. */
export function copyRun(dst: usize, src: usize, bytes: usize): void {
  if (bytes >= 256) {
    memory.copy(dst, src, bytes);
    return;
  }
  let i: usize = 0;
  for (; i + 16 <= bytes; i += 16) v128.store(dst + i, v128.load(src + i));
  for (; i < bytes; i += 4) store<u32>(dst + i, load<u32>(src + i));
}

/** dst[j] += src[j] over `bytes` (a multiple of 4) of f32 or i32 (wrapping) elements. */
export function addRow<T>(dst: usize, src: usize, bytes: usize): void {
  const bytes4 = bytes & ~15;
  let j: usize = 0;
  if (isFloat<T>()) {
    for (; j < bytes4; j += 16) v128.store(dst + j, f32x4.add(v128.load(dst + j), v128.load(src + j)));
    for (; j < bytes; j += 4) store<f32>(dst + j, load<f32>(dst + j) + load<f32>(src + j));
  } else {
    for (; j < bytes4; j += 16) v128.store(dst + j, i32x4.add(v128.load(dst + j), v128.load(src + j)));
    for (; j < bytes; j += 4) store<i32>(dst + j, load<i32>(dst + j) + load<i32>(src + j));
  }
}
