import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildFailure, type BuildOutcome, type BuildSpec, type Builder } from './builder.ts';
import { runCommand } from './command.ts';

/**
 * The `docker buildx` builder (BuildKit). It builds and pushes in one command, with the cache
 * repository as a registry cache (`mode=max`, so every stage's layers are cached).
 *
 * NOTE: never run here: this machine has no Docker daemon, so only the argument list is tested.
 * Registry credentials come from the Docker configuration of the worker's user (`docker login`),
 * because pointing DOCKER_CONFIG elsewhere would also hide the buildx builder instances kept there.
 */

export class DockerBuildxBuilder implements Builder {
  readonly name = 'docker-buildx' as const;
  private readonly command: string;

  constructor(command = 'docker') {
    this.command = command;
  }

  async build(spec: BuildSpec, onLine: (line: string) => void): Promise<BuildOutcome> {
    let cachedSteps = 0;
    const count = (line: string) => {
      if (/^#\d+ CACHED$/.test(line)) cachedSteps += 1;
      onLine(line);
    };
    const result = await runCommand(this.command, dockerBuildxArguments(spec), { timeoutMs: spec.timeoutMs }, count);
    if (result.exitCode !== 0) throw buildFailure(this.name, result.exitCode, result.tail, result.timedOut ? spec.timeoutMs : undefined);

    const metadata = JSON.parse(await readFile(metadataFile(spec.workDir), 'utf8')) as Record<string, unknown>;
    const digest = metadata['containerimage.digest'];
    if (typeof digest !== 'string') throw buildFailure(this.name, 0, ['the metadata file has no containerimage.digest']);
    return { digest, cachedSteps };
  }
}

/** Returns the arguments of `docker buildx build`. Exported for tests of what reaches docker. */
export function dockerBuildxArguments(spec: BuildSpec): string[] {
  const insecure = (reference: string) => (spec.insecureRegistries.includes(registryOf(reference)) ? ',registry.insecure=true' : '');
  return [
    'buildx',
    'build',
    '--progress', 'plain',
    '--file', spec.dockerfile,
    '--platform', spec.platforms.join(','),
    ...spec.buildArgs.flatMap((variable) => ['--build-arg', `${variable.name}=${variable.value}`]),
    ...spec.secrets.flatMap((secret) => ['--secret', `id=${secret.id},src=${secret.file}`]),
    '--cache-from', `type=registry,ref=${spec.cacheRepository}${insecure(spec.cacheRepository)}`,
    '--cache-to', `type=registry,ref=${spec.cacheRepository},mode=max${insecure(spec.cacheRepository)}`,
    '--output', `type=image,name=${spec.target},push=true${insecure(spec.target)}`,
    '--metadata-file', metadataFile(spec.workDir),
    spec.contextDir,
  ];
}

/** Returns the registry host of `host/repository[:tag]`. */
function registryOf(reference: string): string {
  return reference.slice(0, reference.indexOf('/'));
}

function metadataFile(workDir: string): string {
  return join(workDir, 'buildx-metadata.json');
}
