import type { Redis } from 'ioredis';
import type { Config, RateLimitsConfig } from '../config/config.ts';
import { RATE_LIMIT_DEFAULTS } from '../config/schema.ts';
import { checkRegistryHost } from '../image-ref/registry-host.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { SharedBudget, type BudgetTimings, type HostLimits } from './budget.ts';
import { builtInLimits } from './defaults.ts';
import { RegistryGate, type GateEvents, type RegistryGateOptions } from './gate.ts';
import { gateMetrics } from './metrics.ts';

/**
 * The request gates of one worker process, one per registry host, created on first use and shared by
 * every job of the process, as the registry clients are.
 */

export interface RegistryGatesOptions {
  redis: Redis;
  /** Key prefix of the fleet (`redis.keyPrefix`). */
  keyPrefix: string;
  /** The `rateLimits` section of the configuration; absent means the built-in budgets. */
  rateLimits?: RateLimitsConfig | undefined;
  events?: GateEvents;
  /** Durations of the shared budgets; tests shorten them. */
  timings?: Partial<BudgetTimings>;
  /** Settings of every gate besides its budget; tests shorten the polling and set the AIMD rules. */
  gate?: Partial<Omit<RegistryGateOptions, 'budget' | 'events'>>;
}

export class RegistryGates {
  private readonly options: RegistryGatesOptions;
  private readonly gates = new Map<string, RegistryGate>();

  constructor(options: RegistryGatesOptions) {
    this.options = options;
  }

  /** Returns the gate of `registry` (a normalised host[:port]). */
  gateFor(registry: string): RegistryGate {
    let gate = this.gates.get(registry);
    if (!gate) {
      const { redis, keyPrefix, rateLimits, timings, events } = this.options;
      const budget = new SharedBudget({ redis, keyPrefix, registry, limits: hostLimits(registry, rateLimits), ...(timings ? { timings } : {}) });
      const maxWaitMs = (rateLimits?.maxWaitSeconds ?? RATE_LIMIT_DEFAULTS.maxWaitSeconds) * 1000;
      gate = new RegistryGate({ maxWaitMs, ...this.options.gate, budget, ...(events ? { events } : {}) });
      this.gates.set(registry, gate);
    }
    return gate;
  }

  /** Stops the lease renewal of every gate. */
  close(): void {
    for (const gate of this.gates.values()) gate.close();
  }
}

/**
 * Returns the budget of `registry`: its built-in values, with the keys that its `rateLimits.hosts`
 * entry sets in their place. Hosts are compared after normalisation, so an entry for
 * `registry-1.docker.io` applies to `docker.io`.
 */
export function hostLimits(registry: string, rateLimits?: RateLimitsConfig): HostLimits {
  const host = normalised(registry);
  const entry = rateLimits?.hosts.find((candidate) => normalised(candidate.host) === host);
  const limits = { ...builtInLimits(host) };
  if (entry?.requestsPerSecond !== undefined) limits.requestsPerSecond = entry.requestsPerSecond;
  if (entry?.burst !== undefined) limits.burst = entry.burst;
  if (entry?.maxConcurrent !== undefined) limits.maxConcurrent = entry.maxConcurrent;
  if (entry?.pullQuotaFloor !== undefined) limits.pullQuotaFloor = entry.pullQuotaFloor;
  if (entry?.minRequestsPerSecond !== undefined) limits.minRequestsPerSecond = entry.minRequestsPerSecond;
  if (entry?.rateRecoveryPerSecond !== undefined) limits.rateRecoveryPerSecond = entry.rateRecoveryPerSecond;
  return limits;
}

/**
 * Creates the gates of a worker process from its configuration, reporting to `metrics`; undefined
 * when `rateLimits.enabled` is false.
 */
export function createRegistryGates(options: { config: Config; redis: Redis; metrics: Metrics }): RegistryGates | undefined {
  const { config, redis, metrics } = options;
  if (config.rateLimits?.enabled === false) return undefined;
  return new RegistryGates({ redis, keyPrefix: config.redis.keyPrefix, rateLimits: config.rateLimits, events: gateMetrics(metrics) });
}

function normalised(host: string): string {
  return checkRegistryHost(host).host ?? host.toLowerCase();
}
