import { ECRClient } from '@aws-sdk/client-ecr';
import type { Config, MirrorRegistryConfig } from '../config/config.ts';
import { registryAccess } from '../config/config.ts';
import type { RegistryClients } from '../mirror/clients.ts';
import { EcrProvider } from './ecr.ts';
import { GenericProvider } from './generic.ts';
import type { TargetProvider } from './provider.ts';
import { ArtifactRegistryProvider, createArtifactRegistryClient } from './artifact-registry.ts';
import { RefreshingCredentials } from './credentials.ts';
import { fetchDefaultCredentialsToken, fetchServiceAccountToken, readServiceAccountKey } from './google-tokens.ts';
import { createScalewayApi, readSecretKey, ScalewayProvider } from './scaleway.ts';
import { TransportRequestHandler, transportFetch } from './sdk-http.ts';

export type { TargetProvider, MirrorLocation, TargetName } from './provider.ts';

// One provider per mirror registry and RegistryClients (that is, per process), so that cloud API clients,
// push tokens and the repositories known to exist are shared by every job.
const providers = new WeakMap<RegistryClients, Map<MirrorRegistryConfig, TargetProvider>>();

/**
 * Returns the provider of a declared mirror registry, creating it on first use. A cloud provider also
 * registers the access to its registry host with `clients`: its renewing push credentials, and repository
 * creation when a push finds the repository missing.
 */
export function createProvider(registry: MirrorRegistryConfig, config: Config, clients: RegistryClients): TargetProvider {
  let byRegistry = providers.get(clients);
  if (!byRegistry) {
    byRegistry = new Map();
    providers.set(clients, byRegistry);
  }
  let provider = byRegistry.get(registry);
  if (!provider) {
    provider = newProvider(registry, config, clients);
    byRegistry.set(registry, provider);
  }
  return provider;
}

function newProvider(registry: MirrorRegistryConfig, config: Config, clients: RegistryClients): TargetProvider {
  const access = registryAccess(config, registry.host);
  switch (registry.provider) {
    case 'generic': {
      const credentials = access.username !== undefined && access.password !== undefined ? { username: access.username, password: access.password } : undefined;
      return new GenericProvider({ name: registry.name, host: registry.host, prefix: registry.prefix, insecure: access.insecure, credentials, client: clients.get(registry.host) });
    }
    case 'ecr': {
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
      const fetchFunction = transportFetch(clients.transport);
      const key = registry.credentialsFile ? readServiceAccountKey(registry.credentialsFile) : undefined;
      const tokens = new RefreshingCredentials(() => (key ? fetchServiceAccountToken(key, fetchFunction) : fetchDefaultCredentialsToken()));
      const client = createArtifactRegistryClient({ apiEndpoint: registry.apiEndpoint, tokens, fetchFunction });
      const provider = new ArtifactRegistryProvider({ registry, insecure: access.insecure, client, tokens });
      clients.setProviderAccess(registry.host, provider.access());
      return provider;
    }
    case 'scaleway': {
      const secretKey = readSecretKey(registry.secretKey);
      const api = createScalewayApi({ apiEndpoint: registry.apiEndpoint, registry, secretKey, fetchFunction: transportFetch(clients.transport) });
      const provider = new ScalewayProvider({ registry, insecure: access.insecure, api, secretKey });
      clients.setProviderAccess(registry.host, provider.access());
      return provider;
    }
  }
}
