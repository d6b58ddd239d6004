import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildFailure, type BuildOutcome, type BuildSpec, type Builder } from './builder.ts';
import { runCommand } from './command.ts';

/**
 * The buildah builder, checked with buildah 1.28 running as root. Each build gets its own storage under
 * the scratch folder, so concurrent builds share nothing and removing the scratch folder frees
 * everything. Layers come back from the cache repository instead (`--cache-from`, `--cache-to`).
 *
 * - `--isolation chroot` with the `vfs` storage driver runs `RUN` steps on hosts where
 *   `--isolation oci` fails because it cannot set up cgroup controllers.
 * - A registries.conf of the build's own marks the insecure registries, so TLS stays verified for the
 *   others. Its one search registry is `docker.io`, which resolves short names as Docker does.
 * - Plain variables become `--build-arg`. buildah records build-argument values in the image history
 *   (`|1 NAME=value /bin/sh -c ...`), which is why secrets go only through `--secret`.
 *
 * NOTE: in buildah 1.28, an `ARG` step is never taken from the remote cache, and no step after a missed
 * step is either, so with a fresh storage only the steps before the first `ARG` come from the cache.
 * Putting `ARG` lines after the slow steps keeps them cached.
 *
 * NOTE: buildah 1.28's layer cache keys leave out the platform. A build for several platforms with
 * `--layers` reuses one platform's image for the others and pushes an index that lacks them, so such
 * builds run without the layer cache. Single-platform builds of a `FROM scratch` stage can still take a
 * cached layer that another platform's build made, with that platform in its configuration.
 */

export class BuildahBuilder implements Builder {
  readonly name = 'buildah' as const;
  private readonly command: string;

  constructor(command = 'buildah') {
    this.command = command;
  }

  async build(spec: BuildSpec, onLine: (line: string) => void): Promise<BuildOutcome> {
    const paths = buildahPaths(spec.workDir);
    await mkdir(paths.tmp, { recursive: true, mode: 0o700 });
    await writeFile(paths.registriesConf, registriesConf(spec.insecureRegistries), { mode: 0o600 });
    if (spec.credentials.length > 0) await writeFile(paths.authFile, authFile(spec.credentials), { mode: 0o600 });

    const commands = buildahCommands(spec);
    // buildah writes large temporary files to TMPDIR, so TMPDIR points into the scratch folder.
    const env = { TMPDIR: paths.tmp };
    const started = Date.now();
    let cachedSteps = 0;
    let steps = 0;
    const count = (line: string) => {
      if (/^STEP \d+\/\d+: /.test(line)) steps += 1;
      if (/^--> Using cache /.test(line)) cachedSteps += 1;
      onLine(line);
    };

    const built = await runCommand(this.command, commands.build, { env, timeoutMs: spec.timeoutMs }, count);
    if (built.exitCode !== 0) throw buildFailure(this.name, built.exitCode, built.tail, built.timedOut ? spec.timeoutMs : undefined);

    const remainingMs = Math.max(1_000, spec.timeoutMs - (Date.now() - started));
    const pushed = await runCommand(this.command, commands.push, { env, timeoutMs: remainingMs }, onLine);
    if (pushed.exitCode !== 0) throw buildFailure(this.name, pushed.exitCode, pushed.tail, pushed.timedOut ? spec.timeoutMs : undefined);

    const digest = (await readFile(paths.digestFile, 'utf8')).trim();
    return usesLayerCache(spec) ? { digest, cachedSteps, steps } : { digest, steps };
  }
}

/** Paths inside the scratch folder that the buildah builder uses. */
export function buildahPaths(workDir: string) {
  return {
    storage: join(workDir, 'buildah', 'storage'),
    runRoot: join(workDir, 'buildah', 'run'),
    tmp: join(workDir, 'buildah', 'tmp'),
    registriesConf: join(workDir, 'buildah', 'registries.conf'),
    authFile: join(workDir, 'buildah', 'auth.json'),
    digestFile: join(workDir, 'buildah', 'digest'),
  };
}

/** Returns the argument lists of the build and the push. Exported for tests of what reaches buildah. */
export function buildahCommands(spec: BuildSpec): { build: string[]; push: string[] } {
  const paths = buildahPaths(spec.workDir);
  const global = ['--root', paths.storage, '--runroot', paths.runRoot, '--storage-driver', 'vfs', '--registries-conf', paths.registriesConf];
  const auth = spec.credentials.length > 0 ? ['--authfile', paths.authFile] : [];
  const index = spec.platforms.length > 1;
  const cache = usesLayerCache(spec) ? ['--layers', '--cache-from', spec.cacheRepository, '--cache-to', spec.cacheRepository] : [];

  const build = [
    ...global,
    'build',
    '--isolation', 'chroot',
    ...cache,
    '--file', spec.dockerfile,
    '--platform', spec.platforms.join(','),
    // With several platforms buildah collects the images in a local manifest list of that name.
    ...(index ? ['--manifest', spec.target] : ['--tag', spec.target]),
    ...auth,
    ...spec.buildArgs.flatMap((variable) => ['--build-arg', `${variable.name}=${variable.value}`]),
    ...spec.secrets.flatMap((secret) => ['--secret', `id=${secret.id},src=${secret.file}`]),
    spec.contextDir,
  ];
  const push = index
    ? [...global, 'manifest', 'push', '--all', '--digestfile', paths.digestFile, ...auth, spec.target, `docker://${spec.target}`]
    : [...global, 'push', '--digestfile', paths.digestFile, ...auth, spec.target, `docker://${spec.target}`];
  return { build, push };
}

/** Returns true when the build uses the layer cache: with one platform only (see the NOTE above). */
function usesLayerCache(spec: BuildSpec): boolean {
  return spec.platforms.length === 1;
}

function registriesConf(insecureRegistries: string[]): string {
  const entries = insecureRegistries.map((host) => `\n[[registry]]\nlocation = ${JSON.stringify(host)}\ninsecure = true\n`);
  return `unqualified-search-registries = ["docker.io"]\n${entries.join('')}`;
}

/** The containers-auth.json format, which is also the `auths` part of a docker config.json. */
function authFile(credentials: BuildSpec['credentials']): string {
  const auths: Record<string, { auth: string }> = {};
  for (const entry of credentials) auths[entry.host] = { auth: Buffer.from(`${entry.username}:${entry.password}`).toString('base64') };
  return JSON.stringify({ auths });
}
