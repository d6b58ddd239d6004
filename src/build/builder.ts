import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { InvalidInputError, MirrorfleetError } from '../errors.ts';

/**
 * Builders behind one interface. A builder builds one Dockerfile for one or more platforms, uses a
 * registry repository as its layer cache (reading and writing it), pushes the result, and returns the
 * digest it pushed. It runs its command through execa, so no argument passes through a shell.
 */

export interface BuildSpec {
  /** Folder sent to the builder as the build context. */
  contextDir: string;
  /** Absolute path of the Dockerfile. */
  dockerfile: string;
  /** `host/repository:tag` to push. */
  target: string;
  /** `host/repository` of the layer cache. */
  cacheRepository: string;
  /** Canonical platforms, such as `linux/amd64`; several make an image index. */
  platforms: string[];
  /** Plain variables, passed as build arguments. */
  buildArgs: { name: string; value: string }[];
  /** Secret variables, each in a file of its own, passed as build secrets (`RUN --mount=type=secret,id=NAME`). */
  secrets: { id: string; file: string }[];
  /** Registries to reach over plain HTTP. */
  insecureRegistries: string[];
  /** Credentials per registry host, for the base images, the cache and the target. */
  credentials: { host: string; username: string; password: string }[];
  /** Scratch folder of this build: storage, configuration files. The caller removes it. */
  workDir: string;
  timeoutMs: number;
}

export interface BuildOutcome {
  /** Digest of the manifest or index pushed to `target`. */
  digest: string;
  /** Build steps taken from the layer cache, when the builder's output shows them. */
  cachedSteps?: number;
  /** Build steps in all, when the builder's output shows them. */
  steps?: number;
}

export interface Builder {
  readonly name: 'buildah' | 'docker-buildx';
  /** Builds and pushes. `onLine` receives every output line. Throws a MirrorfleetError with the last lines on failure. */
  build(spec: BuildSpec, onLine: (line: string) => void): Promise<BuildOutcome>;
}

/** Returns the path of `command` on PATH, or undefined. */
export function findExecutable(command: string): string | undefined {
  for (const directory of (process.env.PATH ?? '').split(delimiter)) {
    if (directory === '') continue;
    const candidate = join(directory, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  return undefined;
}

/**
 * Errors in the builder's output that mean the Dockerfile or the files it names are wrong, so that
 * building again cannot help. Messages as buildah 1.28 and BuildKit print them.
 */
const DOCKERFILE_ERRORS = [
  /unknown instruction/i,
  /no FROM statement found/i,
  /requires (?:at least|exactly) (?:one|two) argument/i,
  /checking on sources under .*no such file or directory/i,
  /no stage or image found with that name/i,
  /repository name must be lowercase|invalid reference format/i,
  /manifest unknown|not found: manifest unknown/i,
  /secret required but no secret with id/i,
  /dockerfile parse error|failed to parse dockerfile|failed to solve: dockerfile/i,
  /failed to compute cache key: .*not found/i,
];

/** Turns a failed build into an error carrying the builder's last lines. The error is not retryable when the Dockerfile is at fault. */
export function buildFailure(builder: string, exitCode: number | undefined, tail: string[], timedOutAfterMs?: number): MirrorfleetError {
  const lines = tail.join('\n');
  if (timedOutAfterMs !== undefined) {
    return new MirrorfleetError('TIMEOUT', `${builder} did not finish within ${Math.round(timedOutAfterMs / 1000)} s (build.timeoutSeconds); last output:\n${lines}`);
  }
  if (DOCKERFILE_ERRORS.some((pattern) => pattern.test(lines))) {
    return new InvalidInputError(`the build failed because of the Dockerfile or the files it names (${builder} exited with ${exitCode}); last output:\n${lines}`);
  }
  // Retryable because a failing RUN step may be a network failure that passes.
  return new MirrorfleetError('BUILD_FAILED', `the build failed: ${builder} exited with ${exitCode}; last output:\n${lines}`, { retryable: true });
}
