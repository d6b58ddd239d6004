import { InvalidInputError } from '../errors.ts';

/**
 * Reads the list of images a cluster runs, for a reconcile, in either of two forms:
 * - JSON from `kubectl get pods -o json` (a List of Pods), a single Pod, or any JSON holding pod specs:
 *   every `image` of `containers`, `initContainers` and `ephemeralContainers`, and every `imageID` of the
 *   container statuses, which is the digest the node actually pulled. The service of a pod comes from
 *   the label named by `serviceLabel`; without one, the use belongs to the whole cluster.
 * - Text: one `IMAGE [SERVICE]` per line; blank lines and lines starting with `#` are skipped.
 */

export interface ListedImageInput {
  reference: string;
  service?: string;
}

export function parseImagesFile(text: string, options: { serviceLabel?: string } = {}): ListedImageInput[] {
  const trimmed = text.trim();
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) return fromKubernetesJson(trimmed, options.serviceLabel);
  return fromLines(text);
}

function fromLines(text: string): ListedImageInput[] {
  const images: ListedImageInput[] = [];
  const problems: string[] = [];
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [reference, service, extra] = line.split(/\s+/);
    if (extra !== undefined) {
      problems.push(`line ${index + 1} ("${line.slice(0, 200)}"): expected "IMAGE [SERVICE]"`);
      continue;
    }
    images.push({ reference: reference!, ...(service === undefined ? {} : { service }) });
  }
  if (problems.length > 0) throw new InvalidInputError(`invalid image list: ${problems.join('; ')}`);
  return images;
}

function fromKubernetesJson(text: string, serviceLabel: string | undefined): ListedImageInput[] {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new InvalidInputError(`invalid image list: the JSON does not parse (${(error as Error).message}); expected the output of kubectl get pods -o json`);
  }
  const images: ListedImageInput[] = [];
  for (const pod of podsIn(document)) {
    const labels = record(record(pod.metadata)?.labels);
    const label = serviceLabel === undefined ? undefined : labels?.[serviceLabel];
    const service = typeof label === 'string' && label !== '' ? label : undefined;
    const add = (reference: unknown) => {
      if (typeof reference !== 'string' || reference === '') return;
      const cleaned = withoutRuntimePrefix(reference);
      // An imageID that is only a local image id (`sha256:...` without a repository) names nothing to keep.
      if (/^sha256:[a-f0-9]{64}$/.test(cleaned)) return;
      images.push({ reference: cleaned, ...(service === undefined ? {} : { service }) });
    };

    const spec = record(pod.spec);
    for (const field of ['containers', 'initContainers', 'ephemeralContainers']) {
      for (const container of list(spec?.[field])) add(record(container)?.image);
    }
    const status = record(pod.status);
    for (const field of ['containerStatuses', 'initContainerStatuses', 'ephemeralContainerStatuses']) {
      for (const container of list(status?.[field])) add(record(container)?.imageID);
    }
  }
  return images;
}

/** Pods in a List, an array, a single Pod, or a Deployment-like object with a pod template. */
function podsIn(document: unknown): Array<Record<string, unknown>> {
  if (Array.isArray(document)) return document.flatMap(podsIn);
  const object = record(document);
  if (!object) return [];
  if (Array.isArray(object.items)) return object.items.flatMap(podsIn);
  if (record(object.spec)?.containers !== undefined) return [object];
  const template = record(record(object.spec)?.template);
  return template ? [{ ...template, metadata: template.metadata ?? object.metadata }] : [];
}

/** Removes the prefix that some container runtimes put before an imageID, such as `docker-pullable://`. */
function withoutRuntimePrefix(reference: string): string {
  return reference.replace(/^[a-z-]+:\/\//, '');
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}
