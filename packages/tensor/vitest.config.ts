import { defineSwitchyardTestConfig } from '../../vitest.shared';

export default defineSwitchyardTestConfig();
