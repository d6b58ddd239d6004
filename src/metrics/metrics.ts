import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Prometheus metrics of one mirrorfleet process (worker or API). Every process creates all of them and
 * serves the ones it records; a labelled metric shows no series until its first sample.
 *
 * Label values come from small sets: queue names, outcomes, error codes, HTTP methods and statuses,
 * route templates, and registry hosts, capped at
 * `MAX_REGISTRY_LABELS` distinct hosts per process. Image names, repositories, tags, digests and job ids
 * are never labels, and neither are credentials.
 */

/** Distinct registry hosts a process labels before it counts further hosts as `other`. */
export const MAX_REGISTRY_LABELS = 100;

/** Kinds of work the fleet avoided: a request coalesced into a waiting job, a copy skipped, a blob mounted or already there. */
export type DedupeKind = 'coalesced_job' | 'skipped_copy' | 'mounted_blob' | 'present_blob';

/** One retry of a registry request, as the registry client reports it through its `onRetry` option. */
export interface RegistryRetry {
  registry: string;
  /** Cause of the retry: an HTTP status such as `429` or `503`, or a network error code such as `ECONNRESET`. */
  reason: string;
  /** Milliseconds the client waits before the next attempt. */
  waitMs: number;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly registryLabels = new Set<string>();

  readonly jobs = new Counter({
    name: 'mirrorfleet_jobs_total',
    help: 'Job attempts by queue and outcome: a result such as copied or skipped, failed (for good), or retrying (the attempt failed and the job will be retried).',
    labelNames: ['queue', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly jobDuration = new Histogram({
    name: 'mirrorfleet_job_duration_seconds',
    help: 'Duration of job attempts in seconds, by queue and outcome (retrying for an attempt that will be retried).',
    labelNames: ['queue', 'outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900],
    registers: [this.registry],
  });

  readonly jobRetries = new Counter({
    name: 'mirrorfleet_job_retries_total',
    help: 'Job attempts that failed and will be retried, by queue and error code.',
    labelNames: ['queue', 'code'] as const,
    registers: [this.registry],
  });

  readonly jobFailures = new Counter({
    name: 'mirrorfleet_job_failures_total',
    help: 'Jobs that failed for good, by queue and error code.',
    labelNames: ['queue', 'code'] as const,
    registers: [this.registry],
  });

  readonly bytes = new Counter({
    name: 'mirrorfleet_bytes_total',
    help: 'Bytes of blobs and manifests pulled from sources and pushed to targets.',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });

  readonly blobs = new Counter({
    name: 'mirrorfleet_blobs_total',
    help: 'Blobs handled by mirror jobs, by result: copied, mounted (cross-repository) or present.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly dedupeHits = new Counter({
    name: 'mirrorfleet_dedupe_hits_total',
    help: 'Work avoided, by kind: coalesced_job (request joined a waiting job), skipped_copy, mounted_blob, present_blob.',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });

  private readonly registryResponses = new Counter({
    name: 'mirrorfleet_registry_requests_total',
    help: 'HTTP requests sent to registries, by registry host, method and status code.',
    labelNames: ['registry', 'method', 'status'] as const,
    registers: [this.registry],
  });

  readonly registryRateLimited = new Counter({
    name: 'mirrorfleet_registry_rate_limited_total',
    help: 'Responses with status 429 (Too Many Requests) by registry host; the client waits before each retry.',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  });

  readonly registryRetries = new Counter({
    name: 'mirrorfleet_registry_retries_total',
    help: 'Registry requests sent again after a transient failure, by registry host and reason (status or network error code).',
    labelNames: ['registry', 'reason'] as const,
    registers: [this.registry],
  });

  readonly registryRetryWait = new Counter({
    name: 'mirrorfleet_registry_retry_wait_seconds_total',
    help: 'Seconds spent waiting before registry retries, by registry host and reason; reason 429 is rate limiting.',
    labelNames: ['registry', 'reason'] as const,
    registers: [this.registry],
  });

  readonly registryConcurrencyWindow = new Gauge({
    name: 'mirrorfleet_registry_concurrency_window',
    help: "Requests this process may have in flight at once, by registry host and kind (manifest-read, blob-read, upload); the adaptive (AIMD) window.",
    labelNames: ['registry', 'kind'] as const,
    registers: [this.registry],
  });

  readonly registryBudgetWaits = new Counter({
    name: 'mirrorfleet_registry_budget_waits_total',
    help: 'Registry requests that waited for the request budget, by registry host and reason (window, not-before, quota, concurrency, rate).',
    labelNames: ['registry', 'reason'] as const,
    registers: [this.registry],
  });

  readonly registryBudgetWaitSeconds = new Counter({
    name: 'mirrorfleet_registry_budget_wait_seconds_total',
    help: 'Seconds registry requests waited for the request budget, by registry host and reason.',
    labelNames: ['registry', 'reason'] as const,
    registers: [this.registry],
  });

  readonly registryPullQuotaRemaining = new Gauge({
    name: 'mirrorfleet_registry_pull_quota_remaining',
    help: 'Last RateLimit-Remaining value a registry host sent (pulls left in its window).',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  });

  readonly registryPullsPaused = new Gauge({
    name: 'mirrorfleet_registry_pulls_paused',
    help: '1 while manifest pulls from a registry host pause because its RateLimit-Remaining is below the configured floor, else 0.',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  });

  /**
   * Counts one registry response. A 429 also counts in `mirrorfleet_registry_rate_limited_total`. Hosts
   * beyond the first `MAX_REGISTRY_LABELS` are labelled `other`, because producers choose source hosts.
   */
  readonly registryRequests = {
    inc: (labels: { registry: string; method: string; status: string }, value = 1): void => {
      const registry = this.registryLabel(labels.registry);
      this.registryResponses.inc({ registry, method: labels.method, status: labels.status }, value);
      if (labels.status === '429') this.registryRateLimited.inc({ registry }, value);
    },
  };

  readonly queueJobs = new Gauge({
    name: 'mirrorfleet_queue_jobs',
    help: 'Jobs in each queue by state, sampled by one process of the fleet at a time.',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });

  readonly queueOldestWaitingAge = new Gauge({
    name: 'mirrorfleet_queue_oldest_waiting_job_age_seconds',
    help: 'Seconds since the oldest waiting job of each queue was enqueued (0 when none waits), sampled by one process at a time.',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  // NOTE: the cleanup worker records neither of these two yet, and its results carry no sizes to sum.
  readonly imagesDeleted = new Counter({
    name: 'mirrorfleet_images_deleted_total',
    help: 'Images (manifests) deleted by cleanup jobs, by mirror registry host.',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  });

  readonly deletedBytes = new Counter({
    name: 'mirrorfleet_deleted_bytes_total',
    help: 'Bytes of manifests and blobs that deleted images no longer hold, by mirror registry host; the registry frees them at its own garbage collection.',
    labelNames: ['registry'] as const,
    registers: [this.registry],
  });

  readonly jobsEnqueued = new Counter({
    name: 'mirrorfleet_api_jobs_enqueued_total',
    help: 'Enqueue requests the HTTP API accepted, by queue; a request coalesced into a waiting job counts too.',
    labelNames: ['queue'] as const,
    registers: [this.registry],
  });

  readonly apiRequests = new Counter({
    name: 'mirrorfleet_api_requests_total',
    help: 'HTTP API requests by method, route template and status code.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });

  readonly apiRequestDuration = new Histogram({
    name: 'mirrorfleet_api_request_duration_seconds',
    help: 'HTTP API request duration in seconds, by method and route template; long-poll waits included.',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'mirrorfleet_' });
  }

  /**
   * Records one registry retry; the worker process passes `(event) => metrics.recordRegistryRetry(event)` as
   * the registry clients' `onRetry`.
   */
  recordRegistryRetry(event: RegistryRetry): void {
    const labels = { registry: this.registryLabel(event.registry), reason: event.reason };
    this.registryRetries.inc(labels);
    this.registryRetryWait.inc(labels, event.waitMs / 1000);
  }

  /** Returns `host` as a label value, or `other` once `MAX_REGISTRY_LABELS` other hosts have been labelled. */
  registryLabel(host: string): string {
    if (this.registryLabels.has(host)) return host;
    if (this.registryLabels.size >= MAX_REGISTRY_LABELS) return 'other';
    this.registryLabels.add(host);
    return host;
  }
}
