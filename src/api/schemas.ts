import { z } from 'zod';
import type { QueueRoute } from './queue-routes.ts';

/**
 * Schemas of the HTTP API's own parameters and responses. Request bodies use each queue's payload
 * schema (see queue-routes.ts); these wrap them.
 */

/** Job states as BullMQ reports them; `unknown` when the job vanished while being read. */
export const JOB_STATES = ['waiting', 'prioritized', 'delayed', 'waiting-children', 'active', 'completed', 'failed', 'unknown'] as const;
export type JobState = (typeof JOB_STATES)[number];

/** States after which a job changes no more. */
export const FINISHED_STATES: readonly JobState[] = ['completed', 'failed'];

/** Maximum long-poll wait in seconds: below the 60-second default idle timeout of nginx (`proxy_read_timeout`) and AWS load balancers. */
export const MAX_WAIT_SECONDS = 50;
export const DEFAULT_WAIT_SECONDS = 25;

// BullMQ job ids are decimal counters; custom ids of other queues may add letters, '-', '_', '.' and ':'.
const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const JOB_ID_EXPECTED = '1 to 128 characters from A-Z, a-z, 0-9 and . _ : -, starting with a letter or digit';

export const jobParamsSchema = z.strictObject({
  jobId: z.string({ error: JOB_ID_EXPECTED }).regex(JOB_ID, { error: JOB_ID_EXPECTED }).meta({ description: 'Job id, as returned when the job was enqueued.' }),
});

const WAIT_EXPECTED = `a whole number of seconds from 0 to ${MAX_WAIT_SECONDS}`;

export const waitQuerySchema = z.strictObject({
  timeoutSeconds: z
    .preprocess(
      // Query values arrive as strings; only plain decimal digits become numbers, so '', '1e1' and ' 5' are rejected.
      (value) => (typeof value === 'string' && /^[0-9]{1,6}$/.test(value) ? Number(value) : value),
      z.int({ error: WAIT_EXPECTED }).min(0, { error: WAIT_EXPECTED }).max(MAX_WAIT_SECONDS, { error: WAIT_EXPECTED }),
    )
    .optional()
    .meta({ description: `Seconds to wait for the job to finish, from 0 to ${MAX_WAIT_SECONDS}; default ${DEFAULT_WAIT_SECONDS}.` }),
});

export const problemSchema = z.object({
  field: z.string().meta({ description: 'Dotted path of the field, such as `source` or `platforms.0`, or `body` for the whole body.' }),
  message: z.string(),
});

export const errorBodySchema = z
  .object({
    error: z.object({
      code: z.string().meta({ description: 'Stable error code, such as INVALID_INPUT, UNAUTHORIZED, FORBIDDEN or NOT_FOUND.' }),
      message: z.string(),
      problems: z.array(problemSchema).optional().meta({ description: 'Every invalid field of a rejected request.' }),
    }),
  })
  .meta({ description: 'An error: a stable code and a message that names the field or input at fault.' });

export type ErrorBody = z.output<typeof errorBodySchema>;

export const enqueuedJobSchema = z.object({
  jobId: z.string(),
  queue: z.string(),
  state: z.enum(JOB_STATES),
  coalesced: z.boolean().meta({ description: 'True when this request joined the job of an identical request (one waiting, or for build and cleanup jobs also one running).' }),
});

export type EnqueuedJob = z.output<typeof enqueuedJobSchema>;

const jobErrorSchema = z.object({
  code: z.string().meta({ description: 'Stable error code of the failure, such as REGISTRY_NOT_FOUND.' }),
  message: z.string(),
});

/** Schema of the job view that the read and wait routes of `route` return. */
export function jobViewSchema(route: QueueRoute) {
  return z.object({
    jobId: z.string(),
    queue: z.literal(route.queue),
    state: z.enum(JOB_STATES),
    finished: z.boolean().meta({ description: 'True when the state is completed or failed.' }),
    attemptsMade: z.int().min(0),
    attempts: z.int().min(1).meta({ description: 'Attempts allowed in all.' }),
    progress: z.union([z.number(), route.progressSchema]).meta({ description: 'Progress of a running job; 0 before it reports any.' }),
    request: (route.dataSchema ?? route.requestSchema).meta({ description: 'The request as stored in the job, normalised.' }),
    result: route.resultSchema.optional().meta({ description: 'What the job returned; present when the state is completed.' }),
    error: jobErrorSchema.optional().meta({ description: 'Error of the last failed attempt; final when the state is failed.' }),
    createdAt: z.iso.datetime(),
    processedAt: z.iso.datetime().optional().meta({ description: 'Start of the last attempt.' }),
    finishedAt: z.iso.datetime().optional(),
  });
}

export type JobView = z.output<ReturnType<typeof jobViewSchema>>;
