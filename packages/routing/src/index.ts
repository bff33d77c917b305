/**
 * @switchyard/routing: routers (softmax top-k, Switch, GShard, sigmoid + bias, group-limited,
 * expert choice, hierarchical, forced-balanced), capacity and dropping, and the RoutingPlan they
 * all return.
 *
 * @packageDocumentation
 */
export type { CapacityResult, DropOptions } from './capacity';
export { computeCapacity, dropByCapacity, positionsInExperts } from './capacity';
export type {
  BalancedAssignment,
  BalancedRouterConfig,
  DecideOn,
  DropPolicy,
  EvalRouting,
  ExpertChoiceRouterConfig,
  GroupLimitedConfig,
  GShardRouterConfig,
  HierarchicalRouterConfig,
  ResolvedRouterConfig,
  RouterConfig,
  RouterConfigBase,
  RouterInit,
  RouterType,
  SigmoidRouterConfig,
  SwitchRouterConfig,
  TopKRouterConfig,
} from './config';
export { DEVICE_ROUTER_TYPES, defaultRouterConfig, ROUTER_TYPES, resolveRouterConfig } from './config';
export { createRouter, disposeRoutingPlan } from './router';
export { expertChoiceCapacity } from './routers/expertChoice';
export { UNEVALUATED_LOGIT } from './routers/hierarchical';
export type * from './types';
