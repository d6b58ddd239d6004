/**
 * Reading of a registry's pull quota from its response headers.
 *
 * Docker Hub sends `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 20;w=21600` on manifest
 * GET and HEAD responses: 20 pulls are left of 100 per 21600 seconds (6 hours). A GET counts as a pull
 * and a HEAD does not, and a response without these headers means the pulls are not limited ("Docker
 * Hub pull usage and limits", docs.docker.com/docker-hub/usage/pulls/).
 */

/** Returns the number of a `RateLimit-Remaining` header (`20;w=21600` gives 20), or undefined when absent or unreadable. */
export function parseRateLimitRemaining(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined) return undefined;
  const match = /^\s*(\d+)\s*(?:;|,|$)/.exec(text);
  if (!match) return undefined;
  const remaining = Number(match[1]);
  return Number.isSafeInteger(remaining) ? remaining : undefined;
}
