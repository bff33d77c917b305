import { defineSwitchyardTestConfig } from '../../vitest.shared.ts';

// No tensors here: the tests need no TensorFlow.js backend.
export default defineSwitchyardTestConfig({ tensors: false });
