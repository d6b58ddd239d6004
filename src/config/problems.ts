/**
 * Configuration problems and the single `ConfigError` that lists them. Each problem names the key (a
 * dotted path in the file, or an environment variable), the value as found, and what is accepted.
 * Values of secret keys are shown as `<redacted>`, and values of unknown keys are never shown, because an
 * unknown key is often a misspelt secret key such as `pasword`.
 */

import type { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { hideUrlCredentials } from './formats.ts';

/** One thing wrong with the configuration, ready to be printed as `KEY: DETAIL; expected EXPECTED`. */
export interface ConfigProblem {
  key: string;
  /** Description of the value found, such as `invalid value "12abc"`, `missing` or `unknown key`. */
  detail: string;
  /** Accepted values as a noun phrase, such as `an integer from 1 to 256`. */
  expected: string;
}

export const REDACTED = '<redacted>';
const SECRET_KEY = /password|token|secret/i;
const MAX_SHOWN_STRING_LENGTH = 100;

/** Returns true when values at `key` (the last component of a path) must never be shown. */
export function isSecretKey(key: string): boolean {
  return SECRET_KEY.test(key);
}

/**
 * Renders a value for a message. Strings are quoted and cut to 100 characters. Objects and arrays are
 * shown by kind only, because their members may hold secrets under any key.
 */
export function describeValue(key: string, value: unknown): string {
  if (isSecretKey(key)) return REDACTED;
  if (typeof value === 'string') {
    // A URL may carry a password in its user information, as redis://:password@host does.
    const displayed = /url$/i.test(key) ? hideUrlCredentials(value) : value;
    const cut =
      displayed.length > MAX_SHOWN_STRING_LENGTH ? `${displayed.slice(0, MAX_SHOWN_STRING_LENGTH)}…` : displayed;
    return JSON.stringify(cut);
  }
  if (value === null || typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return typeof value;
}

/** Builds the problem for a key whose value is present but not accepted. */
export function invalidValue(key: string, value: unknown, expected: string, secretKey = key): ConfigProblem {
  return { key, detail: `invalid value ${describeValue(secretKey, value)}`, expected };
}

/**
 * Converts zod issues into problems. `keyOf` turns an issue path into the key shown to the user, and
 * every schema involved sets its own message to the accepted values, which becomes `expected`.
 */
export function problemsFromIssues(
  issues: readonly z.core.$ZodIssue[],
  keyOf: (path: readonly PropertyKey[]) => string,
): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const unknownKey of issue.keys) {
        problems.push({ key: keyOf([...issue.path, unknownKey]), detail: 'unknown key', expected: issue.message });
      }
      continue;
    }

    let value = issue.input;
    // A discriminated union reports the whole object at the discriminator's path, so show only the discriminator.
    if (issue.code === 'invalid_union' && issue.discriminator !== undefined) {
      value = isRecord(value) ? value[issue.discriminator] : undefined;
    }

    const key = keyOf(issue.path);
    const lastSegment = issue.path.at(-1);
    const secretKey = typeof lastSegment === 'string' ? lastSegment : '';
    if (value === undefined) problems.push({ key, detail: 'missing', expected: issue.message });
    else problems.push(invalidValue(key, value, issue.message, secretKey));
  }
  return problems;
}

/** Joins path segments with dots, as in `mirrorRegistries.0.host`. */
export function dottedPath(path: readonly PropertyKey[]): string {
  return path.map(String).join('.');
}

/** Creates the `ConfigError` that lists every problem, one per line when there are several. */
export function configErrorFor(problems: readonly ConfigProblem[], configFile: string | undefined): ConfigError {
  const source = configFile === undefined ? '' : ` (file ${JSON.stringify(configFile)})`;
  const lines = problems.map((problem) => `${problem.key}: ${problem.detail}; expected ${problem.expected}`);
  if (lines.length === 1) return new ConfigError(`invalid configuration${source}: ${lines[0]}`);
  return new ConfigError(`invalid configuration${source}, ${lines.length} problems:\n- ${lines.join('\n- ')}`);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
