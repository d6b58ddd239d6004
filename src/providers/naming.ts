import { createHash } from 'node:crypto';
import { InvalidInputError } from '../errors.ts';
import type { ImageReference } from '../image-ref/reference.ts';
import { hostComponent } from './generic.ts';
import type { MirrorLocation } from './provider.ts';

/**
 * Repository names for the cloud providers: the generic layout (see generic.ts), fitted to one cloud's
 * naming rules. When fitting changes a name, because a character is not allowed there or the name is too
 * long, the result ends in `-` and the first 16 hex digits of the SHA-256 of the unchanged name. Two
 * different names therefore end up different (barring a 64-bit hash collision), and a name that fits stays
 * as it is, readable.
 */

/** Hex digits of the SHA-256 appended to a changed name: 64 bits, too many to search for a colliding name. */
export const HASH_LENGTH = 16;

const ID_PATTERN = /^[a-z0-9]+(?:[._-][a-z0-9]+)*$/;
const MAX_ID_LENGTH = 63;

export interface NameRules {
  /** Maximum length of the whole name, `/` included. */
  maxLength: number;
  /** Minimum length; shorter names get the hash appended. Default 1. */
  minLength?: number;
  /** Whether `/` may separate components. Without it, every `/` becomes `-`. */
  slashes: boolean;
  /**
   * Separators allowed between the letters and digits of one component: one of `.`, `_`, `-` (`single`),
   * only `-` (`hyphen`).
   */
  separators: 'single' | 'hyphen';
}

/** Returns the first 16 hex digits of the SHA-256 of `text`. */
export function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, HASH_LENGTH);
}

/**
 * Fits `name` to `rules`. A name that fits is returned unchanged. Otherwise it is lowercased, every run of
 * characters that is not allowed becomes one allowed separator, and it is cut and given the hash suffix.
 */
export function fitName(name: string, rules: NameRules): string {
  const sanitised = sanitise(name, rules);
  const minLength = rules.minLength ?? 1;
  if (sanitised === name && name.length <= rules.maxLength && name.length >= minLength) return name;

  const suffix = `-${shortHash(name)}`;
  // Cutting may leave a separator or `/` at the end, which no rule allows before the suffix's `-`.
  const head = sanitised.slice(0, rules.maxLength - suffix.length).replace(/[^a-z0-9]+$/, '');
  return head === '' ? suffix.slice(1) : `${head}${suffix}`;
}

function sanitise(name: string, rules: NameRules): string {
  const components = rules.slashes ? name.toLowerCase().split('/') : [name.toLowerCase().replaceAll('/', '-')];
  return components
    .map((component) =>
      component
        .replace(/[^a-z0-9]+/g, (run) => (rules.separators === 'single' && /^[._-]$/.test(run) ? run : '-'))
        .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, ''),
    )
    .filter((component) => component !== '')
    .join('/');
}

/**
 * Returns the path components of the generic layout, before any fitting:
 * `[...prefix, cluster, 'services', service]` in service mode, `[...prefix, cluster, 'shared']` in cluster
 * mode. Throws InvalidInputError for an invalid cluster or service id, as the generic provider does.
 */
export function namespaceComponents(prefix: string, location: MirrorLocation): string[] {
  checkId('cluster', location.cluster);
  const components = prefix ? [...prefix.split('/'), location.cluster] : [location.cluster];
  if (location.mode === 'cluster') return [...components, 'shared'];
  if (location.service === undefined) throw new InvalidInputError('service is required in service mode');
  checkId('service', location.service);
  return [...components, 'services', location.service];
}

/** Returns `<source host>/<source path>`, the part of a target name that names the source. */
export function sourcePath(source: ImageReference): string {
  return `${hostComponent(source.registry)}/${source.repository}`;
}

/** Returns the target tag: the source tag, or `at-sha256-<hex>` for a source named only by digest. */
export function targetTag(source: ImageReference): string {
  return source.tag ?? `at-${source.digest!.replace(':', '-')}`;
}

function checkId(field: 'cluster' | 'service', value: string): void {
  if (value.length === 0 || value.length > MAX_ID_LENGTH || !ID_PATTERN.test(value)) {
    throw new InvalidInputError(
      `invalid ${field} id "${value}": expected 1 to ${MAX_ID_LENGTH} lowercase letters, digits and single '.', '_' or '-' between them, such as prod-eu-1`,
    );
  }
}
