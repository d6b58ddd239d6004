import { checkRegistryHost, DOCKER_HUB } from '../image-ref/registry-host.ts';
import type { HostLimits } from './budget.ts';

/**
 * Built-in request budgets of well-known registries, which `rateLimits.hosts` overrides field by field.
 * A budget is shared by the whole fleet. The fleet in turn shares the registry with everyone else behind
 * the same addresses or account (the cluster's own nodes pulling from the mirror registry, CI jobs), so
 * each default keeps well below what the registry allows. The concurrency limits apply to each kind of
 * request (manifest reads, blob reads, uploads) on its own.
 *
 * Where a registry publishes a limit, its default cites it.
 * NOTE: every value that no registry publishes is an estimate, and is marked as one below.
 */

interface BuiltInBudget {
  /** Name of the registry, for readers of this table. */
  name: string;
  matches(host: string): boolean;
  limits: HostLimits;
}

const BUILT_IN: readonly BuiltInBudget[] = [
  {
    // Docker Hub's abuse rate limit is "in the order of thousands of requests per minute" per IPv4 address
    // or IPv6 /64 ("Docker Hub usage and limits", docs.docker.com/docker-hub/usage/). 10 per second is
    // 600 per minute. Its pull limit depends on the account, and revisions of Docker's pages differ: 100
    // per 6 hours per address for anonymous users in "Docker Hub pull usage and limits"
    // (docs.docker.com/docker-hub/usage/pulls/), 10 per hour in a revision of "Docker Hub usage and
    // limits". A pull is a manifest GET (one per image, or per platform of a multi-platform image), and
    // `RateLimit-Remaining` reports the pulls left. The floor of 5 pulls kept for the cluster's own
    // nodes, and the concurrency of 8, are estimates.
    name: 'Docker Hub',
    matches: (host) => host === DOCKER_HUB,
    limits: { requestsPerSecond: 10, burst: 20, maxConcurrent: 8, pullQuotaFloor: 5 },
  },
  {
    // GitHub publishes no request limit for ghcr.io, so 10 per second and 8 at once are estimates.
    name: 'GitHub Container Registry',
    matches: (host) => host === 'ghcr.io',
    limits: { requestsPerSecond: 10, burst: 20, maxConcurrent: 8, pullQuotaFloor: 0 },
  },
  {
    // Quay.io limits every client to "a few requests per second per IP" and API endpoint, "with some
    // bursting capabilities", and responds with 429 above it (Red Hat solution 6218921, "Quay.io rate
    // limiting"). 5 per second for the whole host and 6 at once are estimates of "a few".
    name: 'Quay.io',
    matches: (host) => host === 'quay.io',
    limits: { requestsPerSecond: 5, burst: 10, maxConcurrent: 6, pullQuotaFloor: 0 },
  },
  {
    // Amazon ECR allows per repository, account and region 200 pull transactions per second sustained
    // with bursts to 400, and 10 push transactions per second sustained with bursts to 40 (Amazon ECR User
    // Guide, "Amazon ECR Service Limits", an earlier revision of "Amazon ECR service quotas"). The
    // mirror registry mostly receives pushes, so the push rate sets the default. How ECR counts HTTP
    // requests of the registry API as transactions is not published, and 16 at once is an estimate.
    name: 'Amazon ECR',
    matches: (host) => /^[0-9]{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$/.test(host),
    limits: { requestsPerSecond: 10, burst: 40, maxConcurrent: 16, pullQuotaFloor: 0 },
  },
  {
    // Artifact Registry allows per project and location 60,000 requests per minute (1,000 per second),
    // of which 18,000 may be writes (300 per second), and every HTTP request of a pull or push counts
    // ("Quotas and limits", cloud.google.com/artifact-registry/quotas). The default takes a tenth of the
    // write quota, because the project's other users share it. 32 at once is an estimate.
    name: 'Artifact Registry',
    matches: (host) => /^[a-z0-9-]+-docker\.pkg\.dev$/.test(host),
    limits: { requestsPerSecond: 30, burst: 60, maxConcurrent: 32, pullQuotaFloor: 0 },
  },
  {
    // Scaleway publishes no request limit for its Container Registry, so 10 per second and 8 at once
    // are estimates.
    name: 'Scaleway Container Registry',
    matches: (host) => /^rg\.[a-z]{2}-[a-z]{3}\.scw\.cloud$/.test(host),
    limits: { requestsPerSecond: 10, burst: 20, maxConcurrent: 8, pullQuotaFloor: 0 },
  },
];

/**
 * Budget of every other host, such as a self-hosted registry. Such registries publish no limits, so
 * this is an estimate, set high enough not to slow down a registry on the local network. List the host
 * in `rateLimits.hosts` to set its own budget.
 */
export const OTHER_HOSTS: HostLimits = { requestsPerSecond: 100, burst: 200, maxConcurrent: 32, pullQuotaFloor: 0 };

/** Returns the built-in budget of `registry` (a normalised host[:port]), or that of other hosts. */
export function builtInLimits(registry: string): HostLimits {
  const check = checkRegistryHost(registry);
  const host = check.host ?? registry.toLowerCase();
  return BUILT_IN.find((entry) => entry.matches(host))?.limits ?? OTHER_HOSTS;
}
