import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { MirrorfleetError } from '../errors.ts';
import type { ReferenceStore } from './store.ts';

/**
 * Leases of running jobs on the repositories they write to or deploy from. A job holds the lease from
 * before it looks at the target until its use is recorded, so a sweep cannot delete, in between, what
 * the job is about to return. A job that dies stops renewing, and its lease expires after `ttlMs`.
 */

export interface LeaseOptions {
  /** Lifetime without renewal; renewed every third of it while held. */
  ttlMs: number;
  /** How long to wait while a sweep deletes in the repository before giving up. */
  waitMs: number;
}

export const DEFAULT_LEASE_OPTIONS: LeaseOptions = { ttlMs: 30_000, waitMs: 15 * 60_000 };

/**
 * A lease held by the caller. `lost` turns true when a renewal found it expired. `released` turns true
 * when the lease was given back before `withLease` ends, as recordImageUse does with `releaseLease`.
 */
export interface Lease {
  readonly registry: string;
  readonly repository: string;
  readonly token: string;
  readonly lost: boolean;
  released: boolean;
}

export class LeaseTimeoutError extends MirrorfleetError {
  constructor(registry: string, repository: string, waitMs: number) {
    super('TIMEOUT', `gave up waiting for a lease on ${registry}/${repository} after ${Math.round(waitMs / 1000)} s; a sweep is still deleting there`, {
      retryable: true,
    });
  }
}

/** The lease expired before the job recorded its use: a sweep may have deleted since, so the job is redone. */
export class LeaseLostError extends MirrorfleetError {
  constructor(registry: string, repository: string) {
    super('LOCK_LOST', `the lease on ${registry}/${repository} expired before the use was recorded (Redis was unreachable for too long); the job will be retried`, {
      retryable: true,
    });
  }
}

/**
 * Runs `work` while holding a lease on `registry/repository`. Waits, polling with backoff, while a
 * sweep holds a claim on the repository.
 */
export async function withLease<T>(
  store: ReferenceStore,
  registry: string,
  repository: string,
  work: (lease: Lease) => Promise<T>,
  options: LeaseOptions = DEFAULT_LEASE_OPTIONS,
): Promise<T> {
  const token = randomBytes(16).toString('hex');
  const deadline = Date.now() + options.waitMs;
  let delay = 10;
  while (!(await store.acquireLease(registry, repository, token, options.ttlMs))) {
    if (Date.now() > deadline) throw new LeaseTimeoutError(registry, repository, options.waitMs);
    await sleep(delay);
    delay = Math.min(delay * 2, 500);
  }

  const lease = { registry, repository, token, lost: false, released: false };
  const renewal = setInterval(() => {
    if (lease.released) return;
    store.renewLease(registry, repository, token, options.ttlMs).then(
      (renewed) => {
        if (!renewed) lease.lost = true;
      },
      // A failed renewal is retried at the next interval; the lease stays valid until its expiry.
      () => undefined,
    );
  }, Math.max(10, Math.floor(options.ttlMs / 3)));
  try {
    return await work(lease);
  } finally {
    clearInterval(renewal);
    if (!lease.released) await store.releaseLease(registry, repository, token).catch(() => undefined);
  }
}

/** Runs `work` holding leases on several repositories of one registry at once, taken in sorted order. */
export async function withLeases<T>(
  store: ReferenceStore,
  registry: string,
  repositories: string[],
  work: (leases: Map<string, Lease>) => Promise<T>,
  options: LeaseOptions = DEFAULT_LEASE_OPTIONS,
): Promise<T> {
  const sorted = [...new Set(repositories)].sort();
  const held = new Map<string, Lease>();
  const step = async (index: number): Promise<T> => {
    if (index === sorted.length) return work(held);
    return withLease(
      store,
      registry,
      sorted[index]!,
      async (lease) => {
        held.set(lease.repository, lease);
        return step(index + 1);
      },
      options,
    );
  };
  return step(0);
}
