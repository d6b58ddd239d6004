import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { Metrics } from './metrics.ts';
import { checkPort, explainListenFailure, type PortSetting } from '../util/listen.ts';

export interface HealthServerOptions {
  metrics: Metrics;
  /**
   * Returns true when the process can do work (Redis reachable). It may reject with an error whose
   * message is the reason, such as the connection's state. A result later than READY_TIMEOUT_MS counts as not ready.
   */
  ready: () => Promise<boolean>;
  port: number;
  host?: string;
  /** Source of the port and how to choose another, for the error when the port cannot be used. */
  portSetting?: Pick<PortSetting, 'source' | 'advice'>;
}

/** Time `/readyz` waits for the readiness check before it returns 503. */
export const READY_TIMEOUT_MS = 1_000;

/**
 * Serves `/metrics` (Prometheus text format), `/healthz` (the process is alive) and `/readyz` (Redis
 * answers) on one port. Returns the server once it listens.
 * @throws InvalidInputError for a port outside 1 to 65535, before anything opens.
 * @throws PortUnavailableError when the port is in use or not allowed.
 */
export async function startHealthServer(options: HealthServerOptions): Promise<Server> {
  const host = options.host ?? '0.0.0.0';
  const setting: PortSetting = {
    server: 'metrics server',
    port: options.port,
    host,
    minimum: 1,
    source: options.portSetting?.source ?? 'the port option',
    advice: options.portSetting?.advice ?? 'choose another port',
  };
  checkPort(setting);
  const server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    if (request.method !== 'GET') {
      response.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    if (path === '/healthz') {
      response.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz') {
      void checkReadiness(options.ready).then((reason) => {
        const body = reason === undefined ? 'ready\n' : `not ready: ${reason}\n`;
        response.writeHead(reason === undefined ? 200 : 503, { 'content-type': 'text/plain' }).end(body);
      });
      return;
    }
    if (path === '/metrics') {
      options.metrics.registry
        .metrics()
        .then((text) => response.writeHead(200, { 'content-type': options.metrics.registry.contentType }).end(text))
        .catch((error: unknown) => response.writeHead(500).end(String(error)));
      return;
    }
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /metrics, /healthz or /readyz\n');
  });
  server.listen(options.port, host);
  try {
    await once(server, 'listening');
  } catch (error) {
    throw explainListenFailure(error, setting);
  }
  return server;
}

/** Runs `ready` for at most READY_TIMEOUT_MS; returns undefined when ready, otherwise the reason it is not. */
async function checkReadiness(ready: () => Promise<boolean>): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve(`redis did not answer within ${READY_TIMEOUT_MS / 1000} s`), READY_TIMEOUT_MS);
  });
  const checked = ready().then(
    (isReady) => (isReady ? undefined : 'redis unreachable'),
    (error: unknown) => `redis unreachable: ${error instanceof Error ? error.message : String(error)}`,
  );
  try {
    return await Promise.race([checked, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}
