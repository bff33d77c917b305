/**
 * @switchyard/plan: plans without tensors. Pipeline schedules (GPipe, 1F1B, interleaved 1F1B,
 * ZB-H1, DualPipe, DualPipeV, 1F1B with EP overlap) as plain data, and the validator that replays
 * them. No TensorFlow.js and no Node-only imports: it bundles for the browser.
 *
 * @packageDocumentation
 */
export type { PlanErrorCode } from './errors';
export { isPlanError, PLAN_ERROR_CODES, PlanError } from './errors';
export type {
  OpCosts,
  OverlapOp,
  Schedule,
  ScheduleKind,
  ScheduleOp,
  ScheduleRequest,
  StageWork,
  Transfer,
  WorkKind,
} from './schedule/types';
export { SCHEDULE_KINDS } from './schedule/types';
