import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { JobsOptions } from 'bullmq';
import { InvalidInputError } from '../src/errors.ts';
import { formatReference, parseReference } from '../src/image-ref/reference.ts';
import { referenceForMessage } from '../src/image-ref/message-value.ts';
import { formatPlatform, parsePlatform } from '../src/registry/media-types.ts';
import { platformNameProblem } from './platforms.ts';
import { REFERRER_SELECTIONS, type CopiedReferrer, type FailedReferrer, type FallbackIndex } from '../src/registry/referrers.ts';

/**
 * The `mirror` queue: what a producer may ask for, validated the same way when enqueued and when a
 * worker takes the job.
 */

export const MIRROR_QUEUE = 'mirror';

const ID = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const idSchema = (field: string) =>
  z
    .string({ error: `${field} must be a string` })
    .max(63, { error: `${field} must be at most 63 characters` })
    .regex(ID, { error: `${field} must be lowercase letters, digits and single '.', '_' or '-' between them, such as prod-eu-1` });

/** Version 1 of the mirror job payload. */
export const mirrorRequestSchema = z
  .strictObject({
    v: z.literal(1, { error: 'v must be 1, the only payload version' }),
    /** Source image reference, such as `docker.io/library/nginx:1.27` or `ghcr.io/org/app@sha256:...`. */
    source: z
      .string({ error: 'source must be an image reference string' })
      .min(1, { error: 'source must not be empty' })
      .max(1024, { error: 'source must be at most 1024 characters' }),
    /** Mirror registry, by its configured name or by its location HOST[:PORT][/PREFIX]. */
    registry: z
      .string({ error: 'registry must be a string' })
      .min(1, { error: 'registry must not be empty' })
      .max(512, { error: 'registry must be at most 512 characters' })
      .refine((value) => !value.includes('@'), { error: 'registry must be a configured name or HOST[:PORT][/PREFIX], without credentials (they belong in the configuration)' }),
    mode: z.enum(['service', 'cluster'], { error: 'mode must be "service" or "cluster"' }).default('service'),
    cluster: idSchema('cluster'),
    service: idSchema('service').optional(),
    /** Platforms to copy, such as `linux/amd64`; all when absent. */
    platforms: z.array(z.string({ error: 'platforms entries must be strings' })).max(64).optional(),
    /**
     * Referrers (signatures, attestations, SBOMs) copied with the image: 'off', 'signatures' or 'all'.
     * When absent, the mirror registry's `referrers` setting applies, which defaults to 'all'.
     */
    referrers: z.enum(REFERRER_SELECTIONS, { error: `referrers must be one of ${REFERRER_SELECTIONS.map((value) => `"${value}"`).join(', ')}` }).optional(),
  })
  .superRefine((request, context) => {
    if (request.mode === 'service' && request.service === undefined) {
      context.addIssue({ code: 'custom', path: ['service'], message: 'service is required when mode is "service"' });
    }
    try {
      parseReference(request.source);
    } catch (error) {
      context.addIssue({ code: 'custom', path: ['source'], message: (error as Error).message });
    }
    for (const [index, platform] of (request.platforms ?? []).entries()) {
      let problem: string | undefined;
      try {
        problem = platformNameProblem(parsePlatform(platform));
      } catch (error) {
        problem = (error as Error).message;
      }
      if (problem !== undefined) context.addIssue({ code: 'custom', path: ['platforms', index], message: problem });
    }
  });

export type MirrorRequestInput = z.input<typeof mirrorRequestSchema>;
export type MirrorRequest = z.output<typeof mirrorRequestSchema>;

/**
 * Validates a mirror payload. Throws InvalidInputError listing every problem with its field and value.
 */
export function parseMirrorRequest(payload: unknown): MirrorRequest {
  const result = mirrorRequestSchema.safeParse(payload);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const field = issue.path.join('.') || 'payload';
    return `${field} (${describeValue(valueAt(payload, issue.path))}): ${issue.message}`;
  });
  throw new InvalidInputError(`invalid mirror request: ${problems.join('; ')}`);
}

/**
 * Renders a rejected value for an error message: strings with anything that looks like credentials
 * (`user:password@host`) replaced, and values JSON cannot print (BigInt, cycles) described by type.
 */
function describeValue(value: unknown): string {
  if (value === undefined) return 'missing';
  try {
    const text = JSON.stringify(value, (_key, inner: unknown) => {
      if (typeof inner === 'string') return referenceForMessage(inner);
      if (typeof inner === 'bigint') return `${inner}n`;
      return inner;
    });
    if (text === undefined) return `a ${typeof value}`;
    // The replacer has cut a string already; cutting its JSON again would drop the closing quote.
    return typeof value === 'string' ? text : text.slice(0, 200);
  } catch {
    return `a ${typeof value} that cannot be printed`;
  }
}

function valueAt(payload: unknown, path: PropertyKey[]): unknown {
  let current: unknown = payload;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/**
 * Returns the request in normal form: the source printed normalised, platforms normalised and sorted,
 * the registry lowercased. Two requests with the same normal form ask for the same thing.
 */
export function normaliseMirrorRequest(request: MirrorRequest): MirrorRequest {
  const normal: MirrorRequest = {
    v: 1,
    source: formatReference(parseReference(request.source)),
    registry: request.registry.trim().toLowerCase(),
    mode: request.mode,
    cluster: request.cluster,
  };
  if (request.service !== undefined) normal.service = request.service;
  if (request.platforms?.length) normal.platforms = [...new Set(request.platforms.map((platform) => formatPlatform(parsePlatform(platform))))].sort();
  if (request.referrers !== undefined) normal.referrers = request.referrers;
  return normal;
}

/**
 * Deduplication id: identical requests waiting at the same time share one job. The worker removes the
 * id when the job starts, so a request made after that gets a job of its own.
 */
export function mirrorDedupeId(request: MirrorRequest): string {
  const normal = normaliseMirrorRequest(request);
  // `referrers` is appended only when set, so that requests without it keep the ids they had before it existed.
  const fields = [normal.v, normal.source, normal.registry, normal.mode, normal.cluster, normal.service ?? null, normal.platforms ?? []];
  const canonical = JSON.stringify(normal.referrers === undefined ? fields : [...fields, normal.referrers]);
  return `mirror-${createHash('sha256').update(canonical).digest('hex').slice(0, 32)}`;
}

/** Default options of mirror jobs. */
export const MIRROR_JOB_OPTIONS: JobsOptions = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 2_000, jitter: 0.5 },
  // Finished jobs stay readable for a day (results, `mirrorfleet job ID`), and at most this many.
  removeOnComplete: { age: 24 * 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
};

/** Result of a finished mirror job, which is also the CLI's `--json --wait` output. */
export interface MirrorResult {
  jobId: string;
  action: 'copied' | 'skipped' | 'updated' | 'not-needed';
  source: string;
  sourceDigest: string;
  /** `host/repository:tag` in the mirror registry. */
  target: string;
  /** `host/repository@sha256:...`: what a deployment should run. */
  pinned: string;
  digest: string;
  /** True only when a platform filter rewrote the index. */
  digestChanged: boolean;
  platforms: string[];
  manifests: { copied: number; present: number };
  blobs: { copied: number; mounted: number; present: number };
  bytes: { pulled: number; pushed: number };
  durationMs: number;
  /**
   * Referrers of the image's manifests now at the target (copied by this job or there before), each with
   * its artifact type, digest and subject. Absent when there are none or referrers are off.
   * Reference counting treats each as part of its subject: deleted with it, never before it.
   */
  referrers?: CopiedReferrer[];
  /** Referrers that could not be copied or linked, with the reason; the image was copied without them. Absent when none failed. */
  failedReferrers?: FailedReferrer[];
  /** Fallback tag indexes (`sha256-<hex>`) at the target that list referrers, with the digest each tag names now. Absent when none. */
  referrerIndexes?: FallbackIndex[];
}

/** Progress a running mirror job reports. */
export interface MirrorProgress {
  /** `waiting` while a request waits for a registry's rate limit; `waiting` then says which and why. */
  stage: 'resolving' | 'copying' | 'waiting' | 'done';
  blobsDone: number;
  blobsTotal: number;
  bytesPulled: number;
  bytesPushed: number;
  waiting?: {
    registry: string;
    /** `window`, `not-before` (a 429 or Retry-After), `quota` (pull quota below the floor), `concurrency` or `rate`. */
    reason: string;
    /** Expected wait in milliseconds; 0 when unknown. */
    expectedMs: number;
  };
}
