import { buildRoute } from './queues/build.ts';
import { cleanupRoute } from './queues/cleanup.ts';
import { mirrorRoute } from './queues/mirror.ts';
import type { QueueRoute } from './queues/route.ts';

export type { QueueRoute, QueueRouteContext, QueuedJob } from './queues/route.ts';

/**
 * The queues the HTTP API serves, one entry per queue. Each entry gives the queue's own payload schema,
 * which validates request bodies and documents them in the OpenAPI document, and how a valid request
 * becomes a BullMQ job. Every entry gets the same three routes under `/v1/queues/<queue>/jobs`:
 * enqueue, read a job, and wait for a job.
 *
 * A new queue adds a file under `queues/` that calls `defineQueueRoute`, and one line here.
 */
export const QUEUE_ROUTES: readonly QueueRoute[] = [mirrorRoute, buildRoute, cleanupRoute];
