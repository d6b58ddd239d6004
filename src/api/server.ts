import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type onRequestHookHandler } from 'fastify';
import type { Redis } from 'ioredis';
import { createRedisConnection } from '../redis/connection.ts';
import type { ApiScope, Config } from '../config/config.ts';
import { MirrorfleetError } from '../errors.ts';
import { ENV } from '../config/env.ts';
import { DEFAULTS } from '../config/schema.ts';
import { checkPort, explainListenFailure, type PortSetting } from '../util/listen.ts';
import type { Logger } from '../log/logger.ts';
import { isConnectionError } from '../log/redis-outage.ts';
import { missingJobError } from '../../queues/producer.ts';
import { Metrics } from '../metrics/metrics.ts';
import { startQueueSampler, type QueueSampler } from '../metrics/queue-sampler.ts';
import { ApiTokens } from './auth.ts';
import { registerDashboard } from './dashboard.ts';
import { JobQueues } from './jobs.ts';
import { buildOpenApiDocument, type OpenApiDocument } from './openapi.ts';
import { BODY_LIMIT_BYTES, bodyLimitOf, describeOperations, type OperationSpec } from './operations.ts';
import { QUEUE_ROUTES, type QueueRoute } from './queue-routes.ts';
import { DEFAULT_WAIT_SECONDS, type ErrorBody } from './schemas.ts';
import { RequestValidationError, requestSchema, zodValidatorCompiler, type Problem } from './validation.ts';

/**
 * The producer HTTP API (`mirrorfleet api`): fastify with zod validation, bearer tokens with scopes,
 * the queue dashboard, health, readiness and metrics. Routes and the OpenAPI document both come from
 * `describeOperations`, see operations.ts.
 */

export interface ApiOptions {
  config: Config;
  logger: Logger;
  /** Address to listen on. Default `config.api.host`, else `0.0.0.0`. */
  host?: string;
  /** Port to listen on; 0 picks a free one. Default `config.api.port`. */
  port?: number;
  /**
   * Setting the port came from, such as `--port`, for the error when the port cannot be used. Without
   * it, the setting is inferred from `config` and the environment.
   */
  portSource?: string;
  /** Queues to serve. Default `QUEUE_ROUTES`. */
  routes?: readonly QueueRoute[];
  /** How long to wait for Redis at start before giving up, in milliseconds. Default 30 s. */
  redisTimeoutMs?: number;
  /** Interval of the queue depth sampler in milliseconds; see queue-sampler.ts. */
  sampleIntervalMs?: number;
}

export interface RunningApi {
  /** `http://HOST:PORT` the API listens on. */
  url: string;
  app: FastifyInstance;
  metrics: Metrics;
  document: OpenApiDocument;
  /** Every route served, as fastify registered it (`/v1/queues/mirror/jobs/:jobId`), dashboard assets included. */
  servedRoutes: readonly { method: string; url: string }[];
  /** Ends long-poll waits, stops listening, and closes the Redis connections. */
  close(): Promise<void>;
}

const READY_TIMEOUT_MS = 2_000;
const SAMPLER_WARNING_INTERVAL_MS = 10 * 60_000;

/**
 * Connects to Redis, then starts the API. Rejects when Redis does not respond within `redisTimeoutMs`
 * or no API token is configured.
 * @throws InvalidInputError for a port outside 0 to 65535, before anything opens.
 * @throws PortUnavailableError when the port is in use or not allowed, after closing Redis.
 */
export async function startApi(options: ApiOptions): Promise<RunningApi> {
  const { config, logger } = options;
  const tokens = new ApiTokens(config.api.tokens);
  if (tokens.size === 0) {
    throw new MirrorfleetError(
      'INVALID_CONFIG',
      'no API tokens configured, so every request would be refused; set MIRRORFLEET_API_TOKENS=TOKEN:SCOPE,... (scopes enqueue, admin) or api.tokens in the configuration file',
    );
  }
  const portSetting = apiPortSetting(options);
  checkPort(portSetting);

  // Queue commands fail at once while Redis is unreachable (503), instead of queueing up in memory.
  const connection = createRedisConnection(config.redis, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
  logConnectionErrors(connection, logger);
  try {
    await waitForReady(connection, options.redisTimeoutMs ?? 30_000);
  } catch (error) {
    connection.disconnect();
    throw error;
  }

  const queueRoutes = options.routes ?? QUEUE_ROUTES;
  const metrics = new Metrics();
  const eventConnections: Redis[] = [];
  const jobs = new JobQueues({
    connection,
    createEventsConnection: () => {
      const events = logConnectionErrors(connection.duplicate({ maxRetriesPerRequest: null, enableOfflineQueue: true }), logger);
      // QueueEvents leaves a connection it was given open on close, so closeAll closes these itself.
      eventConnections.push(events);
      return events;
    },
    prefix: config.redis.keyPrefix,
    // Connection errors are logged once by logConnectionErrors; the queues report the same ones again.
    onError: (error) => {
      if (!isConnectionError(error)) logger.warn({ error: error.message }, 'queue error');
    },
    routes: queueRoutes,
    context: { config },
  });
  await jobs.ready();

  let lastSamplerWarning = 0;
  const sampler = startQueueSampler({
    connection,
    prefix: config.redis.keyPrefix,
    queues: queueRoutes.map((route) => route.queue),
    metrics,
    ...(options.sampleIntervalMs ? { intervalMs: options.sampleIntervalMs } : {}),
    onError: (error) => {
      if (Date.now() - lastSamplerWarning < SAMPLER_WARNING_INTERVAL_MS) return;
      lastSamplerWarning = Date.now();
      logger.warn({ error: (error as Error).message }, 'queue depth sample failed; repeats are not logged for 10 minutes');
    },
  });

  const shutdown = new AbortController();
  const operations = describeOperations(queueRoutes);
  const document = buildOpenApiDocument(operations);
  const servedRoutes: { method: string; url: string }[] = [];
  const app = await createApp({ operations, document, tokens, jobs, metrics, connection, logger, shutdown: shutdown.signal, servedRoutes });

  try {
    await app.listen({ port: portSetting.port, host: portSetting.host });
  } catch (error) {
    await closeAll(app, sampler, jobs, [connection, ...eventConnections]);
    throw explainListenFailure(error, portSetting);
  }
  const address = app.server.address();
  const url = typeof address === 'object' && address !== null ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}` : String(address);
  logger.info({ url, queues: queueRoutes.map((route) => route.queue) }, 'api started');

  let closing: Promise<void> | undefined;
  return {
    url,
    app,
    metrics,
    document,
    servedRoutes,
    close: () => {
      closing ??= (async () => {
        shutdown.abort();
        await closeAll(app, sampler, jobs, [connection, ...eventConnections]);
        logger.info('api stopped');
      })();
      return closing;
    },
  };
}

/** Describes the API's port and the setting it came from, for checks and error messages. */
function apiPortSetting(options: ApiOptions): PortSetting {
  const { config } = options;
  const port = options.port ?? config.api.port;
  let source = options.portSource;
  if (source === undefined) {
    if (port !== config.api.port) source = '--port';
    else if (process.env[ENV.apiPort] !== undefined) source = ENV.apiPort;
    else source = `api.port in the configuration file, or its default ${DEFAULTS.apiPort}`;
  }
  return {
    server: 'API',
    port,
    host: options.host ?? config.api.host ?? '0.0.0.0',
    source,
    minimum: 0,
    zeroMeans: 'picks a free port',
    advice: `stop the other process, or pass --port with a free port (or set ${ENV.apiPort})`,
  };
}

/** Logs each connection error once until the connection is ready again; ioredis reconnects by itself. */
function logConnectionErrors(connection: Redis, logger: Logger): Redis {
  let lastError = '';
  connection.on('error', (error: Error) => {
    if (error.message !== lastError) logger.warn({ error: error.message }, 'redis connection error; reconnecting');
    lastError = error.message;
  });
  connection.on('ready', () => (lastError = ''));
  return connection;
}

async function closeAll(app: FastifyInstance, sampler: QueueSampler, jobs: JobQueues, connections: Redis[]): Promise<void> {
  await app.close();
  await sampler.stop();
  await jobs.close();
  await Promise.all(connections.map((connection) => connection.quit().catch(() => connection.disconnect())));
}

async function waitForReady(connection: Redis, timeoutMs: number): Promise<void> {
  if (connection.status === 'ready') return;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      new Promise<void>((resolve) => connection.once('ready', () => resolve())),
      new Promise<void>((_, reject) => {
        timer = setTimeout(
          () => reject(new MirrorfleetError('TIMEOUT', `Redis did not respond within ${Math.round(timeoutMs / 1000)} s; check MIRRORFLEET_REDIS_URL and that Redis runs`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

interface AppContext {
  operations: readonly OperationSpec[];
  document: OpenApiDocument;
  tokens: ApiTokens;
  jobs: JobQueues;
  metrics: Metrics;
  connection: Redis;
  logger: Logger;
  /** Aborts when the API shuts down, which ends long-poll waits. */
  shutdown: AbortSignal;
  /** Filled with every route as it is registered. */
  servedRoutes: { method: string; url: string }[];
}

type Handler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;

/** Builds the fastify application: hooks, error handling, and one route per operation. */
async function createApp(context: AppContext): Promise<FastifyInstance> {
  const { tokens, jobs, metrics, connection, logger } = context;
  const app = Fastify({
    loggerInstance: logger,
    // One line per request would flood the log with long polls; metrics count requests instead.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT_BYTES,
    return503OnClosing: true,
    // HEAD routes would be undocumented; the OpenAPI document lists exactly what is served.
    exposeHeadRoutes: false,
  }) as unknown as FastifyInstance;
  app.addHook('onRoute', (route) => {
    for (const method of [route.method].flat()) context.servedRoutes.push({ method, url: route.url });
  });
  app.setValidatorCompiler(zodValidatorCompiler);
  // Only JSON bodies are accepted; any other content type gets 415.
  app.removeContentTypeParser('text/plain');

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.apiRequests.inc({ method: request.method, route, status: String(reply.statusCode) });
    metrics.apiRequestDuration.observe({ method: request.method, route }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler(async (error: FastifyError, request, reply) => {
    const response = errorResponseFor(error, request, connection);
    if (response.status >= 500) logger.error({ requestId: request.id, method: request.method, route: request.routeOptions.url, error: error.message }, 'api request failed');
    return reply.code(response.status).send(response.body);
  });

  app.setNotFoundHandler(async (request, reply) => {
    const path = request.url.split('?')[0]!.slice(0, 200);
    return reply.code(404).send(errorBody('NOT_FOUND', `no route ${request.method} ${path}; the routes are listed in /openapi.json`));
  });

  const guard = (scope: ApiScope, allowBasic: boolean): onRequestHookHandler =>
    async function requireScope(request, reply) {
      const header = request.headers.authorization;
      const decision = tokens.authorize(header, scope, { allowBasic });
      if (decision === 'allowed') return;
      if (decision === 'forbidden') return reply.code(403).send(errorBody('FORBIDDEN', `this token lacks the "${scope}" scope`));
      // RFC 6750, section 3: name the error only when a token was sent.
      const challenge = allowBasic ? 'Basic realm="mirrorfleet dashboard", charset="UTF-8"' : `Bearer realm="mirrorfleet"${header ? ', error="invalid_token"' : ''}`;
      return reply
        .code(401)
        .header('WWW-Authenticate', challenge)
        .send(errorBody('UNAUTHORIZED', `missing or unknown token; send Authorization: Bearer TOKEN with a token that has the "${scope}" scope`));
    };

  for (const operation of context.operations) {
    if (operation.kind === 'dashboard') {
      await registerDashboard(app, jobs.bullQueues, guard(operation.scope!, true));
      continue;
    }
    const schema: Record<string, unknown> = {};
    if (operation.params) schema.params = requestSchema(operation.params);
    if (operation.query) schema.querystring = requestSchema(operation.query);
    if (operation.body) schema.body = requestSchema(operation.body, operation.route?.sensitiveFields);
    app.route({
      method: operation.method,
      url: operation.path.replace(/\{(\w+)\}/g, ':$1'),
      schema,
      ...(operation.body ? { bodyLimit: bodyLimitOf(operation.route) } : {}),
      ...(operation.scope ? { onRequest: guard(operation.scope, operation.allowBasic ?? false) } : {}),
      handler: handlerFor(operation, context),
    });
  }
  return app;
}

function handlerFor(operation: OperationSpec, context: AppContext): Handler {
  const { jobs, metrics, connection, logger } = context;
  const route = operation.route;
  switch (operation.kind) {
    case 'healthz':
      return async (_request, reply) => reply.type('text/plain').send('ok\n');

    case 'readyz':
      return async (_request, reply) => {
        const ready = await pingWithin(connection, READY_TIMEOUT_MS);
        return reply.code(ready ? 200 : 503).type('text/plain').send(ready ? 'ready\n' : 'redis unreachable\n');
      };

    case 'metrics':
      return async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());

    case 'openapi':
      return async () => context.document;

    case 'enqueue':
      return async (request, reply) => {
        const enqueued = await jobs.enqueue(route!, request.body);
        metrics.jobsEnqueued.inc({ queue: route!.queue });
        if (enqueued.coalesced) metrics.dedupeHits.inc({ kind: 'coalesced_job' });
        logger.info({ jobId: enqueued.jobId, queue: route!.queue, coalesced: enqueued.coalesced }, 'job enqueued');
        return reply.code(202).header('Location', `/v1/queues/${route!.queue}/jobs/${encodeURIComponent(enqueued.jobId)}`).send(enqueued);
      };

    case 'get-job':
      return async (request, reply) => {
        const { jobId } = request.params as { jobId: string };
        const view = await jobs.read(route!, jobId);
        if (view === undefined) return reply.code(404).send(jobNotFound(route!, jobId));
        return view;
      };

    case 'wait-job':
      return async (request, reply) => {
        const { jobId } = request.params as { jobId: string };
        const { timeoutSeconds } = request.query as { timeoutSeconds?: number };
        // The response stream closes early when the client goes away; stop waiting then.
        const clientGone = new AbortController();
        reply.raw.once('close', () => clientGone.abort());
        const signal = AbortSignal.any([clientGone.signal, context.shutdown]);

        const view = await jobs.waitForJob(route!, jobId, (timeoutSeconds ?? DEFAULT_WAIT_SECONDS) * 1000, signal);
        if (view === undefined) return reply.code(404).send(jobNotFound(route!, jobId));
        return reply.code(view.finished ? 200 : 202).send(view);
      };

    case 'dashboard':
      throw new Error('the dashboard is registered by registerDashboard, not as one route');
  }
}

function jobNotFound(route: QueueRoute, jobId: string): ErrorBody {
  return errorBody('NOT_FOUND', missingJobError(jobId, route.queue).message);
}

function errorBody(code: string, message: string, problems?: Problem[]): ErrorBody {
  return { error: { code, message, ...(problems ? { problems } : {}) } };
}

/** Sorts an error thrown while serving a request into a status and a body that carries no internals. */
function errorResponseFor(error: FastifyError, request: FastifyRequest, connection: Redis): { status: number; body: ErrorBody } {
  if (error instanceof RequestValidationError) return { status: 400, body: errorBody('INVALID_INPUT', error.message, error.problems) };

  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = request.routeOptions.bodyLimit ?? BODY_LIMIT_BYTES;
      const message = `request body is larger than ${limit} bytes; send one job request`;
      return { status: 400, body: errorBody('INVALID_INPUT', message, [{ field: 'body', message }]) };
    }
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': {
      // The parser's own message can quote the body, so it is not passed on. fastify reports a
      // `__proto__` or `constructor` key, valid JSON that it rejects on purpose, with the same code.
      const message = 'request body is not valid JSON, or contains a __proto__ or constructor key; send one JSON object';
      return { status: 400, body: errorBody('INVALID_INPUT', message, [{ field: 'body', message }]) };
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': {
      const type = String(request.headers['content-type'] ?? 'none').slice(0, 100);
      return { status: 415, body: errorBody('UNSUPPORTED_MEDIA_TYPE', `content type ${type} is not accepted; send application/json`) };
    }
  }

  if (error instanceof MirrorfleetError && (error.code === 'INVALID_INPUT' || error.code === 'INVALID_REFERENCE')) {
    return { status: 400, body: errorBody('INVALID_INPUT', error.message) };
  }
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    return { status: error.statusCode, body: errorBody('BAD_REQUEST', error.message) };
  }
  if (connection.status !== 'ready') {
    return { status: 503, body: errorBody('UNAVAILABLE', 'Redis is unreachable; retry later') };
  }
  return { status: 500, body: errorBody('INTERNAL', `internal error; the API log has the details under request id ${request.id}`) };
}

async function pingWithin(connection: Redis, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      connection.ping().then((answer) => answer === 'PONG'),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}
