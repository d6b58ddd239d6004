import { posix } from 'node:path';
import { InvalidInputError } from '../errors.ts';

/**
 * Paths inside the git repository of a build, in the normal form that the build tag hashes: `/`
 * separators, no `.` or empty components, no trailing `/`. Both must stay inside the git repository,
 * because the build only sees the files of the commit.
 */

// Control characters are never part of a sensible path and would garble log lines and messages.
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/**
 * Returns the repository root path (the build context) relative to the git repository root in normal
 * form: `.` for the git repository root itself. Throws InvalidInputError for an absolute path or one
 * that leaves the git repository.
 */
export function normaliseRootPath(root: string): string {
  checkCharacters('git.root', root);
  if (root.startsWith('/')) throw new InvalidInputError(`invalid git.root "${root}": expected a path relative to the git repository root, such as services/api or .`);
  const normal = stripTrailingSlash(posix.normalize(root === '' ? '.' : root));
  if (normal === '..' || normal.startsWith('../')) {
    throw new InvalidInputError(`invalid git.root "${root}": it leaves the git repository; expected a path inside it, such as services/api or .`);
  }
  return normal;
}

/**
 * Returns the Dockerfile path relative to the root path in normal form. It may start with `../` when
 * the Dockerfile lies outside the build context, as long as it stays inside the git repository.
 */
export function normaliseDockerfilePath(dockerfile: string, root: string): string {
  checkCharacters('git.dockerfile', dockerfile);
  if (dockerfile.startsWith('/')) {
    throw new InvalidInputError(`invalid git.dockerfile "${dockerfile}": expected a path relative to git.root, such as Dockerfile or docker/api.Dockerfile`);
  }
  const normal = stripTrailingSlash(posix.normalize(dockerfile));
  if (normal === '.' || normal === '' || normal.endsWith('/..') || normal === '..') {
    throw new InvalidInputError(`invalid git.dockerfile "${dockerfile}": expected the path of a file, such as Dockerfile`);
  }
  const inRepository = posix.normalize(posix.join(root, normal));
  if (inRepository === '..' || inRepository.startsWith('../')) {
    throw new InvalidInputError(`invalid git.dockerfile "${dockerfile}": it leaves the git repository from git.root "${root}"`);
  }
  return normal;
}

/** Returns the Dockerfile's path relative to the git repository root, as git names it in a commit. */
export function dockerfilePathInRepository(root: string, dockerfile: string): string {
  return posix.normalize(posix.join(root, dockerfile));
}

function checkCharacters(field: string, value: string): void {
  if (CONTROL_CHARACTERS.test(value)) throw new InvalidInputError(`invalid ${field} ${JSON.stringify(value)}: control characters are not accepted in paths`);
}

function stripTrailingSlash(path: string): string {
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}
