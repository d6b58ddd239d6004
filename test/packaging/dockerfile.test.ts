/**
 * The Dockerfile and .dockerignore, read without building. `npm run test:image` builds the image with
 * buildah and runs it; these checks catch the same mistakes early and inside `npm test`.
 */

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { lastInstruction, PROJECT_ROOT, readDockerfile, stageChain, type Dockerfile } from './helpers.ts';

let dockerfile: Dockerfile;

beforeAll(() => {
  dockerfile = readDockerfile(join(PROJECT_ROOT, 'Dockerfile'));
});

/**
 * Converts a .dockerignore pattern to a regular expression with Go's filepath.Match rules, which Docker
 * and buildah use: `*` and `?` stop at `/` but match a leading dot, and `**` matches any number of folders.
 */
function patternRegExp(glob: string): RegExp {
  let source = '';
  for (let index = 0; index < glob.length; index += 1) {
    const character = glob[index]!;
    if (character === '*' && glob[index + 1] === '*') {
      source += '.*';
      index += 1;
    } else if (character === '*') source += '[^/]*';
    else if (character === '?') source += '[^/]';
    else source += character.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/** Applies .dockerignore rules as Docker does: the last matching pattern wins, and `!` re-includes. */
function ignoredByDockerignore(path: string): boolean {
  const patterns = readFileSync(join(PROJECT_ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  // A pattern also matches every path inside a folder that it matches.
  const prefixes = path.split('/').map((_, index, parts) => parts.slice(0, index + 1).join('/'));
  let ignored = false;
  for (const pattern of patterns) {
    const negated = pattern.startsWith('!');
    const matcher = patternRegExp((negated ? pattern.slice(1) : pattern).replace(/\/$/, ''));
    if (prefixes.some((prefix) => matcher.test(prefix))) ignored = !negated;
  }
  return ignored;
}

/** Parses the JSON (exec) form of ENTRYPOINT or CMD. */
function execForm(text: string | undefined): string[] {
  return JSON.parse(text ?? 'null') as string[];
}

describe('Dockerfile', () => {
  it('defaults to the official Node 24 image', () => {
    expect(dockerfile.globalArgs.get('NODE_IMAGE')).toBe('docker.io/library/node:24-slim');
    const stageNames = new Set(dockerfile.stages.map((stage) => stage.name));
    for (const stage of dockerfile.stages) expect(stage.base === '${NODE_IMAGE}' || stageNames.has(stage.base), `FROM ${stage.base}`).toBe(true);
  });

  it('builds the runtime target by default', () => {
    expect(dockerfile.stages.map((stage) => stage.name)).toEqual(['dependencies', 'compile', 'app', 'build-worker', 'runtime']);
  });

  it('installs production dependencies only', () => {
    const runs = stageChain(dockerfile, 'dependencies').flatMap((stage) => stage.instructions).filter((instruction) => instruction.keyword === 'RUN');
    expect(runs.some((run) => /\bnpm ci\b.*--omit=dev/.test(run.arguments))).toBe(true);
    const copies = stageChain(dockerfile, 'app').flatMap((stage) => stage.instructions).filter((instruction) => instruction.keyword === 'COPY');
    expect(copies.filter((copy) => copy.arguments.startsWith('--from=')).map((copy) => copy.arguments)).toEqual([
      '--from=dependencies /app/node_modules ./node_modules',
      '--from=compile /app/dist ./dist',
    ]);
  });

  it('copies files the context holds', () => {
    const copies = stageChain(dockerfile, 'app').flatMap((stage) => stage.instructions).filter((instruction) => instruction.keyword === 'COPY' && !instruction.arguments.startsWith('--'));
    const earlier = ['dependencies', 'compile'].flatMap((name) => stageChain(dockerfile, name)).flatMap((stage) => stage.instructions).filter((instruction) => instruction.keyword === 'COPY');
    const sources = [...copies, ...earlier].flatMap((copy) => copy.arguments.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(join(PROJECT_ROOT, source)), source).toBe(true);
      expect(ignoredByDockerignore(source), `${source} in .dockerignore`).toBe(false);
    }
  });

  it('compiles every source folder and ships only the compiled code', () => {
    const copiedBy = (name: string) =>
      stageChain(dockerfile, name)
        .at(-1)!
        .instructions.filter((instruction) => instruction.keyword === 'COPY')
        .flatMap((copy) => copy.arguments.split(/\s+/).slice(0, -1).filter((word) => !word.startsWith('--')));
    for (const folder of ['src', 'queues', 'workers', 'tsconfig.json', 'tsconfig.build.json']) expect(copiedBy('compile'), folder).toContain(folder);
    expect(stageChain(dockerfile, 'compile').at(-1)!.instructions.at(-1)).toMatchObject({ keyword: 'RUN', arguments: 'npm run build' });
    const shipped = copiedBy('app');
    for (const path of ['bin', '/app/dist', 'package.json']) expect(shipped, path).toContain(path);
    for (const folder of ['src', 'queues', 'workers']) expect(shipped, `${folder} is not shipped: bin/mirrorfleet.js runs dist/ only without it`).not.toContain(folder);
  });

  it('excludes node_modules and tests', () => {
    for (const path of ['node_modules/bullmq/package.json', '.tools/node', 'test/packaging/dockerfile.test.ts', '.git/HEAD', '.tmp/image-base']) {
      expect(ignoredByDockerignore(path), path).toBe(true);
    }
  });

  it('sets non-root user and entry point', () => {
    const binary = (JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin.mirrorfleet;
    const runs = stageChain(dockerfile, 'app').flatMap((stage) => stage.instructions).filter((instruction) => instruction.keyword === 'RUN');
    expect(runs.some((run) => run.arguments.includes(`ln -s /app/${binary} /usr/local/bin/mirrorfleet`))).toBe(true);

    for (const target of ['runtime', 'build-worker']) {
      const chain = stageChain(dockerfile, target);
      const user = lastInstruction(chain, 'USER') ?? '';
      expect(user, target).toMatch(/^[1-9][0-9]*:[1-9][0-9]*$/);
      expect(execForm(lastInstruction(chain, 'ENTRYPOINT')).at(-1), target).toBe('mirrorfleet');
      expect(execForm(lastInstruction(chain, 'CMD')), target).toEqual(['worker']);
    }
  });

  it('adds buildah to build-worker target', () => {
    const runs = stageChain(dockerfile, 'build-worker').at(-1)!.instructions.filter((instruction) => instruction.keyword === 'RUN');
    const install = runs.map((run) => run.arguments).find((text) => text.includes('apt-get install')) ?? '';
    for (const name of ['buildah', 'uidmap', 'git', 'tini']) expect(install.split(/\s+/), name).toContain(name);
  });
});
