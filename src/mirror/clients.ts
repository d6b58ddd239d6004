import type { Config } from '../config/config.ts';
import { registryAccess } from '../config/config.ts';
import type { Credentials } from '../registry/auth.ts';
import { RegistryClient, type RequestGate, type RetryEvent, type RetryPolicy } from '../registry/client.ts';
import type { HttpTransport } from '../registry/http.ts';
import { withProviderAccess, type ProviderAccess } from '../providers/registry-access.ts';

/**
 * One RegistryClient per registry host for the whole process, so bearer tokens and connections are
 * shared by every job that talks to the same registry. A target provider registers the access to its own
 * host (credentials it obtains and refreshes, repositories it creates on demand), which then replaces the
 * credentials configured for that host. With `gates`, every client sends through the request gate of
 * its host, which keeps the fleet within the host's shared request budget.
 */

/** Source of the request gate of each registry host, such as `RegistryGates` of src/ratelimit. */
export interface GateSource {
  gateFor(registry: string): RequestGate;
}

export class RegistryClients {
  /** The transport every client sends through; providers send their cloud API calls through it too. */
  readonly transport: HttpTransport;
  private readonly config: Config;
  private readonly retry: Partial<RetryPolicy> | undefined;
  private readonly gates: GateSource | undefined;
  private readonly onRetry: ((event: RetryEvent) => void) | undefined;
  private readonly clients = new Map<string, RegistryClient>();
  private readonly providerAccess = new Map<string, ProviderAccess & { staticCredentials?: Credentials }>();

  /** `onRetry` sees every retry of every client (the worker counts them in its metrics). */
  constructor(config: Config, transport: HttpTransport, retry?: Partial<RetryPolicy>, gates?: GateSource, onRetry?: (event: RetryEvent) => void) {
    this.config = config;
    this.transport = transport;
    this.retry = retry;
    this.gates = gates;
    this.onRetry = onRetry;
  }

  /**
   * Sets how requests to `registry` (a normalised host[:port]) authenticate and create repositories:
   * `access.credentials` when they expire, or `staticCredentials` for fixed ones. Drops a client created
   * for that host before, so that the next `get` uses the new access.
   */
  setProviderAccess(registry: string, access: ProviderAccess & { staticCredentials?: Credentials }): void {
    this.providerAccess.set(registry, access);
    this.clients.delete(registry);
  }

  /** Returns the client of `registry` (a normalised host[:port]), with the access settings configured for it. */
  get(registry: string): RegistryClient {
    let client = this.clients.get(registry);
    if (!client) {
      client = this.create(registry);
      this.clients.set(registry, client);
    }
    return client;
  }

  private create(registry: string): RegistryClient {
    const access = registryAccess(this.config, registry);
    const provider = this.providerAccess.get(registry);
    const configured = access.username !== undefined && access.password !== undefined ? { username: access.username, password: access.password } : undefined;
    const credentials = provider ? provider.staticCredentials : configured;
    const transport = provider && (provider.credentials || provider.createRepository) ? withProviderAccess(this.transport, registry, provider) : this.transport;
    return new RegistryClient({
      registry,
      insecure: access.insecure,
      transport,
      ...(credentials ? { credentials } : {}),
      ...(this.retry ? { retry: this.retry } : {}),
      ...(this.gates ? { gate: this.gates.gateFor(registry) } : {}),
      ...(this.onRetry ? { onRetry: this.onRetry } : {}),
    });
  }
}
