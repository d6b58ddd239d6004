import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { Metrics } from './metrics.ts';

export interface HealthServerOptions {
  metrics: Metrics;
  /** Returns true when the process can do work (Redis reachable). */
  ready: () => Promise<boolean>;
  port: number;
  host?: string;
}

/**
 * Serves `/metrics` (Prometheus text format), `/healthz` (the process is alive) and `/readyz` (Redis
 * answers) on one port. Returns the server once it listens.
 */
export async function startHealthServer(options: HealthServerOptions): Promise<Server> {
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
      options
        .ready()
        .catch(() => false)
        .then((ready) => response.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : 'redis unreachable\n'));
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
  server.listen(options.port, options.host ?? '0.0.0.0');
  await once(server, 'listening');
  return server;
}
