import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildahCommands } from '../../src/build/buildah.ts';
import { buildFailure, type BuildSpec } from '../../src/build/builder.ts';
import { runCommand } from '../../src/build/command.ts';
import { dockerBuildxArguments } from '../../src/build/docker-buildx.ts';
import { dockerHasBuildx, selectBuilder } from '../../src/build/select-builder.ts';
import { ConfigError, InvalidInputError, MirrorfleetError } from '../../src/errors.ts';

let directory: string;
let canary: string;
let nasty: string;

beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'mirrorfleet-builders-test-'));
  canary = join(directory, 'canary');
  // Would create the canary file if any part of it reached a shell.
  nasty = `$(touch ${canary}); \`touch ${canary}\` && touch ${canary} | "quoted" 'single' > ${canary}.out * ?`;
});

afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

function spec(overrides: Partial<BuildSpec> = {}): BuildSpec {
  return {
    contextDir: '/work/tree/app dir',
    dockerfile: '/work/tree/app dir/Dockerfile',
    target: '127.0.0.1:5000/zabc-app:0123',
    cacheRepository: '127.0.0.1:5000/zabc-app-cache',
    platforms: ['linux/amd64'],
    buildArgs: [{ name: 'GREETING', value: 'hello world' }],
    secrets: [{ id: 'API_TOKEN', file: '/work/secrets/0' }],
    insecureRegistries: ['127.0.0.1:5000'],
    credentials: [],
    workDir: '/work/builder',
    timeoutMs: 60_000,
    ...overrides,
  };
}

describe('buildah arguments', () => {
  test('secrets go as build secrets', () => {
    const { build } = buildahCommands(spec());

    expect(build).toContain('--build-arg');
    expect(build[build.indexOf('--build-arg') + 1]).toBe('GREETING=hello world');
    expect(build[build.indexOf('--secret') + 1]).toBe('id=API_TOKEN,src=/work/secrets/0');
    expect(build.filter((argument) => argument.includes('API_TOKEN'))).toEqual(['id=API_TOKEN,src=/work/secrets/0']);
  });

  test('uses remote cache and own storage', () => {
    const { build } = buildahCommands(spec());

    expect(build.slice(0, 8)).toEqual(['--root', '/work/builder/buildah/storage', '--runroot', '/work/builder/buildah/run', '--storage-driver', 'vfs', '--registries-conf', '/work/builder/buildah/registries.conf']);
    expect(build[build.indexOf('--cache-from') + 1]).toBe('127.0.0.1:5000/zabc-app-cache');
    expect(build[build.indexOf('--cache-to') + 1]).toBe('127.0.0.1:5000/zabc-app-cache');
    expect(build[build.indexOf('--isolation') + 1]).toBe('chroot');
    expect(build).toContain('--layers');
    expect(build.at(-1)).toBe('/work/tree/app dir');
  });

  test('platform count picks image or index', () => {
    const single = buildahCommands(spec());
    const multi = buildahCommands(spec({ platforms: ['linux/amd64', 'linux/arm64'] }));

    expect(single.build[single.build.indexOf('--tag') + 1]).toBe('127.0.0.1:5000/zabc-app:0123');
    expect(single.push.slice(-2)).toEqual(['127.0.0.1:5000/zabc-app:0123', 'docker://127.0.0.1:5000/zabc-app:0123']);
    expect(multi.build[multi.build.indexOf('--platform') + 1]).toBe('linux/amd64,linux/arm64');
    expect(multi.build[multi.build.indexOf('--manifest') + 1]).toBe('127.0.0.1:5000/zabc-app:0123');
    expect(multi.push).toContain('manifest');
    expect(multi.push).toContain('--all');
  });

  test('several platforms build without the layer cache', () => {
    const multi = buildahCommands(spec({ platforms: ['linux/amd64', 'linux/arm64'] }));

    expect(multi.build).not.toContain('--layers');
    expect(multi.build).not.toContain('--cache-from');
    expect(multi.build).not.toContain('--cache-to');
  });

  test('auth file only with credentials', () => {
    expect(buildahCommands(spec()).build).not.toContain('--authfile');
    expect(buildahCommands(spec({ credentials: [{ host: 'r.example', username: 'u', password: 'p' }] })).push).toContain('--authfile');
  });

  test('metacharacters stay inside one argument', () => {
    const { build } = buildahCommands(spec({ buildArgs: [{ name: 'NASTY', value: nasty }], contextDir: `/tmp/a;b $(c)` }));

    expect(build).toContain(`NASTY=${nasty}`);
    expect(build.at(-1)).toBe('/tmp/a;b $(c)');
  });
});

describe('docker buildx arguments', () => {
  test('registry cache and pushed output', () => {
    const args = dockerBuildxArguments(spec());

    expect(args.slice(0, 2)).toEqual(['buildx', 'build']);
    expect(args[args.indexOf('--cache-from') + 1]).toBe('type=registry,ref=127.0.0.1:5000/zabc-app-cache,registry.insecure=true');
    expect(args[args.indexOf('--cache-to') + 1]).toBe('type=registry,ref=127.0.0.1:5000/zabc-app-cache,mode=max,registry.insecure=true');
    expect(args[args.indexOf('--output') + 1]).toBe('type=image,name=127.0.0.1:5000/zabc-app:0123,push=true,registry.insecure=true');
    expect(args[args.indexOf('--secret') + 1]).toBe('id=API_TOKEN,src=/work/secrets/0');
    expect(args.filter((argument) => argument.startsWith('API_TOKEN='))).toEqual([]);
  });

  test('secure registry gets no insecure option', () => {
    const args = dockerBuildxArguments(spec({ insecureRegistries: [] }));

    expect(args.some((argument) => argument.includes('registry.insecure'))).toBe(false);
  });
});

describe('builder command runner', () => {
  test('metacharacters reach command verbatim', async () => {
    const lines: string[] = [];
    const result = await runCommand('printf', ['%s\\n', nasty], { timeoutMs: 10_000 }, (line) => lines.push(line));

    expect(result.exitCode).toBe(0);
    expect(lines).toEqual([nasty]);
    await expect(access(canary), 'the canary file was not created').rejects.toThrow();
  });

  test('failure keeps the last lines', async () => {
    const result = await runCommand('sh', ['-c', 'for i in $(seq 1 50); do echo line $i; done; exit 7'], { timeoutMs: 10_000, tailLines: 5 }, () => undefined);

    expect(result.exitCode).toBe(7);
    expect(result.tail).toEqual(['line 46', 'line 47', 'line 48', 'line 49', 'line 50']);
  });

  test('missing command is reported', async () => {
    const result = await runCommand(join(directory, 'no-such-builder'), [], { timeoutMs: 10_000 }, () => undefined);

    expect(result.exitCode).toBeUndefined();
    expect(result.tail.join('\n')).toMatch(/ENOENT/);
  });

  test('timeout stops the command', async () => {
    const result = await runCommand('sleep', ['30'], { timeoutMs: 200 }, () => undefined);

    expect(result.timedOut).toBe(true);
  });
});

describe('build failures', () => {
  test('Dockerfile errors are not retried', () => {
    for (const line of [
      'Error: building at STEP "FROBNICATE ": Build error: Unknown instruction: "FROBNICATE"',
      'Error: no FROM statement found',
      'Error: building at STEP "COPY missing.txt /x": checking on sources under "/tmp/ctx": copier: stat: "/missing.txt": no such file or directory',
      'Error: creating build container: initializing source docker://r/nope:1: reading manifest 1 in r/nope: manifest unknown: manifest unknown',
    ]) {
      const error = buildFailure('buildah', 125, ['STEP 1/2: FROM x', line]);
      expect(error, line).toBeInstanceOf(InvalidInputError);
      expect(error.message).toContain(line);
    }
  });

  test('other failures are retryable', () => {
    const error = buildFailure('buildah', 3, ['Error: building at STEP "RUN exit 3": exit status 3']);

    expect(error).toBeInstanceOf(MirrorfleetError);
    expect(error.retryable).toBe(true);
    expect(error.message).toContain('exit status 3');
  });

  test('timeout is not retried', () => {
    const error = buildFailure('buildah', undefined, ['STEP 2/9: RUN make'], 60_000);

    expect(error.code).toBe('TIMEOUT');
    expect(error.retryable).toBe(false);
  });
});

describe('builder selection', () => {
  const installed = (...commands: string[]) => (command: string) => (commands.includes(command) ? `/usr/bin/${command}` : undefined);
  const withBuildx = () => true;

  test('auto prefers buildah', () => {
    expect(selectBuilder('auto', installed('buildah', 'docker')).name).toBe('buildah');
    expect(selectBuilder('auto', installed('docker'), withBuildx).name).toBe('docker-buildx');
  });

  test('docker without buildx is not a builder', () => {
    const withoutBuildx = () => false;

    expect(() => selectBuilder('auto', installed('docker'), withoutBuildx)).toThrow(/docker is installed, but "docker buildx version" failed/);
    expect(() => selectBuilder('docker-buildx', installed('docker'), withoutBuildx)).toThrow(ConfigError);
    expect(selectBuilder('auto', installed('buildah', 'docker'), withoutBuildx).name).toBe('buildah');
  });

  test('buildx check runs docker buildx version', async () => {
    // A stand-in docker CLI that has buildx only when its marker file exists.
    const marker = join(directory, 'buildx-installed');
    const docker = join(directory, 'docker');
    await writeFile(docker, `#!/bin/sh\n[ "$1 $2" = "buildx version" ] && [ -e ${marker} ]\n`, { mode: 0o755 });

    expect(dockerHasBuildx(docker)).toBe(false);
    await writeFile(marker, '');
    expect(dockerHasBuildx(docker)).toBe(true);
  });

  test('named builder must be installed', () => {
    expect(selectBuilder('docker-buildx', installed('buildah', 'docker'), withBuildx).name).toBe('docker-buildx');
    expect(() => selectBuilder('buildah', installed('docker'))).toThrow(ConfigError);
    expect(() => selectBuilder('auto', installed())).toThrow(/buildah or docker/);
  });
});
