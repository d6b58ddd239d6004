import type { z } from 'zod';
import { referenceForMessage } from '../image-ref/message-value.ts';
import { UsageError, cutText } from './common.ts';

/**
 * Validation of a request built from command-line options, with each problem named by the option the
 * user typed (`--platform`, `SOURCE`) instead of the payload field (`platforms.0`, `source`).
 */

/**
 * Returns the option that sets the payload field at `path`, and whether its rejected value may be shown.
 * Values that may be secret are never shown. Returns undefined for a field that no option sets.
 */
export type FlagOf = (path: readonly PropertyKey[], request: unknown) => { flag: string; showValue: boolean } | undefined;

/** Options of the mirror request fields. */
export const MIRROR_FLAGS: FlagOf = (path) => {
  const [field] = path;
  if (field === 'source') return { flag: 'SOURCE', showValue: true };
  if (field === 'platforms') return { flag: '--platform', showValue: true };
  if (field === 'registry' || field === 'mode' || field === 'cluster' || field === 'service' || field === 'referrers') return { flag: `--${field}`, showValue: true };
  return undefined;
};

/** Options of the cleanup request fields (release, sweep, reconcile). */
export const CLEANUP_FLAGS: FlagOf = (path) => {
  const [field] = path;
  if (field === 'cluster' || field === 'registry') return { flag: `--${field}`, showValue: true };
  // The release schema reports "neither or both of service and allServices" on `service`.
  if (field === 'service') return { flag: '--service', showValue: true };
  if (field === 'maxDeletePercent') return { flag: '--max-delete-percent', showValue: true };
  if (field === 'images') return { flag: '--from-file', showValue: false };
  return undefined;
};

/** Options of the build request fields. Variable values are never shown, because they may be secret. */
export const BUILD_FLAGS: FlagOf = (path, request) => {
  const [field, key] = path;
  if (field === 'git' && (key === 'url' || key === 'commit' || key === 'root' || key === 'dockerfile')) {
    return { flag: key === 'url' ? '--git' : `--${key}`, showValue: true };
  }
  if (field === 'variables') {
    const variable = typeof key === 'number' ? (request as { variables?: Array<{ secret?: boolean }> }).variables?.[key] : undefined;
    return { flag: variable?.secret ? '--secret-env' : '--build-env', showValue: false };
  }
  if (field === 'platforms') return { flag: '--platform', showValue: true };
  if (field === 'registry' || field === 'cluster' || field === 'service') return { flag: `--${field}`, showValue: true };
  return undefined;
};

/**
 * Validates `request` with `schema` and throws a UsageError naming each problem by its option, such as
 * `invalid --platform "linux/aarch64": unknown architecture ...` or `missing --service: ...`.
 */
export function checkRequest(schema: z.ZodType, request: unknown, flagOf: FlagOf): void {
  const result = schema.safeParse(request);
  if (result.success) return;
  const problems = result.error.issues.map((issue) => {
    const option = flagOf(issue.path, request);
    const value = valueAt(request, issue.path);
    const name = option?.flag ?? issue.path.join('.');
    if (value === undefined) return `missing ${name}: ${issue.message}`;
    const shown = option?.showValue && typeof value === 'string' ? ` ${JSON.stringify(cutText(referenceForMessage(value)))}` : '';
    return `invalid ${name}${shown}: ${issue.message}`;
  });
  throw new UsageError(problems.join('; '));
}

function valueAt(payload: unknown, path: readonly PropertyKey[]): unknown {
  let current: unknown = payload;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}
