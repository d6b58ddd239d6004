import type { JobsOptions } from 'bullmq';
import type { z } from 'zod';
import { requireMirrorRegistry, type ApiScope, type Config } from '../../config/config.ts';
import { RequestValidationError } from '../validation.ts';

/** Types of the route table entries that tell the HTTP API how to serve one queue; see ../queue-routes.ts. */

/** The job a valid request becomes. */
export interface QueuedJob {
  /** BullMQ job name. */
  name: string;
  data: unknown;
  /** While a job with this id waits (or, except for mirror jobs, runs), an identical request joins it instead of adding one. */
  deduplicationId?: string;
}

/** Inputs of `toJob` besides the request, such as the configuration with the key that encrypts build variables. */
export interface QueueRouteContext {
  config: Config;
}

export interface QueueRouteDefinition<Schema extends z.ZodType> {
  /** Queue name, also the path segment in `/v1/queues/<queue>/jobs`. */
  queue: string;
  /** Scope a token needs for every route of this queue. */
  scope: ApiScope;
  /** Stem of the OpenAPI component names, such as `Mirror` for `MirrorRequest` and `MirrorJob`. */
  title: string;
  /** One sentence on what a job of this queue does. */
  summary: string;
  /** The queue's own request schema. */
  requestSchema: Schema;
  /** Schema of the job data as stored, where it differs from the request (build variables are stored encrypted). */
  dataSchema?: z.ZodType;
  /** Schema of what a finished job returns. */
  resultSchema: z.ZodType;
  /** Schema of the progress a running job reports. */
  progressSchema: z.ZodType;
  /** Default options of the queue's jobs. */
  jobOptions: JobsOptions;
  /** Largest request body in bytes, when the queue's requests can be larger than BODY_LIMIT_BYTES. */
  bodyLimitBytes?: number;
  /** Turns a request that `requestSchema` accepted into the job to add. May throw InvalidInputError. */
  toJob(request: z.output<Schema>, context: QueueRouteContext): QueuedJob;
  /** A valid request, shown in the OpenAPI document. */
  example: z.input<Schema>;
  /** Top-level request fields whose values never appear in error messages, because they may be secrets. */
  sensitiveFields?: readonly string[];
  /** Descriptions of request fields for the OpenAPI document, used where the schema carries none. */
  fieldDescriptions?: Record<string, string>;
}

/** A queue route with its request type erased, so that routes of different queues share one table. */
export type QueueRoute = QueueRouteDefinition<z.ZodType>;

/** Checks a queue route's types against its schema and returns it for `QUEUE_ROUTES`. */
export function defineQueueRoute<Schema extends z.ZodType>(route: QueueRouteDefinition<Schema>): QueueRoute {
  return route as unknown as QueueRoute;
}

/**
 * Rejects a request whose `registry` is not a declared mirror registry, so the caller gets a 400
 * instead of a failed job. When the API declares no registry, the workers check it instead.
 * @throws InvalidInputError naming the registry and the declared ones.
 */
export function checkDeclaredRegistry(config: Config, registry: string | undefined): void {
  if (registry === undefined || config.mirrorRegistries.length === 0) return;
  try {
    requireMirrorRegistry(config, registry);
  } catch (error) {
    // The same shape as a schema problem, so clients read one list of problems for every 400.
    throw new RequestValidationError('body', [{ field: 'registry', message: (error as Error).message }]);
  }
}
