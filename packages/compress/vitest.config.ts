import { defineSwitchyardTestConfig } from '../../vitest.shared.ts';

export default defineSwitchyardTestConfig();
