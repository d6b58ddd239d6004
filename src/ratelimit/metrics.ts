import type { Metrics } from '../metrics/metrics.ts';
import type { GateEvents } from './gate.ts';

/**
 * Returns gate events that update `metrics`: the concurrency window per host and kind, waits and their
 * seconds per host and reason, and the pull quota per host. 429 responses are counted where every
 * response is, in `mirrorfleet_registry_rate_limited_total`.
 */
export function gateMetrics(metrics: Metrics): GateEvents {
  return {
    onWindow: ({ registry, kind, limit }) => metrics.registryConcurrencyWindow.set({ registry: metrics.registryLabel(registry), kind }, limit),
    onWait: ({ registry, reason, phase, waitMs }) => {
      if (phase !== 'end') return;
      const labels = { registry: metrics.registryLabel(registry), reason };
      metrics.registryBudgetWaits.inc(labels);
      metrics.registryBudgetWaitSeconds.inc(labels, waitMs / 1000);
    },
    onQuota: ({ registry, remaining, paused }) => {
      const labels = { registry: metrics.registryLabel(registry) };
      metrics.registryPullQuotaRemaining.set(labels, remaining);
      metrics.registryPullsPaused.set(labels, paused ? 1 : 0);
    },
  };
}
