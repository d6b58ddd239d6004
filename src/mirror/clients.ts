import type { Config } from '../config/config.ts';
import { registryAccess } from '../config/config.ts';
import { RegistryClient, type RetryPolicy } from '../registry/client.ts';
import type { HttpTransport } from '../registry/http.ts';

/**
 * One RegistryClient per registry host for the whole process, so bearer tokens and connections are
 * shared by every job that talks to the same registry.
 */
export class RegistryClients {
  private readonly config: Config;
  private readonly transport: HttpTransport;
  private readonly retry: Partial<RetryPolicy> | undefined;
  private readonly clients = new Map<string, RegistryClient>();

  constructor(config: Config, transport: HttpTransport, retry?: Partial<RetryPolicy>) {
    this.config = config;
    this.transport = transport;
    this.retry = retry;
  }

  /** Returns the client of `registry` (a normalised host[:port]), with the access settings configured for it. */
  get(registry: string): RegistryClient {
    let client = this.clients.get(registry);
    if (!client) {
      const access = registryAccess(this.config, registry);
      const credentials = access.username !== undefined && access.password !== undefined ? { username: access.username, password: access.password } : undefined;
      client = new RegistryClient({
        registry,
        insecure: access.insecure,
        transport: this.transport,
        ...(credentials ? { credentials } : {}),
        ...(this.retry ? { retry: this.retry } : {}),
      });
      this.clients.set(registry, client);
    }
    return client;
  }
}
