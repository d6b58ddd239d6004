import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { JobsOptions } from 'bullmq';
import { InvalidInputError } from '../src/errors.ts';
import { parseReference } from '../src/image-ref/reference.ts';

/**
 * The `cleanup` queue: release, sweep and reconcile jobs, validated the same way when enqueued and when
 * a worker takes the job. The job's `kind` field selects what it does:
 * - `release`: a service (or every service of a cluster) was deleted; drop its uses.
 * - `sweep`: delete images unused for longer than their retention time.
 * - `reconcile`: rebuild a cluster's uses from the list of images it really runs.
 */

export const CLEANUP_QUEUE = 'cleanup';

const ID = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
export const idSchema = (field: string) =>
  z
    .string({ error: `${field} must be a string` })
    .max(63, { error: `${field} must be at most 63 characters` })
    .regex(ID, { error: `${field} must be lowercase letters, digits and single '.', '_' or '-' between them, such as prod-eu-1` });

const registrySchema = z
  .string({ error: 'registry must be a string' })
  .min(1, { error: 'registry must not be empty' })
  .max(512, { error: 'registry must be at most 512 characters' })
  .refine((value) => !value.includes('@'), { error: 'registry must be a configured name or HOST[:PORT][/PREFIX], without credentials (they belong in the configuration)' })
  .optional();
const dryRunSchema = z.boolean({ error: 'dryRun must be true or false' }).default(false);

// The maximum number of images a reconcile payload may list. A cluster that runs more is reconciled in
// parts, one mirror registry at a time, or the limit is raised here.
export const MAX_RECONCILE_IMAGES = 20_000;

/** Version 1 of the release payload. Exactly one of `service` and `allServices` is given. */
export const releaseRequestSchema = z
  .strictObject({
    v: z.literal(1, { error: 'v must be 1, the only payload version' }),
    kind: z.literal('release'),
    cluster: idSchema('cluster'),
    service: idSchema('service').optional(),
    /** Releases every service of the cluster, uses recorded without a service included. */
    allServices: z.boolean({ error: 'allServices must be true or false' }).optional(),
    /** Mirror registry by name or location; every declared one when absent. */
    registry: registrySchema,
    dryRun: dryRunSchema,
  })
  .superRefine((request, context) => {
    if ((request.service === undefined) === (request.allServices !== true)) {
      context.addIssue({ code: 'custom', path: ['service'], message: 'give either service or allServices: true, not both and not neither' });
    }
  });

/** Version 1 of the sweep payload. */
export const sweepRequestSchema = z.strictObject({
  v: z.literal(1, { error: 'v must be 1, the only payload version' }),
  kind: z.literal('sweep'),
  /** Mirror registry by name or location; every declared one when absent. */
  registry: registrySchema,
  dryRun: dryRunSchema,
  /** Replaces the registry's configured maxDeletePercent for this run. */
  maxDeletePercent: z
    .int({ error: 'maxDeletePercent must be an integer from 0 to 100' })
    .min(0, { error: 'maxDeletePercent must be an integer from 0 to 100' })
    .max(100, { error: 'maxDeletePercent must be an integer from 0 to 100' })
    .optional(),
});

const reconcileImageSchema = z
  .strictObject({
    /** Image reference as the cluster runs it, such as `registry.internal/mirror/prod/shared/docker.io/library/nginx@sha256:...`. */
    reference: z.string({ error: 'reference must be an image reference string' }).min(1).max(1024),
    /** Service that runs it; a use by the whole cluster when absent. */
    service: idSchema('service').optional(),
  })
  .superRefine((image, context) => {
    try {
      parseReference(image.reference);
    } catch (error) {
      context.addIssue({ code: 'custom', path: ['reference'], message: (error as Error).message });
    }
  });

/**
 * Version 1 of the reconcile payload. An empty `images` list releases every use of the cluster, so it is
 * accepted only with `allowEmpty: true`. An empty list more often comes from a failed `kubectl` than from
 * a cluster that runs nothing.
 */
export const reconcileRequestSchema = z
  .strictObject({
    v: z.literal(1, { error: 'v must be 1, the only payload version' }),
    kind: z.literal('reconcile'),
    cluster: idSchema('cluster'),
    /** Mirror registry by name or location; every declared one when absent. */
    registry: registrySchema,
    images: z.array(reconcileImageSchema, { error: 'images must be an array of {reference, service?}' }).max(MAX_RECONCILE_IMAGES, {
      error: `images must list at most ${MAX_RECONCILE_IMAGES} entries`,
    }),
    /** Accepts an empty `images` list, which releases every use of the cluster. */
    allowEmpty: z.boolean({ error: 'allowEmpty must be true or false' }).default(false),
    dryRun: dryRunSchema,
  })
  .superRefine((request, context) => {
    // Also reached after another field failed, so the shape is checked again.
    if (Array.isArray(request.images) && request.images.length === 0 && request.allowEmpty !== true) {
      context.addIssue({
        code: 'custom',
        path: ['images'],
        message: `images is empty, which would release every use of cluster ${request.cluster}; send allowEmpty: true if the cluster really runs no image`,
      });
    }
  });

export const cleanupRequestSchema = z.discriminatedUnion('kind', [releaseRequestSchema, sweepRequestSchema, reconcileRequestSchema], {
  error: 'kind must be "release", "sweep" or "reconcile"',
});

export type ReleaseRequestInput = z.input<typeof releaseRequestSchema>;
export type SweepRequestInput = z.input<typeof sweepRequestSchema>;
export type ReconcileRequestInput = z.input<typeof reconcileRequestSchema>;
export type CleanupRequestInput = z.input<typeof cleanupRequestSchema>;
export type ReleaseRequest = z.output<typeof releaseRequestSchema>;
export type SweepRequest = z.output<typeof sweepRequestSchema>;
export type ReconcileRequest = z.output<typeof reconcileRequestSchema>;
export type CleanupRequest = z.output<typeof cleanupRequestSchema>;

/**
 * Validates a cleanup payload. Throws InvalidInputError listing every problem with its field and value.
 */
export function parseCleanupRequest(payload: unknown): CleanupRequest {
  const result = cleanupRequestSchema.safeParse(payload);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const field = issue.path.join('.') || 'payload';
    const value = valueAt(payload, issue.path);
    const shown = value === undefined ? 'missing' : JSON.stringify(value)?.slice(0, 200);
    return `${field} (${shown}): ${issue.message}`;
  });
  throw new InvalidInputError(`invalid cleanup request: ${problems.join('; ')}`);
}

function valueAt(payload: unknown, path: PropertyKey[]): unknown {
  let current: unknown = payload;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/** Deduplication id: identical requests waiting or running at the same time share one job. */
export function cleanupDedupeId(request: CleanupRequest): string {
  const normal = { ...request, ...(request.registry === undefined ? {} : { registry: request.registry.trim().toLowerCase() }) };
  const canonical = JSON.stringify(Object.entries(normal).sort(([a], [b]) => a.localeCompare(b)));
  return `${request.kind}-${createHash('sha256').update(canonical).digest('hex').slice(0, 32)}`;
}

/** Default options of cleanup jobs. */
export const CLEANUP_JOB_OPTIONS: JobsOptions = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 5_000, jitter: 0.5 },
  removeOnComplete: { age: 7 * 24 * 3600, count: 10_000 },
  removeOnFail: { age: 30 * 24 * 3600, count: 10_000 },
};

/** An image of a mirror registry, named as the reference store records it. */
export interface CleanupImage {
  /** Mirror registry host. */
  registry: string;
  repository: string;
  tag?: string;
  digest: string;
  /** `host/repository:tag@digest` or `host/repository@digest`. */
  image: string;
}

/** A DELETE request a sweep sent, or would send in a dry run. */
export interface DeletedImage extends CleanupImage {
  method: 'tag' | 'digest';
  /** The tag or digest the request names. */
  reference: string;
  /** Tags the store recorded for the digest; a deletion by digest removes them too. */
  tags: string[];
  /** `deleted`; `absent` when it was already gone (counted as deleted); `planned` in a dry run. */
  result: 'deleted' | 'absent' | 'planned';
  /** Image keys whose records went with it. */
  images: string[];
  reason: string;
}

export interface KeptImage extends CleanupImage {
  /**
   * `in-use`, `retention` (unused, still within its retention time), `shared-digest`,
   * `listed-by-kept-index`, `last-tag` (by-tag registries: its manifest is still needed),
   * `limit` (the sweep's share of deletions was reached), `lease` (a running job holds the repository),
   * `busy` (another sweep holds the repository), `no-record`.
   */
  reason: string;
  detail: string;
  /** With `retention`: when it may go, as an ISO 8601 time. */
  deletableAt?: string;
}

/** A use that a release or reconcile dropped. */
export interface ReleasedUse extends CleanupImage {
  /** `<cluster>/<service>`, or `<cluster>/` for a use by the whole cluster. */
  user: string;
  /** Uses the image has left; 0 means it is now unused and its retention time runs. */
  usesLeft: number;
}

/** A use that a reconcile recorded. */
export interface RecordedUse extends CleanupImage {
  user: string;
}

/** A sweep's deletions against its limit, per mirror registry. */
export interface SweepLimit {
  registry: string;
  maxDeletePercent: number;
  /** Images the store records for the registry at the start of the sweep. */
  known: number;
  /** Images the sweep may remove: maxDeletePercent of `known`, rounded down. */
  allowed: number;
  removed: number;
  /** True when the limit kept images that could otherwise have gone. */
  reached: boolean;
  /** Set when `reached`: what happened and what to do. */
  message?: string;
}

/** The result of a finished cleanup job, also the CLI's `--json --wait` output. */
export interface CleanupResult {
  jobId: string;
  kind: 'release' | 'sweep' | 'reconcile';
  dryRun: boolean;
  deleted: DeletedImage[];
  kept: KeptImage[];
  /** Expired records dropped without a registry request (by-tag registries). */
  forgotten: Array<CleanupImage & { reason: string }>;
  released: ReleasedUse[];
  recorded: RecordedUse[];
  /** Reconcile: listed images of a mirror registry that the registry does not have. */
  missing: string[];
  /** Reconcile: listed images outside every selected mirror registry. */
  ignored: string[];
  limits: SweepLimit[];
  durationMs: number;
}
