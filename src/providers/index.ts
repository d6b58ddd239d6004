import type { Config, MirrorRegistryConfig } from '../config/config.ts';
import { registryAccess } from '../config/config.ts';
import type { RegistryClients } from '../mirror/clients.ts';
import { RefreshingCredentials } from './credentials.ts';
import { GenericProvider } from './generic.ts';
import type { TargetProvider } from './provider.ts';
import { TransportRequestHandler, transportFetch } from './sdk-http.ts';

export type { TargetProvider, MirrorLocation, TargetName } from './provider.ts';

// One provider per mirror registry and RegistryClients (that is, per process), so that cloud API clients,
// push tokens and the repositories known to exist are shared by every job. The entry is the promise, so
// that jobs starting together create one provider.
const providers = new WeakMap<RegistryClients, Map<MirrorRegistryConfig, Promise<TargetProvider>>>();

/**
 * Returns the provider of a declared mirror registry, creating it on first use. A cloud provider also
 * registers the access to its registry host with `clients`: its renewing push credentials, and repository
 * creation when a push finds the repository missing.
 *
 * The modules of a cloud provider and its SDK are imported on the first use of a registry of that kind.
 * Imported together, they added about 45 MB to the resident memory of Node 24 (process.memoryUsage
 * after a forced GC), which a worker without such a registry never needs.
 * A creation that fails is not kept, so the next job tries again.
 */
export function createProvider(registry: MirrorRegistryConfig, config: Config, clients: RegistryClients): Promise<TargetProvider> {
  let byRegistry = providers.get(clients);
  if (!byRegistry) {
    byRegistry = new Map();
    providers.set(clients, byRegistry);
  }
  let provider = byRegistry.get(registry);
  if (!provider) {
    const created = newProvider(registry, config, clients);
    created.catch(() => {
      if (byRegistry.get(registry) === created) byRegistry.delete(registry);
    });
    provider = created;
    byRegistry.set(registry, provider);
  }
  return provider;
}

async function newProvider(registry: MirrorRegistryConfig, config: Config, clients: RegistryClients): Promise<TargetProvider> {
  const access = registryAccess(config, registry.host);
  switch (registry.provider) {
    case 'generic': {
      const credentials = access.username !== undefined && access.password !== undefined ? { username: access.username, password: access.password } : undefined;
      return new GenericProvider({ name: registry.name, host: registry.host, prefix: registry.prefix, insecure: access.insecure, credentials, client: clients.get(registry.host) });
    }
    case 'ecr': {
      const [{ ECRClient }, { EcrProvider }] = await Promise.all([import('@aws-sdk/client-ecr'), import('./ecr.ts')]);
      const ecr = new ECRClient({
        region: registry.region,
        ...(registry.apiEndpoint ? { endpoint: registry.apiEndpoint } : {}),
        requestHandler: new TransportRequestHandler(clients.transport, `ecr-api.${registry.region}`),
      });
      const provider = new EcrProvider({ registry, insecure: access.insecure, ecr });
      clients.setProviderAccess(registry.host, provider.access());
      return provider;
    }
    case 'artifact-registry': {
      const [{ ArtifactRegistryProvider, createArtifactRegistryClient }, { fetchDefaultCredentialsToken, fetchServiceAccountToken, readServiceAccountKey }] =
        await Promise.all([import('./artifact-registry.ts'), import('./google-tokens.ts')]);
      const fetchFunction = transportFetch(clients.transport);
      const key = registry.credentialsFile ? readServiceAccountKey(registry.credentialsFile) : undefined;
      const tokens = new RefreshingCredentials(() => (key ? fetchServiceAccountToken(key, fetchFunction) : fetchDefaultCredentialsToken()));
      const client = createArtifactRegistryClient({ apiEndpoint: registry.apiEndpoint, tokens, fetchFunction });
      const provider = new ArtifactRegistryProvider({ registry, insecure: access.insecure, client, tokens });
      clients.setProviderAccess(registry.host, provider.access());
      return provider;
    }
    case 'scaleway': {
      const { createScalewayApi, readSecretKey, ScalewayProvider } = await import('./scaleway.ts');
      const secretKey = readSecretKey(registry.secretKey);
      const api = createScalewayApi({ apiEndpoint: registry.apiEndpoint, registry, secretKey, fetchFunction: transportFetch(clients.transport) });
      const provider = new ScalewayProvider({ registry, insecure: access.insecure, api, secretKey });
      clients.setProviderAccess(registry.host, provider.access());
      return provider;
    }
  }
}
