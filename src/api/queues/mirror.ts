import { z } from 'zod';
import {
  MIRROR_JOB_OPTIONS,
  MIRROR_QUEUE,
  mirrorDedupeId,
  mirrorRequestSchema,
  normaliseMirrorRequest,
  type MirrorProgress,
  type MirrorResult,
} from '../../../queues/mirror.ts';
import { checkDeclaredRegistry, defineQueueRoute } from './route.ts';

/**
 * The `mirror` queue in the HTTP API. Requests are validated with the queue's own schema and enqueued
 * exactly as `MirrorfleetProducer.mirror` does: normalised, with the same deduplication id.
 */

const count = z.int().min(0);

// NOTE: queues/mirror.ts declares MirrorResult and MirrorProgress as TypeScript interfaces, not schemas, so
// their schemas live here, and the type checks below fail to compile when the two drift apart.
export const mirrorResultSchema = z.object({
  jobId: z.string(),
  action: z.enum(['copied', 'skipped', 'updated', 'not-needed']),
  source: z.string().meta({ description: 'Source reference, normalised, such as docker.io/library/nginx:1.27.' }),
  sourceDigest: z.string(),
  target: z.string().meta({ description: '`host/repository:tag` in the mirror registry.' }),
  pinned: z.string().meta({ description: '`host/repository@sha256:...`: what a deployment should run.' }),
  digest: z.string(),
  digestChanged: z.boolean().meta({ description: 'True only when a platform filter rewrote the index.' }),
  platforms: z.array(z.string()),
  manifests: z.object({ copied: count, present: count }),
  blobs: z.object({ copied: count, mounted: count, present: count }),
  bytes: z.object({ pulled: count, pushed: count }),
  durationMs: count,
  referrers: z
    .array(
      z.object({
        artifactType: z.string(),
        digest: z.string(),
        subject: z.string().meta({ description: 'Digest of the manifest the referrer refers to.' }),
        tag: z.string().optional().meta({ description: 'Cosign tag that links it, such as sha256-<hex>.sig; absent for a referrer linked by subject.' }),
        copied: z.boolean().meta({ description: 'False when the target had it before this job.' }),
      }),
    )
    .optional()
    .meta({ description: 'Signatures, attestations and other referrers of the image now at the target. Absent when none or referrers are off.' }),
  failedReferrers: z
    .array(
      z.object({
        subject: z.string(),
        digest: z.string().optional(),
        artifactType: z.string().optional(),
        tag: z.string().optional(),
        reason: z.string(),
      }),
    )
    .optional()
    .meta({ description: 'Referrers that could not be copied, with the reason; the image was copied without them.' }),
  referrerIndexes: z
    .array(z.object({ subject: z.string(), tag: z.string(), digest: z.string() }))
    .optional()
    .meta({ description: 'Fallback tag indexes (sha256-<hex>) at the target that list referrers.' }),
});

export const mirrorProgressSchema = z.object({
  stage: z.enum(['resolving', 'copying', 'waiting', 'done']),
  blobsDone: count,
  blobsTotal: count,
  bytesPulled: count,
  bytesPushed: count,
  waiting: z
    .object({ registry: z.string(), reason: z.string(), expectedMs: count })
    .optional()
    .meta({ description: "Present while a request waits for a registry's rate limit: which registry, why, and the expected wait in ms." }),
});

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const resultMatches: Same<z.output<typeof mirrorResultSchema>, MirrorResult> = true;
const progressMatches: Same<z.output<typeof mirrorProgressSchema>, MirrorProgress> = true;
void resultMatches;
void progressMatches;

export const mirrorRoute = defineQueueRoute({
  queue: MIRROR_QUEUE,
  scope: 'enqueue',
  title: 'Mirror',
  summary: 'A mirror job copies an image from a source registry into a declared mirror registry, unless it is there already.',
  requestSchema: mirrorRequestSchema,
  resultSchema: mirrorResultSchema,
  progressSchema: mirrorProgressSchema,
  jobOptions: MIRROR_JOB_OPTIONS,
  toJob: (request, { config }) => {
    checkDeclaredRegistry(config, request.registry);
    const normal = normaliseMirrorRequest(request);
    return { name: MIRROR_QUEUE, data: normal, deduplicationId: mirrorDedupeId(normal) };
  },
  example: { v: 1, source: 'docker.io/library/nginx:1.27', registry: 'local', cluster: 'prod-eu-1', service: 'web' },
  fieldDescriptions: {
    v: 'Payload version; 1 is the only one.',
    source: 'Source image reference, such as docker.io/library/nginx:1.27 or ghcr.io/org/app@sha256:...',
    registry: 'Mirror registry, by its configured name or by its location HOST[:PORT][/PREFIX].',
    mode: 'service: one repository namespace per service; cluster: one per cluster, shared by its services.',
    cluster: 'Cluster id, such as prod-eu-1.',
    service: 'Service id; required in service mode.',
    platforms: 'Platforms to copy, such as linux/amd64; every platform when absent.',
    referrers: 'Referrers to copy with the image: off, signatures or all; the mirror registry setting (default all) when absent.',
  },
});
