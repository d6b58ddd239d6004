import { describe, expect, test } from 'vitest';
import { createHash } from 'node:crypto';
import { buildTag, serialiseBuildContext, taggedVariables, type BuildContextInput } from '../../src/build/context-tag.ts';
import { declaredArgNames } from '../../src/build/dockerfile.ts';
import { normaliseDockerfilePath, normaliseRootPath } from '../../src/build/paths.ts';
import { normalisePlatform, targetPlatforms } from '../../src/build/platforms.ts';
import { hmacValue, parseSecretKey } from '../../src/build/secret-key.ts';
import { ConfigError, InvalidInputError } from '../../src/errors.ts';

// The vectors below are also in the README ("Build jobs"); a Python implementation written from that
// description gives the same values.
const KEY = parseSecretKey(Buffer.alloc(32, 7).toString('base64'));
const DOCKERFILE = Buffer.from('FROM busybox:1.38\nARG GREETING=hello\nARG API_TOKEN\nRUN echo "$GREETING"\n');
const BASE: BuildContextInput = {
  commit: 'a'.repeat(40),
  root: '.',
  dockerfile: 'Dockerfile',
  dockerfileContent: DOCKERFILE,
  platforms: ['linux/amd64'],
  variables: [],
};

describe('build tag vectors', () => {
  test('context without variables', () => {
    expect(serialiseBuildContext(BASE).toString('utf8')).toBe(
      '28:mirrorfleet-build-context/v1\n40:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n1:.\n10:Dockerfile\n' +
        '72:FROM busybox:1.38\nARG GREETING=hello\nARG API_TOKEN\nRUN echo "$GREETING"\n\n1:1\n11:linux/amd64\n1:0\n',
    );
    expect(buildTag(BASE)).toBe('08bda7a15a9af7c9359136a9c5458ccff32afe04926598c58dae386724a862b8');
  });

  test('root, platforms and a plain variable', () => {
    const input: BuildContextInput = {
      ...BASE,
      root: 'services/api',
      dockerfile: '../docker/api.Dockerfile',
      platforms: ['linux/arm64', 'linux/amd64'],
      variables: [
        { name: 'GREETING', value: 'bonjour', secret: false },
        { name: 'UNDECLARED', value: 'x', secret: false },
      ],
    };

    expect(buildTag(input)).toBe('242f32f72b16c7bf1f0d4bfca517412b35e4fbf97a85b42caebd4f5b31fb5f13');
  });

  test('secret variable enters as an HMAC', () => {
    const input: BuildContextInput = {
      ...BASE,
      variables: [
        { name: 'API_TOKEN', value: 's3cr3t', secret: true },
        { name: 'GREETING', value: 'bonjour', secret: false },
      ],
    };
    const serialised = serialiseBuildContext(input, KEY).toString('utf8');

    expect(KEY.id).toBe('1dee809f6937d8bd');
    expect(hmacValue(KEY, 's3cr3t')).toBe('c1e6792df81bd8e2cc02838a8e6a94273aa420a0f419b8767619c091a2f961f6');
    expect(serialised).toContain('9:API_TOKEN\n6:secret\n64:c1e6792df81bd8e2cc02838a8e6a94273aa420a0f419b8767619c091a2f961f6\n');
    expect(serialised).not.toContain('s3cr3t');
    expect(serialised, 'not the plain SHA-256 either').not.toContain(createHash('sha256').update('s3cr3t').digest('hex'));
    expect(buildTag(input, KEY)).toBe('13725ab0dd7d5c850df606f73eca60baa7f8c858c1cbe200e552cb4ae0c611be');
  });
});

describe('build tag inputs', () => {
  const withGreeting = (value: string): BuildContextInput => ({ ...BASE, variables: [{ name: 'GREETING', value, secret: false }] });

  test('undeclared variable leaves the tag', () => {
    const tag = buildTag(withGreeting('bonjour'));
    const withExtra = { ...withGreeting('bonjour'), variables: [...withGreeting('bonjour').variables, { name: 'OTHER', value: 'anything', secret: false }] };

    expect(buildTag(withExtra)).toBe(tag);
    expect(buildTag({ ...withExtra, variables: [...withExtra.variables, { name: 'HIDDEN', value: 'x', secret: true }] })).toBe(tag);
  });

  test('declared variable value changes the tag', () => {
    expect(buildTag(withGreeting('bonjour'))).not.toBe(buildTag(withGreeting('hola')));
    expect(buildTag(withGreeting('bonjour')), 'a given value differs from the default').not.toBe(buildTag(BASE));
  });

  test('each field changes the tag', () => {
    const tag = buildTag(BASE);

    expect(buildTag({ ...BASE, commit: 'b'.repeat(40) })).not.toBe(tag);
    expect(buildTag({ ...BASE, root: 'app' })).not.toBe(tag);
    expect(buildTag({ ...BASE, dockerfile: 'Containerfile' })).not.toBe(tag);
    expect(buildTag({ ...BASE, dockerfileContent: Buffer.concat([DOCKERFILE, Buffer.from('\n')]) })).not.toBe(tag);
    expect(buildTag({ ...BASE, platforms: ['linux/arm64'] })).not.toBe(tag);
  });

  test('platform and variable order do not matter', () => {
    const variables = [
      { name: 'GREETING', value: 'a', secret: false },
      { name: 'API_TOKEN', value: 'b', secret: false },
    ];

    expect(buildTag({ ...BASE, platforms: ['linux/arm64', 'linux/amd64'] })).toBe(buildTag({ ...BASE, platforms: ['linux/amd64', 'linux/arm64'] }));
    expect(buildTag({ ...BASE, variables })).toBe(buildTag({ ...BASE, variables: [...variables].reverse() }));
  });

  test('secret flag changes the tag', () => {
    const plain = { ...BASE, variables: [{ name: 'API_TOKEN', value: 'v', secret: false }] };
    const secret = { ...BASE, variables: [{ name: 'API_TOKEN', value: 'v', secret: true }] };

    expect(buildTag(plain)).not.toBe(buildTag(secret, KEY));
  });

  test('secret HMAC depends on the key', () => {
    const input = { ...BASE, variables: [{ name: 'API_TOKEN', value: 'v', secret: true }] };
    const other = parseSecretKey(Buffer.alloc(32, 8).toString('base64'));

    expect(buildTag(input, KEY)).not.toBe(buildTag(input, other));
  });

  test('declared secret without a key is rejected', () => {
    const input = { ...BASE, variables: [{ name: 'API_TOKEN', value: 'v', secret: true }] };

    expect(() => buildTag(input)).toThrow(ConfigError);
    expect(() => buildTag(input)).toThrow(/API_TOKEN.*MIRRORFLEET_SECRET_KEY/);
  });

  test('length prefixes keep fields apart', () => {
    // Without lengths, moving a character between root and Dockerfile path could give equal input.
    expect(buildTag({ ...BASE, root: 'ab', dockerfile: 'c' })).not.toBe(buildTag({ ...BASE, root: 'a', dockerfile: 'bc' }));
  });

  test('tagged variables keep only declared names', () => {
    const variables = [
      { name: 'GREETING', value: 'a', secret: false },
      { name: 'greeting', value: 'b', secret: false },
    ];

    expect(taggedVariables({ dockerfileContent: DOCKERFILE, variables }).map((variable) => variable.name)).toEqual(['GREETING']);
  });
});

describe('declared ARG names', () => {
  const names = (content: string) => [...declaredArgNames(content)].sort();

  test('keyword in any case, names as written', () => {
    expect(names('FROM x\narg lower\nArg Mixed=1\nARG UPPER\n')).toEqual(['Mixed', 'UPPER', 'lower']);
  });

  test('every stage and several names per line', () => {
    const content = 'ARG BASE=alpine\nFROM $BASE AS build\nARG ONE TWO=2 "THREE"=3\nFROM scratch\n  ARG   FOUR="a b"  FIVE\n';

    expect(names(content)).toEqual(['"THREE"', 'BASE', 'FIVE', 'FOUR', 'ONE', 'TWO']);
  });

  test('continuation lines with comments between', () => {
    const content = 'FROM x\nARG FIRST \\\n# a comment inside\n\n    SECOND=2 \\\n    THIRD\nRUN true\n';

    expect(names(content)).toEqual(['FIRST', 'SECOND', 'THIRD']);
  });

  test('escape directive switches to backtick', () => {
    const content = '# escape=`\nFROM x\nARG FIRST `\n    SECOND\nRUN dir c:\\\n';

    expect(names(content)).toEqual(['FIRST', 'SECOND']);
  });

  test('escape directive after syntax directive', () => {
    expect(names('# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nARG FIRST `\n    SECOND\n')).toEqual(['FIRST', 'SECOND']);
  });

  test('escape directive after comment ignored', () => {
    expect(names('# a comment\n# escape=`\nFROM x\nARG FIRST `\nARG SECOND\n')).toEqual(['FIRST', 'SECOND', '`']);
    expect(names('# unknown=1\n# escape=`\nFROM x\nARG FIRST `\nARG SECOND\n')).toEqual(['FIRST', 'SECOND', '`']);
  });

  test('escape directive after instruction ignored', () => {
    const content = 'FROM x\n# escape=`\nARG FIRST `\nARG SECOND\n';

    // The backtick stays a word of its own, so the line does not continue.
    expect(names(content)).toEqual(['FIRST', 'SECOND', '`']);
  });

  test('comments and other instructions declare nothing', () => {
    expect(names('FROM x\n# ARG COMMENTED\nENV ARG=1\nRUN echo ARG NOT\nLABEL arg=1\n')).toEqual([]);
  });

  test('windows line endings and byte order mark', () => {
    expect(names('\uFEFFFROM x\r\nARG CRLF\r\n')).toEqual(['CRLF']);
  });
});

describe('build paths', () => {
  test('root path normal form', () => {
    expect(normaliseRootPath('.')).toBe('.');
    expect(normaliseRootPath('')).toBe('.');
    expect(normaliseRootPath('./services//api/')).toBe('services/api');
    expect(normaliseRootPath('services/../web')).toBe('web');
  });

  test('root path outside the repository is rejected', () => {
    expect(() => normaliseRootPath('../other')).toThrow(InvalidInputError);
    expect(() => normaliseRootPath('/etc')).toThrow(/relative to the git repository root/);
    expect(() => normaliseRootPath('a\nb')).toThrow(/control characters/);
  });

  test('Dockerfile path stays in repository', () => {
    expect(normaliseDockerfilePath('./Dockerfile', '.')).toBe('Dockerfile');
    expect(normaliseDockerfilePath('../docker/api.Dockerfile', 'services/api')).toBe('../docker/api.Dockerfile');
    expect(() => normaliseDockerfilePath('../Dockerfile', '.')).toThrow(/leaves the git repository/);
    expect(() => normaliseDockerfilePath('/Dockerfile', '.')).toThrow(InvalidInputError);
    expect(() => normaliseDockerfilePath('docker/..', '.')).toThrow(/path of a file/);
  });
});

describe('build platforms', () => {
  test('aliases become canonical', () => {
    expect(normalisePlatform('linux/x86_64')).toBe('linux/amd64');
    expect(normalisePlatform('linux/aarch64')).toBe('linux/arm64');
    expect(normalisePlatform('linux/arm64/v8')).toBe('linux/arm64');
    expect(normalisePlatform('linux/arm')).toBe('linux/arm/v7');
    expect(normalisePlatform('Linux/AMD64')).toBe('linux/amd64');
  });

  test('target platforms are unique and sorted', () => {
    expect(targetPlatforms(['linux/arm64/v8', 'linux/amd64', 'linux/aarch64'])).toEqual(['linux/amd64', 'linux/arm64']);
  });

  test('no platforms means this machine', () => {
    expect(targetPlatforms(undefined)).toHaveLength(1);
    expect(targetPlatforms([])[0]).toMatch(/^linux\//);
  });

  test('invalid platform is rejected', () => {
    expect(() => normalisePlatform('amd64')).toThrow(InvalidInputError);
  });
});
