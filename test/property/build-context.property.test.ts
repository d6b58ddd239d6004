import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { buildTag, serialiseBuildContext, taggedVariables, type BuildContextInput, type BuildVariable } from '../../src/build/context-tag.ts';
import { declaredArgNames } from '../../src/build/dockerfile.ts';
import { parseSecretKey } from '../../src/build/secret-key.ts';
import { ConfigError } from '../../src/errors.ts';
import { soakCount } from '../reliability/helpers.ts';

/**
 * Generated build contexts against the build tag: it is a function of the context and nothing else (not
 * of the order of platforms or variables), any change to a field that the tag covers changes it, two
 * different contexts never serialise alike, and a secret value never appears in the serialisation.
 */

const RUNS = soakCount(1_000, 30_000);
// Soak runs take minutes; the default limit of 60 s per test fits only the short runs.
const TIMEOUT_MS = soakCount(60_000, 1_800_000);
const KEY = parseSecretKey(randomBytes(32).toString('base64'));

const variableName = fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,12}$/);
const variableValue = fc.string({ unit: 'grapheme', maxLength: 40 });
const platform = fc.constantFrom('linux/amd64', 'linux/arm64/v8', 'linux/arm/v7', 'linux/s390x', 'windows/amd64');
const path = fc.array(fc.stringMatching(/^[a-z0-9._-]{1,8}$/).filter((part) => part !== '.' && part !== '..'), { minLength: 1, maxLength: 3 }).map((parts) => parts.join('/'));

const context: fc.Arbitrary<BuildContextInput> = fc
  .record({
    commit: fc.oneof(fc.stringMatching(/^[0-9a-f]{40}$/), fc.stringMatching(/^[0-9a-f]{64}$/)),
    root: fc.oneof(fc.constant('.'), path),
    dockerfile: path,
    base: fc.string({ maxLength: 200 }),
    platforms: fc.uniqueArray(platform, { minLength: 1, maxLength: 4 }),
    variables: fc.uniqueArray(fc.record({ name: variableName, value: variableValue, secret: fc.boolean(), declared: fc.boolean() }), {
      maxLength: 6,
      selector: (variable) => variable.name,
    }),
  })
  .map(({ base, variables, ...rest }) => {
    const declarations = variables.filter((variable) => variable.declared).map((variable) => `ARG ${variable.name}\n`);
    return {
      ...rest,
      dockerfileContent: Buffer.from(`FROM scratch\n${declarations.join('')}# ${base.replace(/\n/g, ' ')}\n`),
      variables: variables.map(({ name, value, secret }) => ({ name, value, secret })),
    };
  });

function shuffled<T>(items: readonly T[], seed: number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i -= 1) {
    const j = (seed + i * 7919) % (i + 1);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy;
}

/** The parts of a context that the tag covers, in a form that two equal contexts share. */
function canonical(input: BuildContextInput): string {
  const tagged = taggedVariables(input).map((variable: BuildVariable) => [variable.name, variable.secret, variable.value]);
  return JSON.stringify([input.commit, input.root, input.dockerfile, input.dockerfileContent.toString('base64'), [...input.platforms].sort(), tagged]);
}

describe('build context tag properties', { timeout: TIMEOUT_MS }, () => {
  test('tag ignores input order', () => {
    fc.assert(
      fc.property(context, fc.nat(), (input, seed) => {
        const tag = buildTag(input, KEY);
        const reordered = { ...input, platforms: shuffled(input.platforms, seed), variables: shuffled(input.variables, seed + 1) };

        expect(tag).toMatch(/^[0-9a-f]{64}$/);
        expect(buildTag(reordered, KEY)).toBe(tag);
        const copy = { ...input, dockerfileContent: Buffer.from(input.dockerfileContent), platforms: [...input.platforms], variables: input.variables.map((variable) => ({ ...variable })) };
        expect(buildTag(copy, KEY)).toBe(tag);
      }),
      { numRuns: RUNS },
    );
  });

  test('different contexts never serialise alike', () => {
    fc.assert(
      fc.property(context, context, (first, second) => {
        const same = serialiseBuildContext(first, KEY).equals(serialiseBuildContext(second, KEY));
        expect(same).toBe(canonical(first) === canonical(second));
      }),
      { numRuns: RUNS },
    );
  });

  test('a field boundary moved changes the serialisation', () => {
    fc.assert(
      fc.property(context, fc.stringMatching(/^[a-z0-9\n]{1,12}$/), (input, moved) => {
        // The same bytes at the end of the Dockerfile path or at the start of its content: only the
        // length prefixes tell the two apart, because both fields may contain the "\n" that ends a field.
        const inPath = { ...input, dockerfile: `${input.dockerfile}\n${moved}` };
        const inContent = { ...input, dockerfileContent: Buffer.concat([Buffer.from(`${moved}\n`), input.dockerfileContent]) };
        expect(serialiseBuildContext(inPath, KEY).equals(serialiseBuildContext(inContent, KEY))).toBe(false);
      }),
      { numRuns: RUNS },
    );
  });

  test('each covered field changes the tag', () => {
    fc.assert(
      fc.property(context, variableValue, (input, otherValue) => {
        const tag = buildTag(input, KEY);
        const flipped = input.commit.replace(/^./, (first) => (first === '0' ? '1' : '0'));

        expect(buildTag({ ...input, commit: flipped }, KEY)).not.toBe(tag);
        expect(buildTag({ ...input, root: `${input.root}x` }, KEY)).not.toBe(tag);
        expect(buildTag({ ...input, dockerfile: `${input.dockerfile}x` }, KEY)).not.toBe(tag);
        expect(buildTag({ ...input, dockerfileContent: Buffer.concat([input.dockerfileContent, Buffer.from(' ')]) }, KEY)).not.toBe(tag);
        expect(buildTag({ ...input, platforms: [...input.platforms, 'linux/riscv64'] }, KEY)).not.toBe(tag);

        const declared = declaredArgNames(input.dockerfileContent.toString('utf8'));
        for (const [index, variable] of input.variables.entries()) {
          const variables = input.variables.map((entry, position) => (position === index ? { ...entry, value: otherValue } : entry));
          const changed = buildTag({ ...input, variables }, KEY) !== tag;
          expect(changed, `changing ${variable.name} (declared: ${declared.has(variable.name)})`).toBe(declared.has(variable.name) && otherValue !== variable.value);
        }
      }),
      { numRuns: RUNS },
    );
  });

  test('secret values never appear in the serialisation', () => {
    const secretContext = context.map((input) => ({
      ...input,
      variables: input.variables.map((variable) => ({ ...variable, value: `canary-${variable.value}-${randomBytes(6).toString('hex')}` })),
    }));
    fc.assert(
      fc.property(secretContext, (input) => {
        const serialised = serialiseBuildContext(input, KEY);
        for (const variable of taggedVariables(input).filter((entry) => entry.secret)) {
          expect(serialised.includes(Buffer.from(variable.value)), `${variable.name} appears in clear`).toBe(false);
        }
      }),
      { numRuns: RUNS },
    );
  });

  test('declared secret without a key is a ConfigError', () => {
    fc.assert(
      fc.property(context, (input) => {
        const secretDeclared = taggedVariables(input).some((variable) => variable.secret);
        let outcome: unknown;
        try {
          outcome = buildTag(input);
        } catch (error) {
          outcome = error;
        }
        if (secretDeclared) expect(outcome).toBeInstanceOf(ConfigError);
        else expect(outcome).toMatch(/^[0-9a-f]{64}$/);
      }),
      { numRuns: RUNS },
    );
  });

  test('any Dockerfile text is scanned without error', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 500 }), (text) => {
        for (const name of declaredArgNames(text)) expect(name.length).toBeGreaterThan(0);
      }),
      { numRuns: RUNS },
    );
  });
});
