import { describe, expect, it } from 'vitest';

import { InvalidReferenceError } from '../../src/errors.ts';
import {
  DOCKER_HUB,
  DOCKER_HUB_ENDPOINT,
  formatReference,
  formatRepository,
  type ImageReference,
  isDigest,
  normalizeRegistryHost,
  parseReference,
  registryEndpoint,
  sameRegistry,
} from '../../src/image-ref/reference.ts';

const SHA256 = `sha256:${'0123456789abcdef'.repeat(4)}`;
const SHA512 = `sha512:${'0123456789abcdef'.repeat(8)}`;

/** Runs `action`, which must throw an InvalidReferenceError, and returns that error. */
function rejectionOf(action: () => unknown): InvalidReferenceError {
  try {
    action();
  } catch (error) {
    if (error instanceof InvalidReferenceError) {
      return error;
    }
    throw new Error(`expected InvalidReferenceError, got ${String(error)}`, { cause: error });
  }
  throw new Error('expected InvalidReferenceError, but nothing was thrown');
}

interface ParseCase {
  input: string;
  expected: ImageReference;
}

const validCases: ParseCase[] = [
  // Docker Hub under every name, with and without the library/ namespace.
  { input: 'bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'library/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'docker.io/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'index.docker.io/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'registry-1.docker.io/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'docker.io/library/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'Docker.IO/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'docker.io:443/bash:5.3', expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3' } },
  { input: 'docker.io/org/img', expected: { registry: 'docker.io', repository: 'org/img', tag: 'latest' } },
  { input: 'org/img', expected: { registry: 'docker.io', repository: 'org/img', tag: 'latest' } },
  { input: 'index.docker.io/org/team/img:1', expected: { registry: 'docker.io', repository: 'org/team/img', tag: '1' } },

  // Default tag, digest only, tag and digest together.
  { input: 'bash', expected: { registry: 'docker.io', repository: 'library/bash', tag: 'latest' } },
  { input: `bash@${SHA256}`, expected: { registry: 'docker.io', repository: 'library/bash', digest: SHA256 } },
  { input: `bash:5.3@${SHA256}`, expected: { registry: 'docker.io', repository: 'library/bash', tag: '5.3', digest: SHA256 } },
  { input: `bash@${SHA512}`, expected: { registry: 'docker.io', repository: 'library/bash', digest: SHA512 } },
  {
    input: `host:5000/app:1.2@${SHA256}`,
    expected: { registry: 'host:5000', repository: 'app', tag: '1.2', digest: SHA256 },
  },

  // Registries that are not Docker Hub: no library/ is added.
  { input: 'localhost/bash', expected: { registry: 'localhost', repository: 'bash', tag: 'latest' } },
  { input: 'LOCALHOST/bash', expected: { registry: 'localhost', repository: 'bash', tag: 'latest' } },
  { input: 'localhost:5000/bash:1', expected: { registry: 'localhost:5000', repository: 'bash', tag: '1' } },
  { input: 'myreg:5000/bash', expected: { registry: 'myreg:5000', repository: 'bash', tag: 'latest' } },
  { input: 'registry.example/team/app:v2', expected: { registry: 'registry.example', repository: 'team/app', tag: 'v2' } },
  { input: '127.0.0.1:5000/app', expected: { registry: '127.0.0.1:5000', repository: 'app', tag: 'latest' } },
  { input: '[::1]:5000/app:1', expected: { registry: '[::1]:5000', repository: 'app', tag: '1' } },
  { input: '[::1]/app', expected: { registry: '[::1]', repository: 'app', tag: 'latest' } },
  { input: '[2001:DB8::1]/app', expected: { registry: '[2001:db8::1]', repository: 'app', tag: 'latest' } },
  { input: '[0:0:0:0:0:0:0:1]:5000/app', expected: { registry: '[::1]:5000', repository: 'app', tag: 'latest' } },

  // Host normalisation inside a reference.
  { input: 'Registry.Example:443/app', expected: { registry: 'registry.example', repository: 'app', tag: 'latest' } },
  { input: 'registry.example:80/app', expected: { registry: 'registry.example:80', repository: 'app', tag: 'latest' } },
  { input: 'registry.example:05000/app', expected: { registry: 'registry.example:5000', repository: 'app', tag: 'latest' } },
  { input: '[::1]:443/app', expected: { registry: '[::1]', repository: 'app', tag: 'latest' } },
  { input: 'localhost:443/app', expected: { registry: 'localhost', repository: 'app', tag: 'latest' } },
  { input: 'myreg:443/app', expected: { registry: 'myreg:443', repository: 'app', tag: 'latest' } },

  // Separators in path components and tag characters.
  { input: 'org/a.b_c__d---e/f-g:Tag_1.0-rc', expected: { registry: 'docker.io', repository: 'org/a.b_c__d---e/f-g', tag: 'Tag_1.0-rc' } },
  { input: 'bash:_', expected: { registry: 'docker.io', repository: 'library/bash', tag: '_' } },
  { input: `bash:${'t'.repeat(128)}`, expected: { registry: 'docker.io', repository: 'library/bash', tag: 't'.repeat(128) } },

  // A port-like suffix without a "/" is a tag, and a dotted single name is a Docker Hub repository, as in
  // distribution/reference.
  { input: 'myreg:5000', expected: { registry: 'docker.io', repository: 'library/myreg', tag: '5000' } },
  { input: 'registry.example', expected: { registry: 'docker.io', repository: 'library/registry.example', tag: 'latest' } },
  { input: 'localhost', expected: { registry: 'docker.io', repository: 'library/localhost', tag: 'latest' } },

  // A 64-hex name is only rejected on its own: inside a path it is an ordinary component.
  { input: `org/${'a'.repeat(64)}`, expected: { registry: 'docker.io', repository: `org/${'a'.repeat(64)}`, tag: 'latest' } },

  // Length limit: 255 characters of repository path, library/ included.
  { input: `org/${'a'.repeat(251)}`, expected: { registry: 'docker.io', repository: `org/${'a'.repeat(251)}`, tag: 'latest' } },
  { input: 'a'.repeat(247), expected: { registry: 'docker.io', repository: `library/${'a'.repeat(247)}`, tag: 'latest' } },
];

describe('parseReference', () => {
  it.each(validCases)('parses $input', ({ input, expected }) => {
    const parsed = parseReference(input);

    expect(parsed.registry, `registry of ${input}`).toBe(expected.registry);
    expect(parsed.repository, `repository of ${input}`).toBe(expected.repository);
    expect(parsed.tag, `tag of ${input}`).toBe(expected.tag);
    expect(parsed.digest, `digest of ${input}`).toBe(expected.digest);
    expect(Object.keys(parsed).sort(), `keys of ${input}`).toEqual(Object.keys(expected).sort());
  });

  interface RejectCase {
    scenario: string;
    input: string;
    /** Fragments the message must contain: the bad value and what is accepted. */
    fragments: string[];
  }

  const rejectCases: RejectCase[] = [
    { scenario: 'empty input', input: '', fragments: ['is empty', '[registry/]repository[:tag][@digest]'] },
    { scenario: 'a leading space', input: ' bash', fragments: ['" bash"', 'whitespace'] },
    { scenario: 'a trailing newline', input: 'bash\n', fragments: ['"bash\\n"', 'whitespace'] },
    { scenario: 'an inner tab', input: 'ba\tsh', fragments: ['"ba\\tsh"', 'whitespace'] },
    { scenario: 'an https scheme', input: 'https://registry.example/app', fragments: ['https://registry.example/app', 'URL scheme', '[registry/]repository'] },
    { scenario: 'a docker scheme', input: 'docker://bash', fragments: ['docker://bash', 'URL scheme'] },
    { scenario: 'an uppercase name', input: 'Bash:5.3', fragments: ['"Bash"', 'must be lowercase', 'write "bash"'] },
    { scenario: 'an uppercase path', input: 'registry.example/Team/app', fragments: ['"Team/app"', 'must be lowercase'] },
    { scenario: 'an uppercase namespace', input: 'MyOrg/app', fragments: ['"MyOrg/app"', 'must be lowercase', '"myorg.example/app"'] },
    { scenario: 'an uppercase Docker Hub path', input: 'docker.io/library/BASH', fragments: ['"library/BASH"', 'must be lowercase'] },
    { scenario: 'a leading separator', input: '-bash', fragments: ['"-bash"', 'component', 'lowercase letters and digits'] },
    { scenario: 'a trailing separator', input: 'bash_', fragments: ['"bash_"', 'component'] },
    { scenario: 'a double period', input: 'ba..sh', fragments: ['"ba..sh"', 'component'] },
    { scenario: 'a triple underscore', input: 'ba___sh', fragments: ['"ba___sh"', 'component'] },
    { scenario: 'a non-ASCII letter', input: 'bäsh', fragments: ['"bäsh"', 'component'] },
    { scenario: 'an empty component', input: 'org//app', fragments: ['"org//app"', 'empty component'] },
    { scenario: 'a leading slash', input: '/bash', fragments: ['empty component'] },
    { scenario: 'a trailing slash', input: 'org/bash/', fragments: ['empty component'] },
    { scenario: 'a registry without repository', input: 'registry.example/', fragments: ['"registry.example"', 'repository name', 'missing'] },
    { scenario: 'a tag without a name', input: ':5.3', fragments: ['repository name is missing'] },
    { scenario: 'a digest without a name', input: `@${SHA256}`, fragments: ['repository name is missing'] },
    { scenario: 'a bare IPv6 host', input: '[::1]:5000', fragments: ['must be followed by "/" and a repository'] },
    { scenario: 'an image ID', input: 'a'.repeat(64), fragments: ['image ID', 'repository@sha256:<hex>'] },
    { scenario: 'a repository over 255 characters', input: `org/${'a'.repeat(252)}`, fragments: ['256 characters', 'maximum is 255'] },
    { scenario: 'an official image over 255 characters', input: 'a'.repeat(248), fragments: ['256 characters', 'maximum is 255'] },
    { scenario: 'an empty tag', input: 'bash:', fragments: ['tag ""', '1 to 128 characters'] },
    { scenario: 'a tag starting with a period', input: 'bash:.x', fragments: ['tag ".x"', 'does not start with "." or "-"'] },
    { scenario: 'a tag starting with a hyphen', input: 'bash:-x', fragments: ['tag "-x"'] },
    { scenario: 'a tag over 128 characters', input: `bash:${'t'.repeat(129)}`, fragments: ['1 to 128 characters'] },
    { scenario: 'a tag with a plus sign', input: 'bash:1+2', fragments: ['tag "1+2"'] },
    { scenario: 'an empty digest', input: 'bash@', fragments: ['digest ""', 'sha256:<64 lowercase hex characters>'] },
    { scenario: 'a short digest', input: `bash@${SHA256.slice(0, -1)}`, fragments: ['63 hex characters', 'expected 64'] },
    { scenario: 'a long digest', input: `bash@${SHA256}0`, fragments: ['65 hex characters', 'expected 64'] },
    { scenario: 'a short sha512 digest', input: `bash@${SHA512.slice(0, -2)}`, fragments: ['126 hex characters', 'expected 128'] },
    { scenario: 'an uppercase digest', input: `bash@${SHA256.toUpperCase().replace('SHA256', 'sha256')}`, fragments: ['uppercase hex', 'lowercase hex'] },
    { scenario: 'an unknown digest algorithm', input: `bash@md5:${'a'.repeat(32)}`, fragments: ['"md5"', 'not supported', 'sha512:<128'] },
    { scenario: 'an uppercase digest algorithm', input: `bash@SHA256:${'a'.repeat(64)}`, fragments: ['"SHA256"', 'not supported'] },
    { scenario: 'a digest without algorithm', input: `bash@${'a'.repeat(64)}`, fragments: ['no algorithm'] },
    { scenario: 'a digest with non-hex characters', input: `bash@sha256:${'g'.repeat(64)}`, fragments: ['other than lowercase hex'] },
    { scenario: 'two digests', input: `bash@${SHA256}@${SHA256}`, fragments: ['other than lowercase hex'] },
    { scenario: 'a tag after the digest', input: `bash@${SHA256}:5.3`, fragments: ['other than lowercase hex'] },
    { scenario: 'an underscore in the host', input: 'my_reg.example/app', fragments: ['"my_reg.example"', 'host name'] },
    { scenario: 'a host label ending in a hyphen', input: 'reg-.example/app', fragments: ['"reg-.example"'] },
    { scenario: 'an empty host label', input: 'reg..example/app', fragments: ['"reg..example"'] },
    { scenario: 'a trailing dot in the host', input: 'registry.example./app', fragments: ['"registry.example."'] },
    { scenario: 'a port of 0', input: 'registry.example:0/app', fragments: ['port "0"', '1 to 65535'] },
    { scenario: 'a port over 65535', input: 'registry.example:65536/app', fragments: ['port "65536"', '1 to 65535'] },
    { scenario: 'a non-numeric port', input: 'registry.example:http/app', fragments: ['port "http"'] },
    { scenario: 'an empty port', input: 'registry.example:/app', fragments: ['port ""'] },
    { scenario: 'an IPv6 host without brackets', input: '::1/app', fragments: ['"::1"', 'in brackets'] },
    { scenario: 'an IPv6 zone identifier', input: '[fe80::1%25eth0]/app', fragments: ['not a valid IPv6 address'] },
    { scenario: 'an IPv4-mapped IPv6 host', input: '[::ffff:127.0.0.1]/app', fragments: ['not a valid IPv6 address'] },
    { scenario: 'an unclosed IPv6 bracket', input: '[::1/app', fragments: ['no "]"'] },
    { scenario: 'text after an IPv6 address', input: '[::1]x/app', fragments: ['text after the IPv6 address'] },
  ];

  it.each(rejectCases)('rejects $scenario', ({ input, fragments }) => {
    const error = rejectionOf(() => parseReference(input));

    expect(error.code, `code for ${JSON.stringify(input)}`).toBe('INVALID_REFERENCE');
    expect(error.retryable, `retryable for ${JSON.stringify(input)}`).toBe(false);
    for (const fragment of fragments) {
      expect(error.message, `message for ${JSON.stringify(input)} names ${fragment}`).toContain(fragment);
    }
  });

  it('rejects non-string input', () => {
    const error = rejectionOf(() => parseReference(42 as unknown as string));

    expect(error.message, 'message names the type').toContain('expected a string, got number');
  });

  it('shows the rejected reference', () => {
    const error = rejectionOf(() => parseReference('registry.example/app:.bad'));

    expect(error.reference, 'error.reference').toBe('registry.example/app:.bad');
    expect(error.message, 'message').toMatch(/^invalid image reference "registry\.example\/app:\.bad": /);
  });

  it('redacts credentials in messages', () => {
    const inputs = [
      'user:s3cret@registry.example/app:1',
      'https://user:s3cret@registry.example/app:1',
      'user:s3cret@localhost/app',
      'user:s3cret@registry.example',
      'user:s3cret@registry.example:5000',
      'user:s3c@ret@registry.example/app',
      'user:s3c/ret@registry.example/app',
      'token-s3cret@registry.example/app@sha256:abc',
    ];
    for (const input of inputs) {
      const error = rejectionOf(() => parseReference(input));

      expect(error.message, `message for ${input}`).not.toContain('s3c');
      expect(error.message, `message for ${input}`).not.toContain('ret@');
      expect(error.reference, `error.reference for ${input}`).not.toContain('s3c');
      expect(error.message, `message for ${input} marks the redaction`).toContain('<redacted>@');
    }
  });

  it('keeps the name before a digest in messages', () => {
    const error = rejectionOf(() => parseReference('registry.example/app:1@sha256:abc'));

    expect(error.reference, 'error.reference').toBe('registry.example/app:1@sha256:abc');
  });

  it('escapes control characters in messages', () => {
    const error = rejectionOf(() => parseReference('ba\u0000sh'));

    expect(error.message, 'message').not.toContain('\u0000');
    expect(error.message, 'message').toContain('ba\\u0000sh');
  });

  it('shortens very long values in messages', () => {
    const error = rejectionOf(() => parseReference(`Bash${'x'.repeat(5000)}`));

    expect(error.message.length, 'message length').toBeLessThan(1000);
    expect(error.message, 'message').toContain('must be lowercase');
  });
});

describe('formatReference', () => {
  const formatCases: Array<{ input: string; printed: string }> = [
    { input: 'bash:5.3', printed: 'docker.io/library/bash:5.3' },
    { input: 'bash', printed: 'docker.io/library/bash:latest' },
    { input: 'index.docker.io/org/img', printed: 'docker.io/org/img:latest' },
    { input: `bash@${SHA256}`, printed: `docker.io/library/bash@${SHA256}` },
    { input: `Host.Example:5000/app:1.2@${SHA256}`, printed: `host.example:5000/app:1.2@${SHA256}` },
    { input: 'registry.example:443/app:V1', printed: 'registry.example/app:V1' },
    { input: '[0::1]:5000/app', printed: '[::1]:5000/app:latest' },
    { input: 'myreg:443/app', printed: 'myreg:443/app:latest' },
  ];

  it.each(formatCases)('prints $input normalised', ({ input, printed }) => {
    expect(formatReference(parseReference(input)), `printed form of ${input}`).toBe(printed);
  });

  it.each(validCases)('round-trips $input', ({ input }) => {
    const parsed = parseReference(input);
    const printed = formatReference(parsed);
    const reparsed = parseReference(printed);

    expect(reparsed, `parse of ${printed}`).toEqual(parsed);
    expect(formatReference(reparsed), `second print of ${input}`).toBe(printed);
  });

  it('prints a hand-built reference as given', () => {
    const ref: ImageReference = { registry: 'registry.example', repository: 'team/app', tag: '1', digest: SHA256 };

    expect(formatReference(ref), 'tag and digest').toBe(`registry.example/team/app:1@${SHA256}`);
    expect(formatReference({ registry: 'registry.example', repository: 'app' }), 'neither tag nor digest').toBe(
      'registry.example/app',
    );
  });
});

describe('formatRepository', () => {
  it('prints registry and repository only', () => {
    const parsed = parseReference(`bash:5.3@${SHA256}`);

    expect(formatRepository(parsed), 'Docker Hub').toBe('docker.io/library/bash');
    expect(formatRepository({ registry: '[::1]:5000', repository: 'a/b' }), 'IPv6 registry').toBe('[::1]:5000/a/b');
  });
});

describe('normalizeRegistryHost', () => {
  const hostCases: Array<{ input: string; normalized: string }> = [
    { input: 'registry.example', normalized: 'registry.example' },
    { input: 'Registry.Example', normalized: 'registry.example' },
    { input: 'Registry.Example:443', normalized: 'registry.example' },
    { input: 'registry.example:0443', normalized: 'registry.example' },
    { input: 'registry.example:80', normalized: 'registry.example:80' },
    { input: 'registry.example:5000', normalized: 'registry.example:5000' },
    { input: 'docker.io', normalized: 'docker.io' },
    { input: 'index.docker.io', normalized: 'docker.io' },
    { input: 'registry-1.docker.io', normalized: 'docker.io' },
    { input: 'Registry-1.Docker.IO:443', normalized: 'docker.io' },
    { input: 'docker.io:5000', normalized: 'docker.io:5000' },
    { input: 'localhost', normalized: 'localhost' },
    { input: 'localhost:443', normalized: 'localhost' },
    { input: 'localhost:5000', normalized: 'localhost:5000' },
    { input: '127.0.0.1', normalized: '127.0.0.1' },
    { input: '127.0.0.1:443', normalized: '127.0.0.1' },
    { input: '[::1]', normalized: '[::1]' },
    { input: '[::1]:443', normalized: '[::1]' },
    { input: '[2001:DB8:0:0:0:0:0:1]:5000', normalized: '[2001:db8::1]:5000' },
    { input: 'myreg', normalized: 'myreg:443' },
    { input: 'myreg:443', normalized: 'myreg:443' },
    { input: 'MyReg:5000', normalized: 'myreg:5000' },
  ];

  it.each(hostCases)('normalises $input', ({ input, normalized }) => {
    expect(normalizeRegistryHost(input), `normalised ${input}`).toBe(normalized);
  });

  it.each(hostCases)('keeps $input stable', ({ input }) => {
    const once = normalizeRegistryHost(input);

    expect(normalizeRegistryHost(once), `normalising ${once} again`).toBe(once);
  });

  it('gives hosts that parse back as registries', () => {
    for (const { input } of hostCases) {
      const host = normalizeRegistryHost(input);

      expect(parseReference(`${host}/app`).registry, `registry of ${host}/app`).toBe(host);
    }
  });

  const badHosts: Array<{ input: string; fragment: string }> = [
    { input: '', fragment: 'empty' },
    { input: 'registry example', fragment: '"registry example"' },
    { input: 'registry.example/app', fragment: '"registry.example/app"' },
    { input: 'https://registry.example', fragment: 'URL scheme' },
    { input: 'registry.example:5000:1', fragment: 'more than one ":"' },
    { input: 'registry.example:', fragment: 'port ""' },
    { input: 'registry.example:99999', fragment: 'port "99999"' },
    { input: '-registry.example', fragment: '"-registry.example"' },
    { input: '::1', fragment: 'in brackets' },
    { input: '[::1', fragment: 'no "]"' },
    { input: '[]', fragment: 'not a valid IPv6 address' },
    { input: '[zz::1]', fragment: 'not a valid IPv6 address' },
    { input: 'user:s3cret@registry.example', fragment: 'contains "@"' },
  ];

  it.each(badHosts)('rejects host $input', ({ input, fragment }) => {
    const error = rejectionOf(() => normalizeRegistryHost(input));

    expect(error.code, `code for ${JSON.stringify(input)}`).toBe('INVALID_REFERENCE');
    expect(error.message, `message for ${JSON.stringify(input)}`).toContain(fragment);
    expect(error.message, `message for ${JSON.stringify(input)} has no credentials`).not.toContain('s3cret');
  });
});

describe('sameRegistry', () => {
  const pairs: Array<{ a: string; b: string; same: boolean }> = [
    { a: 'Registry.Example:443', b: 'registry.example', same: true },
    { a: 'registry.example', b: 'REGISTRY.EXAMPLE', same: true },
    { a: 'registry.example:443', b: 'registry.example:0443', same: true },
    { a: 'docker.io', b: 'index.docker.io', same: true },
    { a: 'docker.io', b: 'registry-1.docker.io:443', same: true },
    { a: '[::1]:5000', b: '[0:0::1]:5000', same: true },
    { a: 'myreg', b: 'myreg:443', same: true },
    { a: 'registry.example', b: 'registry.example:80', same: false },
    { a: 'registry.example', b: 'registry.example:5000', same: false },
    { a: 'registry.example:5000', b: 'registry.example:5001', same: false },
    { a: 'localhost', b: '127.0.0.1', same: false },
    { a: 'localhost:5000', b: '[::1]:5000', same: false },
    { a: 'docker.io', b: 'docker.io:5000', same: false },
    { a: 'registry.example', b: 'other.example', same: false },
  ];

  it.each(pairs)('compares $a with $b', ({ a, b, same }) => {
    expect(sameRegistry(a, b), `${a} vs ${b}`).toBe(same);
    expect(sameRegistry(b, a), `${b} vs ${a}`).toBe(same);
  });

  it('rejects an invalid host', () => {
    const error = rejectionOf(() => sameRegistry('registry.example', 'bad host'));

    expect(error.message, 'message').toContain('"bad host"');
  });
});

describe('registryEndpoint', () => {
  const endpoints: Array<{ registry: string; endpoint: string }> = [
    { registry: 'docker.io', endpoint: 'registry-1.docker.io' },
    { registry: 'index.docker.io', endpoint: 'registry-1.docker.io' },
    { registry: 'registry-1.docker.io', endpoint: 'registry-1.docker.io' },
    { registry: 'Docker.io:443', endpoint: 'registry-1.docker.io' },
    { registry: 'registry.example', endpoint: 'registry.example' },
    { registry: 'registry.example:5000', endpoint: 'registry.example:5000' },
    { registry: 'localhost:5000', endpoint: 'localhost:5000' },
    { registry: '[::1]:5000', endpoint: '[::1]:5000' },
    { registry: 'docker.io:5000', endpoint: 'docker.io:5000' },
  ];

  it.each(endpoints)('maps $registry', ({ registry, endpoint }) => {
    expect(registryEndpoint(registry), `endpoint of ${registry}`).toBe(endpoint);
  });

  it('maps a parsed Docker Hub reference', () => {
    expect(registryEndpoint(parseReference('index.docker.io/bash:5.3').registry), 'endpoint').toBe(DOCKER_HUB_ENDPOINT);
  });

  it('rejects an invalid registry', () => {
    expect(rejectionOf(() => registryEndpoint('')).code, 'code').toBe('INVALID_REFERENCE');
  });
});

describe('isDigest', () => {
  const digests: Array<{ value: string; valid: boolean }> = [
    { value: SHA256, valid: true },
    { value: SHA512, valid: true },
    { value: SHA256.slice(0, -1), valid: false },
    { value: `${SHA256}a`, valid: false },
    { value: `sha256:${'0123456789ABCDEF'.repeat(4)}`, valid: false },
    { value: `SHA256:${SHA256.slice(7)}`, valid: false },
    { value: `sha384:${'a'.repeat(96)}`, valid: false },
    { value: `md5:${'a'.repeat(32)}`, valid: false },
    { value: `sha512:${'a'.repeat(64)}`, valid: false },
    { value: 'a'.repeat(64), valid: false },
    { value: 'sha256:', valid: false },
    { value: '', valid: false },
    { value: ` ${SHA256}`, valid: false },
  ];

  it.each(digests)('checks $value', ({ value, valid }) => {
    expect(isDigest(value), `isDigest(${JSON.stringify(value)})`).toBe(valid);
  });

  it('returns false for non-strings', () => {
    expect(isDigest(undefined as unknown as string), 'undefined').toBe(false);
  });
});

describe('constants', () => {
  it('names Docker Hub and its endpoint', () => {
    expect(DOCKER_HUB, 'DOCKER_HUB').toBe('docker.io');
    expect(DOCKER_HUB_ENDPOINT, 'DOCKER_HUB_ENDPOINT').toBe('registry-1.docker.io');
  });
});
