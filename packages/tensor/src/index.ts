/**
 * @switchyard/tensor: backend resolution, the op toolkit MoE needs (gradients that work on every
 * backend), seeded RNG, memory scopes, argument checks and errors.
 *
 * @packageDocumentation
 */
import * as tf from '@tensorflow/tfjs';

export type {
  DataType,
  Rank,
  Scalar,
  Tensor,
  Tensor1D,
  Tensor2D,
  Tensor3D,
  Tensor4D,
  TensorLike,
} from '@tensorflow/tfjs';
export type { BackendAttempt, BackendInfo, BackendName, InitBackendOptions } from './backend';

export { availableBackends, BACKEND_NAMES, backendInfo, initBackend } from './backend';
export type { ErrorCode, SwitchyardErrorOptions } from './errors';
export { describeValue, ERROR_CODES, invalidArgument, isSwitchyardError, SwitchyardError } from './errors';
export type { CustomGradResult, GradSave, InputGrads } from './grad';
export { customGrad } from './grad';
export type { GradCheckEntry, GradCheckOptions, GradCheckResult } from './gradcheck';
export { checkGradients } from './gradcheck';
export type { GroupedMatMulOptions } from './grouped';
export { groupedMatMul, groupedMatMulIsFused, groupedMatMulTransposeA } from './grouped';
export { concatFloat32, concatInt32, copyRows, readInto } from './host';
export { timeOwnKernels } from './internal/wasm-kernels';
export type { TensorContainer } from './memory';
export { disposeAll, expectNoLeaks, liveTensors, scoped } from './memory';
export type { GeluApproximation, IndexLike, TopKResult } from './ops';
export {
  type AdamWCoefficients,
  adamWUpdate,
  batchMatMul,
  gatherRows,
  gelu,
  indexAdd,
  logSoftmax,
  logSumExp,
  matMul,
  oneHot,
  relu,
  segmentSum,
  sigmoid,
  silu,
  softmax,
  swiglu,
  swigluGrad,
  takeAlongLastAxis,
  topK,
} from './ops';
export type { RngState } from './rng';
export { Rng } from './rng';
export type { RangeOptions } from './validate';
export { checkDtype, checkFinite, checkInt, checkNumber, checkOneOf, checkShape } from './validate';
/** The TensorFlow.js namespace Switchyard runs on; import tensors and ops from here so every package shares one engine. */
export { tf };
