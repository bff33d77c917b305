// Contiguous copies inside the heap, shared by the data-movement kernels.

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
