import { describe, expect, test } from 'vitest';
import { parseMirrorRequest } from '../../queues/mirror.ts';
import { InvalidInputError } from '../../src/errors.ts';

/** Platform names in the mirror request schema, which the CLI, the API and the workers share. */

function parsePlatforms(platforms: string[]) {
  return parseMirrorRequest({ v: 1, source: 'nginx:1.27', registry: 'local', cluster: 'prod', service: 'web', platforms });
}

describe('mirror request platforms', () => {
  test.each(['linux/amd64', 'linux/amd64/v3', 'linux/arm64', 'linux/arm64/v8', 'linux/arm/v5', 'linux/arm/v7', 'linux/386', 'linux/s390x', 'linux/riscv64', 'windows/amd64', 'darwin/arm64'])(
    'accepts %s',
    (platform) => {
      expect(parsePlatforms([platform]).platforms).toEqual([platform]);
    },
  );

  // Each case: platform, and the part of the message that names the problem and the fix.
  const rejected: [string, string][] = [
    ['linux/aarch64', 'platforms.0 ("linux/aarch64"): unknown architecture "aarch64" (did you mean linux/arm64?); accepted: 386, amd64,'],
    ['linux/x86_64', 'unknown architecture "x86_64" (did you mean linux/amd64?)'],
    ['linux/armhf', 'unknown architecture "armhf" (did you mean linux/arm/v7?)'],
    ['linux/i686', 'unknown architecture "i686" (did you mean linux/386?)'],
    ['linux/m68k', 'unknown architecture "m68k"; accepted: 386,'],
    ['macos/arm64', 'unknown os "macos" (did you mean darwin/arm64?); accepted: aix,'],
    ['beos/amd64', 'unknown os "beos"; accepted: aix,'],
    ['linux/arm/v9', 'unknown variant "v9" of arm; accepted: v5, v6, v7, v8'],
    ['linux/arm64/v7', 'unknown variant "v7" of arm64; accepted: v8'],
    ['linux/386/v2', 'architecture 386 takes no variant, found "v2"; write linux/386'],
  ];

  test.each(rejected)('rejects %s', (platform, message) => {
    expect(() => parsePlatforms([platform])).toThrow(InvalidInputError);
    expect(() => parsePlatforms([platform])).toThrow(message);
  });

  test('names the index of each bad entry', () => {
    expect(() => parsePlatforms(['linux/amd64', 'linux/aarch64'])).toThrow('platforms.1 ("linux/aarch64")');
  });
});
