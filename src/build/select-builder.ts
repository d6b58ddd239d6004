import { createRequire } from 'node:module';
import type { BuilderChoice } from '../config/schema.ts';
import { ConfigError } from '../errors.ts';
import { BuildahBuilder } from './buildah.ts';
import { findExecutable, type Builder } from './builder.ts';
import { DockerBuildxBuilder } from './docker-buildx.ts';

const requireModule = createRequire(import.meta.url);

/**
 * Returns the builder that `choice` names: `auto` takes buildah when it is on PATH, else `docker buildx`
 * when docker is and has the buildx plugin. Throws ConfigError when the chosen builder is not installed.
 */
export function selectBuilder(
  choice: BuilderChoice,
  find: (command: string) => string | undefined = findExecutable,
  hasBuildx: (docker: string) => boolean = dockerHasBuildx,
): Builder {
  const buildah = choice !== 'docker-buildx' ? find('buildah') : undefined;
  if (buildah) return new BuildahBuilder(buildah);
  const docker = choice !== 'buildah' ? find('docker') : undefined;
  if (docker && hasBuildx(docker)) return new DockerBuildxBuilder(docker);
  const wanted = choice === 'auto' ? 'buildah or docker (with the buildx plugin)' : choice === 'buildah' ? 'buildah' : 'docker (with the buildx plugin)';
  const found = docker ? `; ${docker} is installed, but "docker buildx version" failed, so its buildx plugin is missing` : '';
  throw new ConfigError(
    `cannot build: ${wanted} is not installed on this worker (builder "${choice}", MIRRORFLEET_BUILDER)${found}; install it, or run the build queue only on workers that have it`,
  );
}

/** Returns true when `docker buildx version` succeeds, so the docker CLI at `docker` has the buildx plugin. */
export function dockerHasBuildx(docker: string): boolean {
  // execa loads about a hundred modules, so a worker loads it only when it has to check docker.
  const { execaSync } = requireModule('execa') as typeof import('execa');
  try {
    execaSync(docker, ['buildx', 'version'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}
