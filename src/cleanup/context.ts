import type { Redis } from 'ioredis';
import type { Config, MirrorRegistryConfig } from '../config/config.ts';
import type { LockOptions } from '../dedupe/lock.ts';
import type { RegistryClients } from '../mirror/clients.ts';
import { createProvider } from '../providers/index.ts';
import type { TargetProvider } from '../providers/provider.ts';
import type { LeaseOptions } from '../refcounts/lease.ts';
import { ReferenceStore } from '../refcounts/store.ts';
import { formatImageKey, type ImageName } from '../refcounts/types.ts';
import type { AuditEntry } from './audit.ts';
import type { SweepScheduler } from './schedule.ts';
import type { CleanupImage, CleanupResult } from '../../queues/cleanup.ts';

/** Dependencies of release, sweep and reconcile jobs, without the queue around them. */
export interface CleanupContext {
  config: Config;
  redis: Redis;
  clients: RegistryClients;
  jobId: string;
  /** Current time in milliseconds on the clock the records use; the Redis clock when absent. */
  now?: () => Promise<number>;
  /** Called after each deletion, once it is in the audit stream; the worker shell logs it. */
  onDeletion?: (entry: AuditEntry) => void;
  /** Enqueues the sweeps that retention times call for; none are enqueued when absent. */
  scheduler?: SweepScheduler;
  /** The provider of a mirror registry; createProvider when absent. */
  providerFor?: (registry: MirrorRegistryConfig) => TargetProvider;
  /** Lifetime of a sweep's claim on a repository without renewal; renewed every third of it. */
  claimTtlMs?: number;
  /** The lock that serialises sweeps of one registry host. */
  locks?: LockOptions;
  leases?: LeaseOptions;
}

export function storeOf(context: CleanupContext): ReferenceStore {
  return new ReferenceStore(context.redis, { prefix: context.config.redis.keyPrefix });
}

export async function providerOf(context: CleanupContext, registry: MirrorRegistryConfig): Promise<TargetProvider> {
  return context.providerFor ? context.providerFor(registry) : createProvider(registry, context.config, context.clients);
}

export async function currentTime(context: CleanupContext, store: ReferenceStore): Promise<number> {
  return context.now ? context.now() : store.serverTime();
}

/** Returns an image as cleanup results name it. */
export function describeImage(host: string, image: ImageName): CleanupImage {
  return {
    registry: host,
    repository: image.repository,
    ...(image.tag === undefined ? {} : { tag: image.tag }),
    digest: image.digest,
    image: `${host}/${formatImageKey(image)}`,
  };
}

/** Returns a result with nothing in it yet. */
export function emptyResult(kind: CleanupResult['kind'], jobId: string, dryRun: boolean): CleanupResult {
  return { jobId, kind, dryRun, deleted: [], kept: [], forgotten: [], released: [], recorded: [], missing: [], ignored: [], limits: [], durationMs: 0 };
}
