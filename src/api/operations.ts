import { z } from 'zod';
import type { ApiScope } from '../config/config.ts';
import type { QueueRoute } from './queue-routes.ts';
import { enqueuedJobSchema, errorBodySchema, jobParamsSchema, jobViewSchema, MAX_WAIT_SECONDS, waitQuerySchema } from './schemas.ts';

/**
 * Every operation of the HTTP API, described once. The server registers a handler for each, and the
 * OpenAPI document is built from the same list, so the two cannot disagree about paths, scopes,
 * request schemas or the statuses an operation responds with.
 */

export type OperationKind = 'healthz' | 'readyz' | 'metrics' | 'openapi' | 'dashboard' | 'enqueue' | 'get-job' | 'wait-job';

export interface ResponseSpec {
  description: string;
  /** Schema of a JSON body. */
  schema?: z.ZodType;
  /** OpenAPI component name of `schema`; inlined when absent. */
  schemaName?: string;
  /** Media type of a body that is not JSON, such as `text/plain`. */
  mediaType?: string;
  /** Response headers by name, with their descriptions. */
  headers?: Record<string, string>;
}

export interface OperationSpec {
  kind: OperationKind;
  operationId: string;
  method: 'GET' | 'POST';
  /** OpenAPI path template, such as `/v1/queues/mirror/jobs/{jobId}`. */
  path: string;
  summary: string;
  description?: string;
  tag: string;
  /** Scope the caller's token needs; absent for open operations. */
  scope?: ApiScope;
  /** Also accept Basic credentials whose password is the token, for browsers. */
  allowBasic?: boolean;
  /** The queue of a queue operation. */
  route?: QueueRoute;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /** OpenAPI component name of the body schema. */
  bodyName?: string;
  /** A valid body, shown in the OpenAPI document. */
  bodyExample?: unknown;
  responses: Record<string, ResponseSpec>;
}

/** Returns the largest request body of `route` in bytes. */
export function bodyLimitOf(route: QueueRoute | undefined): number {
  return route?.bodyLimitBytes ?? BODY_LIMIT_BYTES;
}

/** Largest request body in bytes; a job request is a few hundred bytes. */
export const BODY_LIMIT_BYTES = 64 * 1024;

export const DASHBOARD_PATH = '/admin/queues';

const ERROR = 'Error';

function errorResponse(description: string, headers?: Record<string, string>): ResponseSpec {
  return { description, schema: errorBodySchema, schemaName: ERROR, ...(headers ? { headers } : {}) };
}

const UNAUTHORIZED = errorResponse('Missing or unknown bearer token.', {
  'WWW-Authenticate': 'The authentication scheme to use: `Bearer realm="mirrorfleet"`.',
});
const NOT_FOUND = errorResponse('No such job in this queue: never enqueued, or removed after it finished; the message states how long jobs of the queue are kept.');

function forbidden(scope: ApiScope): ResponseSpec {
  return errorResponse(`The token lacks the \`${scope}\` scope.`);
}

function queueOperations(route: QueueRoute): OperationSpec[] {
  const base = `/v1/queues/${route.queue}/jobs`;
  const jobName = `${route.title}Job`;
  const jobView = jobViewSchema(route);
  const common = { tag: route.queue, scope: route.scope, route };
  return [
    {
      ...common,
      kind: 'enqueue',
      operationId: `enqueue${route.title}Job`,
      method: 'POST',
      path: base,
      summary: `Enqueue a ${route.queue} job`,
      description: `${route.summary} ${route.queue === 'mirror' ? 'An identical request made while a job for it waits joins that job; a running mirror job takes no more requests, because it may have resolved the source tag already.' : 'An identical request made while a job for it waits or runs joins that job.'}`,
      body: route.requestSchema,
      bodyName: `${route.title}Request`,
      bodyExample: route.example,
      responses: {
        202: {
          description: route.queue === 'mirror' ? 'Enqueued, or joined an identical waiting job.' : 'Enqueued, or joined an identical waiting or running job.',
          schema: enqueuedJobSchema,
          schemaName: 'EnqueuedJob',
          headers: { Location: 'Path of the job: `/v1/queues/<queue>/jobs/<jobId>`.' },
        },
        400: errorResponse(`Invalid body: an invalid or unknown field (each is named), a body that is not JSON, or a body over ${bodyLimitOf(route)} bytes.`),
        401: UNAUTHORIZED,
        403: forbidden(route.scope),
        415: errorResponse('The body is not `application/json`.'),
      },
    },
    {
      ...common,
      kind: 'get-job',
      operationId: `get${route.title}Job`,
      method: 'GET',
      path: `${base}/{jobId}`,
      summary: `Read a ${route.queue} job: state, progress, result or error`,
      params: jobParamsSchema,
      responses: {
        200: { description: 'The job as it is now.', schema: jobView, schemaName: jobName },
        400: errorResponse('Invalid job id.'),
        401: UNAUTHORIZED,
        403: forbidden(route.scope),
        404: NOT_FOUND,
      },
    },
    {
      ...common,
      kind: 'wait-job',
      operationId: `waitFor${route.title}Job`,
      method: 'GET',
      path: `${base}/{jobId}/wait`,
      summary: `Wait for a ${route.queue} job to finish (long poll)`,
      description: `Responds as soon as the job is completed or failed, or after \`timeoutSeconds\` (at most ${MAX_WAIT_SECONDS}) with the job as it is then. Call again until \`finished\` is true.`,
      params: jobParamsSchema,
      query: waitQuerySchema,
      responses: {
        200: { description: 'The job finished: completed (see `result`) or failed (see `error`).', schema: jobView, schemaName: jobName },
        202: { description: 'The wait timed out and the job has not finished yet.', schema: jobView, schemaName: jobName },
        400: errorResponse('Invalid job id or timeoutSeconds, or an unknown query parameter.'),
        401: UNAUTHORIZED,
        403: forbidden(route.scope),
        404: NOT_FOUND,
      },
    },
  ];
}

/** Returns every operation of an API that serves `routes`. */
export function describeOperations(routes: readonly QueueRoute[]): OperationSpec[] {
  return [
    {
      kind: 'healthz',
      operationId: 'getHealth',
      method: 'GET',
      path: '/healthz',
      summary: 'Liveness: the process runs',
      tag: 'operations',
      responses: { 200: { description: 'The process runs.', mediaType: 'text/plain' } },
    },
    {
      kind: 'readyz',
      operationId: 'getReadiness',
      method: 'GET',
      path: '/readyz',
      summary: 'Readiness: Redis responds',
      tag: 'operations',
      responses: {
        200: { description: 'Redis responds to PING; the API can take requests.', mediaType: 'text/plain' },
        503: { description: 'Redis does not respond.', mediaType: 'text/plain' },
      },
    },
    {
      kind: 'metrics',
      operationId: 'getMetrics',
      method: 'GET',
      path: '/metrics',
      summary: 'Prometheus metrics of this API process',
      tag: 'operations',
      responses: { 200: { description: 'Metrics in the Prometheus text format 0.0.4.', mediaType: 'text/plain' } },
    },
    {
      kind: 'openapi',
      operationId: 'getOpenApiDocument',
      method: 'GET',
      path: '/openapi.json',
      summary: 'This OpenAPI document',
      tag: 'operations',
      responses: { 200: { description: 'The OpenAPI 3.1 document of this API.', schema: z.record(z.string(), z.unknown()) } },
    },
    {
      kind: 'dashboard',
      operationId: 'getDashboard',
      method: 'GET',
      path: DASHBOARD_PATH,
      summary: 'Queue dashboard (bull-board): waiting, active, failed and completed jobs; retry a failed job',
      description:
        'A browser page. Browsers can send the token as the password of Basic credentials with any user name; ' +
        'the page and its own API under this path need the `admin` scope.',
      tag: 'operations',
      scope: 'admin',
      allowBasic: true,
      responses: {
        200: { description: 'The dashboard page.', mediaType: 'text/html' },
        401: errorResponse('Missing or unknown token.', {
          'WWW-Authenticate': 'The authentication scheme to use: `Basic realm="mirrorfleet dashboard"`, so that browsers ask for it.',
        }),
        403: forbidden('admin'),
      },
    },
    ...routes.flatMap(queueOperations),
  ];
}
