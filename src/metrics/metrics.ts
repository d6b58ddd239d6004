import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Prometheus metrics of one mirrorfleet process. Labels carry registry hosts, queue names and outcomes,
 * never repositories of individual jobs (unbounded) and never credentials.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly jobs = new Counter({
    name: 'mirrorfleet_jobs_total',
    help: 'Finished jobs by queue and outcome (copied, skipped, updated, not-needed, failed, retrying).',
    labelNames: ['queue', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly jobDuration = new Histogram({
    name: 'mirrorfleet_job_duration_seconds',
    help: 'Duration of finished job attempts in seconds.',
    labelNames: ['queue', 'outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900],
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

  readonly registryRequests = new Counter({
    name: 'mirrorfleet_registry_requests_total',
    help: 'HTTP requests sent to registries, by registry host, method and status code.',
    labelNames: ['registry', 'method', 'status'] as const,
    registers: [this.registry],
  });

  readonly queueJobs = new Gauge({
    name: 'mirrorfleet_queue_jobs',
    help: 'Jobs in each queue by state, sampled by one process of the fleet at a time.',
    labelNames: ['queue', 'state'] as const,
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'mirrorfleet_' });
  }
}
