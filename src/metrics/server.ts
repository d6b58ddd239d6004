import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { Metrics } from './metrics.ts';
import { checkPort, explainListenFailure, type PortSetting } from '../util/listen.ts';

export interface HealthServerOptions {
  metrics: Metrics;
  /** Returns true when the process can do work (Redis reachable). */
  ready: () => Promise<boolean>;
  port: number;
  host?: string;
  /** Source of the port and how to choose another, for the error when the port cannot be used. */
  portSetting?: Pick<PortSetting, 'source' | 'advice'>;
}

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
  server.listen(options.port, host);
  try {
    await once(server, 'listening');
  } catch (error) {
    throw explainListenFailure(error, setting);
  }
  return server;
}
