// Switchyard's wasm kernels, compiled by AssemblyScript (`pnpm --filter @switchyard/tensor build:wasm`)
// into src/internal/wasm-kernels.generated.ts. The module imports the tfjs wasm backend's own memory
// and works in place on its tensors: every pointer argument is a byte offset into that heap, given
// by the caller (tensor data or scratch from the backend's allocator). The module has no data
// segments, no heap and no start function (the build checks), so it never writes anything but the
// outputs it is given.

export { adamw } from './adamw';
export { expF32 } from './elementwise';
export { copyBlocks, firstIndexOutOfRange, gather, segmentSumF32, segmentSumI32 } from './gather';
export { gemm, gemmScratchFloats, groupedGemm, groupedGemmTN } from './gemm';
export { sumColumnsF32, sumColumnsI32 } from './reduce';
export { swigluBackward, swigluForward } from './swiglu';
export { transpose } from './transpose';
