import { z } from 'zod';
import { CLEANUP_JOB_OPTIONS, CLEANUP_QUEUE, cleanupDedupeId, cleanupRequestSchema, type CleanupResult } from '../../../queues/cleanup.ts';
import { checkDeclaredRegistry, defineQueueRoute } from './route.ts';

/**
 * The `cleanup` queue in the HTTP API: release, sweep and reconcile jobs, chosen by the `kind` field and
 * enqueued exactly as `MirrorfleetProducer.cleanup` does. They delete images, so they need the `admin` scope.
 */

const count = z.int().min(0);

const image = {
  registry: z.string().meta({ description: 'Mirror registry host.' }),
  repository: z.string(),
  tag: z.string().optional(),
  digest: z.string(),
  image: z.string().meta({ description: '`host/repository:tag@digest` or `host/repository@digest`.' }),
};

// NOTE: queues/cleanup.ts declares CleanupResult as a TypeScript interface, not a schema, so its schema
// lives here, and the type check below fails to compile when the two drift apart.
export const cleanupResultSchema = z.object({
  jobId: z.string(),
  kind: z.enum(['release', 'sweep', 'reconcile']),
  dryRun: z.boolean(),
  deleted: z.array(
    z.object({
      ...image,
      method: z.enum(['tag', 'digest']),
      reference: z.string(),
      tags: z.array(z.string()),
      result: z.enum(['deleted', 'absent', 'planned']),
      images: z.array(z.string()),
      reason: z.string(),
    }),
  ),
  kept: z.array(z.object({ ...image, reason: z.string(), detail: z.string(), deletableAt: z.string().optional() })),
  forgotten: z.array(z.object({ ...image, reason: z.string() })),
  released: z.array(z.object({ ...image, user: z.string(), usesLeft: count })),
  recorded: z.array(z.object({ ...image, user: z.string() })),
  missing: z.array(z.string()),
  ignored: z.array(z.string()),
  limits: z.array(
    z.object({
      registry: z.string(),
      maxDeletePercent: z.number(),
      known: count,
      allowed: count,
      removed: count,
      reached: z.boolean(),
      message: z.string().optional(),
    }),
  ),
  durationMs: count,
});

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const resultMatches: Same<z.output<typeof cleanupResultSchema>, CleanupResult> = true;
void resultMatches;

export const cleanupRoute = defineQueueRoute({
  queue: CLEANUP_QUEUE,
  scope: 'admin',
  title: 'Cleanup',
  summary:
    "A cleanup job drops a deleted service's uses (kind release), deletes images unused for longer than their retention time (sweep), or rebuilds a cluster's uses from the images it runs (reconcile).",
  requestSchema: cleanupRequestSchema,
  resultSchema: cleanupResultSchema,
  // Cleanup workers report no progress, so a job's progress stays 0.
  progressSchema: z.never(),
  jobOptions: CLEANUP_JOB_OPTIONS,
  // A reconcile lists every image of a cluster, about a hundred bytes each, up to its maximum count.
  bodyLimitBytes: 4 * 1024 * 1024,
  toJob: (request, { config }) => {
    checkDeclaredRegistry(config, request.registry);
    return { name: request.kind, data: request, deduplicationId: cleanupDedupeId(request) };
  },
  example: { v: 1, kind: 'sweep', registry: 'local', dryRun: true },
  fieldDescriptions: {
    v: 'Payload version; 1 is the only one.',
    kind: 'release, sweep or reconcile.',
    registry: 'Mirror registry, by its configured name or by its location; every declared one when absent.',
    dryRun: 'Report what would be deleted or released without changing anything.',
    cluster: 'Cluster id, such as prod-eu-1.',
    service: 'Service whose uses are released.',
    allServices: 'Release every service of the cluster.',
    maxDeletePercent: "Replaces the registry's configured share of images one sweep may delete.",
    images: 'Every image the cluster runs, as {reference, service?}. Every use of the cluster that the list does not name is released.',
    allowEmpty: 'Accept an empty images list, which releases every use of the cluster. Without it, an empty list is rejected.',
  },
});
