import type { Config, MirrorRegistryConfig } from '../config/config.ts';
import { registryAccess } from '../config/config.ts';
import { GenericProvider } from './generic.ts';
import type { TargetProvider } from './provider.ts';
import type { RegistryClients } from '../mirror/clients.ts';

export type { TargetProvider, MirrorLocation, TargetName } from './provider.ts';

/** Creates the provider of a declared mirror registry. */
export function createProvider(registry: MirrorRegistryConfig, config: Config, clients: RegistryClients): TargetProvider {
  const access = registryAccess(config, registry.host);
  const credentials = access.username !== undefined && access.password !== undefined ? { username: access.username, password: access.password } : undefined;
  switch (registry.provider) {
    case 'generic':
      return new GenericProvider({ name: registry.name, host: registry.host, prefix: registry.prefix, insecure: access.insecure, credentials, client: clients.get(registry.host) });
  }
}
