/**
 * createRouter: builds any router from its config, owns its variables, and routes batches into a
 * RoutingPlan. disposeRoutingPlan releases a plan's tensors.
 *
 * Shape letters: T tokens, D model width, E experts, K slots per token, G groups.
 */
import { disposeAll, Rng, SwitchyardError, type Tensor2D, tf } from '@switchyard/tensor';
import { type ResolvedRouterConfig, type RouterConfig, resolveRouterConfig } from './config';
import { routeBalanced } from './routers/balanced';
import { routeExpertChoice } from './routers/expertChoice';
import { routeHierarchical } from './routers/hierarchical';
import { routeScored } from './routers/scored';
import type { RouteOptions, Router, RoutingPlan } from './types';

/** Initial router weights of shape [D, cols]: normal(0, initStd), Switch's truncated normal, or zeros. */
function initWeight(cfg: ResolvedRouterConfig, name: string, cols: number): tf.Variable {
  const D = cfg.dModel;
  const rng = new Rng(cfg.seed).fork(`router/${cfg.name ?? ''}/${name}`);
  const init = tf.tidy(() => {
    if (cfg.init === 'zeros') return tf.zeros([D, cols], 'float32');
    if (cfg.init === 'switch')
      return rng.truncatedNormalTensor([D, cols], 0, Math.sqrt(cfg.initScale / D), 2);
    return rng.normalTensor([D, cols], 0, cfg.initStd);
  });
  const v = tf.variable(init, true, cfg.name === undefined ? undefined : `${cfg.name}/${name}`, 'float32');
  init.dispose();
  return v;
}

class RouterImpl implements Router {
  readonly type: string;
  readonly numExperts: number;
  readonly k: number;
  readonly dModel: number;
  readonly variables: Readonly<Record<string, tf.Variable>>;
  /** The validated config with defaults filled in. */
  readonly config: ResolvedRouterConfig;
  private disposed = false;

  constructor(cfg: ResolvedRouterConfig) {
    this.config = cfg;
    this.type = cfg.type;
    this.numExperts = cfg.numExperts;
    this.dModel = cfg.dModel;
    this.k = cfg.type === 'expert-choice' ? (cfg.capacityFactor ?? 2) : cfg.k;
    if (cfg.type === 'hierarchical') {
      this.variables = {
        groupWeight: initWeight(cfg, 'groupWeight', cfg.numGroups),
        expertWeight: initWeight(cfg, 'expertWeight', cfg.numExperts),
      };
    } else if (cfg.type === 'balanced') {
      this.variables = {};
    } else {
      this.variables = { weight: initWeight(cfg, 'weight', cfg.numExperts) };
    }
  }

  route(xTD: Tensor2D, options: RouteOptions): RoutingPlan {
    if (this.disposed) {
      throw new SwitchyardError(
        'STATE_INVALID',
        `${this.type} router was disposed; Router.route() cannot run`,
      );
    }
    const cfg = this.config;
    const v = this.variables;
    switch (cfg.type) {
      case 'hierarchical':
        return routeHierarchical(cfg, v.groupWeight as Tensor2D, v.expertWeight as Tensor2D, xTD, options);
      case 'expert-choice':
        return routeExpertChoice(cfg, v.weight as Tensor2D, xTD, options);
      case 'balanced':
        return routeBalanced(cfg, xTD, options);
      default:
        return routeScored(cfg, v.weight as Tensor2D, xTD, options);
    }
  }

  numParams(): number {
    let n = 0;
    for (const v of Object.values(this.variables)) n += v.size;
    return n;
  }

  flopsPerToken(): number {
    const { dModel: D, numExperts: E, numGroups: G, groupK: P, type } = this.config;
    if (type === 'balanced') return 0;
    if (type === 'hierarchical') return 2 * (G * D + P * (E / G) * D);
    return 2 * E * D;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const v of Object.values(this.variables)) v.dispose();
  }
}

/**
 * Builds a router from its config: softmax top-k, Switch top-1, GShard top-2, sigmoid + bias,
 * expert choice, hierarchical, or the forced-balanced debug router; any token-choice scoring can
 * be group-limited. Throws a SwitchyardError naming the bad field, its expected range and the value.
 *
 * When to use: once per MoE layer; call `route(xTD, { training })` per batch and dispose the plan.
 *
 * @example
 * ```ts
 * const router = createRouter({ type: 'topk', numExperts: 8, k: 2, dModel: 64, capacityFactor: 1.25 });
 * const plan = router.route(xTD, { training: true });
 * // plan.topkIdxTK [T, 2], plan.topkWeightTK [T, 2] on the tape, plan.keptMaskTK, plan.countsE
 * disposeRoutingPlan(plan);
 * ```
 */
export function createRouter(config: RouterConfig): Router & { readonly config: ResolvedRouterConfig } {
  return new RouterImpl(resolveRouterConfig(config));
}

/**
 * Disposes every tensor a plan holds (its five tensors and any extras such as group logits).
 *
 * When to use: after the layer's backward pass, or right after routing in inference.
 *
 * @example
 * ```ts
 * const plan = router.route(xTD, { training: false });
 * disposeRoutingPlan(plan);
 * ```
 */
export function disposeRoutingPlan(plan: RoutingPlan): void {
  disposeAll(Object.values(plan));
}
