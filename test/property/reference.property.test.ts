import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { InvalidReferenceError } from '../../src/errors.ts';
import { formatReference, parseReference, type ImageReference } from '../../src/image-ref/reference.ts';
import { soakCount } from '../reliability/helpers.ts';

/**
 * Generated references against the parser: valid ones survive parse, print and parse unchanged;
 * arbitrary text either parses or is rejected with an InvalidReferenceError that reads as a message;
 * shell metacharacters never get through.
 */

const RUNS = soakCount(3_000, 100_000);
// Soak runs take minutes; the default limit of 60 s per test fits only the short runs.
const TIMEOUT_MS = soakCount(60_000, 1_800_000);

const lowerAlphanumeric = fc.stringMatching(/^[a-z0-9]{1,8}$/);
const separator = fc.constantFrom('.', '_', '__', '-', '--');

/** A repository path component: lowercase runs joined by ".", "_", "__" or dashes. */
const component = fc
  .tuple(lowerAlphanumeric, fc.array(fc.tuple(separator, lowerAlphanumeric), { maxLength: 3 }))
  .map(([first, rest]) => first + rest.map(([joiner, part]) => joiner + part).join(''));

const path = fc.array(component, { minLength: 1, maxLength: 4 }).map((parts) => parts.join('/'));

const label = fc.stringMatching(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?$/);
const port = fc.integer({ min: 1, max: 65_535 });

/** A registry host as written by people: a domain, localhost, an IPv4 or bracketed IPv6 address, with an optional port. */
const host = fc.oneof(
  fc.tuple(fc.array(label, { minLength: 2, maxLength: 4 }), fc.option(port)).map(([labels, p]) => labels.join('.') + (p === null ? '' : `:${p}`)),
  fc.tuple(label, port).map(([name, p]) => `${name}:${p}`),
  fc.option(port).map((p) => `localhost${p === null ? '' : `:${p}`}`),
  fc.tuple(fc.ipV4(), fc.option(port)).map(([address, p]) => address + (p === null ? '' : `:${p}`)),
  // The parser accepts no dotted IPv4 part inside an IPv6 address, such as ::ffff:1.2.3.4.
  fc.tuple(fc.ipV6().filter((address) => !address.includes('.')), fc.option(port)).map(([address, p]) => `[${address}]${p === null ? '' : `:${p}`}`),
  fc.constantFrom('docker.io', 'index.docker.io', 'registry-1.docker.io', 'Docker.IO:443'),
);

const tag = fc.stringMatching(/^\w[\w.-]{0,127}$/);
const hex = (length: number) => fc.stringMatching(new RegExp(`^[0-9a-f]{${length}}$`));
const digest = fc.oneof(hex(64).map((h) => `sha256:${h}`), hex(128).map((h) => `sha512:${h}`));

interface ReferenceParts {
  host: string | null;
  path: string;
  tag: string | null;
  digest: string | null;
}

const referenceParts: fc.Arbitrary<ReferenceParts> = fc
  .record({ host: fc.option(host), path, tag: fc.option(tag), digest: fc.option(digest) })
  // distribution/reference limits the repository path, `library/` included, to 255 characters.
  .filter((parts) => parts.path.length <= 240)
  // Without a host, a first component with "." or named localhost would be read as the host.
  .filter((parts) => parts.host !== null || !parts.path.includes('/') || !/^(?:[^/]*\.|localhost\/)/.test(parts.path));

function written(parts: ReferenceParts): string {
  return `${parts.host === null ? '' : `${parts.host}/`}${parts.path}${parts.tag === null ? '' : `:${parts.tag}`}${parts.digest === null ? '' : `@${parts.digest}`}`;
}

/** Text made mostly of the characters references use, so that near misses are frequent. */
const referenceLikeText = fc
  .array(fc.constantFrom(...'abcz019AZ./:@-_[]'.split(''), 'sha256:', 'library/', 'localhost', '::1', ':5000', '__', '--'), { maxLength: 40 })
  .map((parts) => parts.join(''));

/** Every input that the parser must either accept or reject with an InvalidReferenceError. */
const anyText = fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), referenceLikeText, referenceParts.map(written), fc.string({ maxLength: 2_000 }));

/** Characters that mean something to a POSIX shell. */
const SHELL_METACHARACTERS = [';', '&', '|', '$', '`', '<', '>', '(', ')', '{', '}', "'", '"', '\\', '*', '?', '!', '#', '~', ' ', '\n', '\t', '%', '^', '=', ','];

function parseOrError(input: unknown): ImageReference | Error {
  try {
    return parseReference(input as string);
  } catch (error) {
    return error as Error;
  }
}

function expectClearRejection(error: Error, input: unknown): void {
  const shown = typeof input === 'string' ? JSON.stringify(input).slice(0, 120) : `a value of type ${typeof input}`;
  expect(error, `${shown} is rejected with InvalidReferenceError`).toBeInstanceOf(InvalidReferenceError);
  const { message } = error;
  expect(message.startsWith('invalid image reference "')).toBe(true);
  const reason = message.slice(message.indexOf('": ') + 3);
  expect(reason.length, `the message gives a reason: ${message}`).toBeGreaterThan(10);
  // Input is quoted with JSON escapes and cut, so a message stays one readable line.
  expect(message).not.toMatch(/[\u0000-\u001f\u007f]/);
  expect(message.length).toBeLessThan(1_000);
}

describe('reference parser properties', { timeout: TIMEOUT_MS }, () => {
  test('valid references survive parse, print, parse', () => {
    fc.assert(
      fc.property(referenceParts, (parts) => {
        const input = written(parts);
        const parsed = parseReference(input);
        const printed = formatReference(parsed);

        expect(parseReference(printed)).toEqual(parsed);
        expect(formatReference(parseReference(printed))).toBe(printed);
        if (parts.tag !== null) expect(parsed.tag).toBe(parts.tag);
        if (parts.digest !== null) expect(parsed.digest).toBe(parts.digest);
        if (parts.tag === null && parts.digest === null) expect(parsed.tag).toBe('latest');
        expect(parsed.repository.endsWith(parts.path)).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  test('any text parses or is rejected clearly', () => {
    fc.assert(
      fc.property(anyText, (input) => {
        const outcome = parseOrError(input);
        if (outcome instanceof Error) {
          expectClearRejection(outcome, input);
          return;
        }
        const printed = formatReference(outcome);
        expect(parseReference(printed), `${input} prints as ${printed}, which parses back the same`).toEqual(outcome);
      }),
      { numRuns: RUNS },
    );
  });

  test('non-string values rejected clearly', () => {
    fc.assert(
      fc.property(fc.anything({ withBigInt: true, withMap: true, withSet: true }).filter((value) => typeof value !== 'string'), (value) => {
        const outcome = parseOrError(value);
        expect(outcome).toBeInstanceOf(Error);
        expectClearRejection(outcome as Error, value);
      }),
      // Objects that String() cannot convert, which fast-check finds only now and then.
      { numRuns: soakCount(500, 10_000), examples: [[Object.create(null) as unknown], [{ toString: 0 }]] },
    );
  });

  test('shell metacharacters are always rejected', () => {
    const withMetacharacter = fc
      .tuple(referenceParts.map(written), fc.constantFrom(...SHELL_METACHARACTERS), fc.nat())
      .map(([input, character, position]) => {
        const at = position % (input.length + 1);
        return input.slice(0, at) + character + input.slice(at);
      });
    fc.assert(
      fc.property(withMetacharacter, (input) => {
        const outcome = parseOrError(input);
        expect(outcome, `${JSON.stringify(input)} is rejected`).toBeInstanceOf(Error);
        expectClearRejection(outcome as Error, input);
      }),
      { numRuns: RUNS },
    );
  });
});
