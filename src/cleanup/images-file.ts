import { InvalidInputError } from '../errors.ts';
import { idSchema } from '../../queues/cleanup.ts';

/**
 * Reads the list of images a cluster runs, for a reconcile, in either of two forms:
 * - JSON from `kubectl get pods -o json` (a `List` or `PodList` with an `items` array of pods) or a single
 *   `Pod`: every `image` of `containers`, `initContainers` and `ephemeralContainers`, and every `imageID`
 *   of the container statuses, which is the digest the node actually pulled. The service of a pod comes
 *   from the label named by `serviceLabel`. A pod without that label is a use of the whole cluster.
 * - Text: one `IMAGE [SERVICE]` per line; blank lines and lines starting with `#` are skipped.
 *
 * A reconcile releases every use the list does not name, so input that names nothing is rejected. That
 * is empty text (kubectl prints nothing when it fails) and JSON that is not a pod list or a pod. A pod
 * list without pods is rejected too, unless `allowEmpty` is set.
 */

export interface ListedImageInput {
  reference: string;
  service?: string;
}

export interface ImagesFile {
  images: ListedImageInput[];
  /** Pods read from JSON input; absent for the line format. */
  pods?: number;
  /** Pods without the `serviceLabel` label, whose images count as used by the whole cluster. */
  podsWithoutLabel?: number;
}

export interface ImagesFileOptions {
  /** Pod label whose value is the service. */
  serviceLabel?: string;
  /** Accepts a pod list without pods, which releases every use of the cluster. */
  allowEmpty?: boolean;
}

// The maximum number of problems one error lists, so that a broken list of thousands of pods gives a readable message.
const MAX_PROBLEMS = 10;

const EXPECTED_JSON = 'expected the output of kubectl get pods -o json (kind List or PodList with an items array of pods) or a single Pod';

export function parseImagesFile(text: string, options: ImagesFileOptions = {}): ImagesFile {
  const trimmed = text.trim();
  if (looksLikeJson(trimmed)) return fromKubernetesJson(trimmed, options);
  return { images: fromLines(text) };
}

/** True for text that can only be JSON: an object, an array, a string, or a JSON literal. */
function looksLikeJson(trimmed: string): boolean {
  return /^[[{"]/.test(trimmed) || trimmed === 'null' || trimmed === 'true' || trimmed === 'false';
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
    if (service !== undefined) {
      const invalid = serviceProblem(service);
      if (invalid !== undefined) {
        problems.push(`line ${index + 1}: invalid service "${service.slice(0, 100)}": ${invalid}`);
        continue;
      }
    }
    images.push({ reference: reference!, ...(service === undefined ? {} : { service }) });
  }
  if (problems.length > 0) throw new InvalidInputError(`invalid image list: ${listProblems(problems)}`);
  if (images.length === 0) {
    throw new InvalidInputError(
      'invalid image list: the input is empty (no line other than blank lines and # comments), and reconciling with it would release every use of the cluster; ' +
        'check that the command writing the list (such as kubectl get pods -A -o json) succeeded. To release every use on purpose, run mirrorfleet release --all-services',
    );
  }
  return images;
}

function fromKubernetesJson(text: string, options: ImagesFileOptions): ImagesFile {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch (error) {
    throw new InvalidInputError(`invalid image list: the JSON does not parse (${(error as Error).message}); ${EXPECTED_JSON}`);
  }
  const pods = podsIn(document);
  if (pods.length === 0 && !options.allowEmpty) {
    throw new InvalidInputError(
      'invalid image list: the pod list has no pods, and reconciling with it would release every use of the cluster; ' +
        'pass --allow-empty if the cluster really runs no pod',
    );
  }

  const images: ListedImageInput[] = [];
  const problems: string[] = [];
  let podsWithoutLabel = 0;
  for (const pod of pods) {
    const labelled = serviceOf(pod, options.serviceLabel);
    if ('problem' in labelled) {
      problems.push(labelled.problem);
      continue;
    }
    if (labelled.service === undefined) podsWithoutLabel += 1;
    const service = labelled.service;
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
  if (problems.length > 0) throw new InvalidInputError(`invalid image list: ${listProblems(problems)}`);
  return { images, pods: pods.length, podsWithoutLabel };
}

/**
 * Returns the pods of a pod list or the single pod. Throws InvalidInputError naming what was found
 * instead, and each list entry that is not a pod with `spec.containers`.
 */
function podsIn(document: unknown): Array<Record<string, unknown>> {
  const object = record(document);
  if (!object) throw new InvalidInputError(`invalid image list: found ${describeJson(document)}; ${EXPECTED_JSON}`);

  if (object.kind === 'Pod') {
    const problem = podProblem(object);
    if (problem !== undefined) throw new InvalidInputError(`invalid image list: the Pod ${podName(object)} ${problem}`);
    return [object];
  }

  if (object.kind !== 'List' && object.kind !== 'PodList') {
    const kind = typeof object.kind === 'string' ? `kind ${JSON.stringify(object.kind.slice(0, 100))}` : 'no kind';
    throw new InvalidInputError(`invalid image list: found an object with ${kind} and the keys ${describeKeys(object)}; ${EXPECTED_JSON}`);
  }
  if (!Array.isArray(object.items)) {
    throw new InvalidInputError(`invalid image list: the ${object.kind} has items ${describeJson(object.items)}, not an array of pods; ${EXPECTED_JSON}`);
  }

  const problems: string[] = [];
  for (const [index, item] of object.items.entries()) {
    const pod = record(item);
    if (!pod) {
      problems.push(`items[${index}] is ${describeJson(item)}, not a Pod`);
      continue;
    }
    // `kubectl get pods -o json` sets kind on each item; the API server's PodList leaves it out.
    if (pod.kind !== undefined && pod.kind !== 'Pod') {
      problems.push(`items[${index}] (${podName(pod)}) has kind ${JSON.stringify(pod.kind)}, not Pod`);
      continue;
    }
    const problem = podProblem(pod);
    if (problem !== undefined) problems.push(`items[${index}] (${podName(pod)}) ${problem}`);
  }
  if (problems.length > 0) throw new InvalidInputError(`invalid image list: ${listProblems(problems)}; ${EXPECTED_JSON}`);
  return object.items as Array<Record<string, unknown>>;
}

/** Describes what makes `pod` unusable, or returns undefined for a pod with containers that name images. */
function podProblem(pod: Record<string, unknown>): string | undefined {
  const containers = record(pod.spec)?.containers;
  if (!Array.isArray(containers) || containers.length === 0) return 'has no spec.containers array with at least one container';
  const index = containers.findIndex((container) => typeof record(container)?.image !== 'string' || record(container)?.image === '');
  if (index >= 0) return `has no image in spec.containers[${index}]`;
  return undefined;
}

/**
 * Returns the service of `pod` from its `serviceLabel` label. A value that is not a valid service id is
 * lowercased when that makes it one (Kubernetes allows uppercase label values, service ids do not), and
 * reported as a problem otherwise.
 */
function serviceOf(pod: Record<string, unknown>, serviceLabel: string | undefined): { service?: string } | { problem: string } {
  if (serviceLabel === undefined) return {};
  const value = record(record(pod.metadata)?.labels)?.[serviceLabel];
  if (typeof value !== 'string' || value === '') return {};
  if (serviceProblem(value) === undefined) return { service: value };
  const lowercase = value.toLowerCase();
  if (serviceProblem(lowercase) === undefined) return { service: lowercase };
  return { problem: `pod ${podName(pod)} has label ${serviceLabel}=${JSON.stringify(value.slice(0, 100))}, which is not a valid service id even in lowercase: ${serviceProblem(lowercase)}` };
}

function serviceProblem(service: string): string | undefined {
  const result = idSchema('service').safeParse(service);
  return result.success ? undefined : result.error.issues.map((issue) => issue.message).join('; ');
}

/** `namespace/name` of a pod, or as much of it as the pod has. */
function podName(pod: Record<string, unknown>): string {
  const metadata = record(pod.metadata);
  const name = typeof metadata?.name === 'string' ? metadata.name : '(no name)';
  return typeof metadata?.namespace === 'string' ? `${metadata.namespace}/${name}` : name;
}

function describeJson(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length} entr${value.length === 1 ? 'y' : 'ies'}`;
  if (typeof value === 'object') return `an object with the keys ${describeKeys(value as Record<string, unknown>)}`;
  return `the ${typeof value} ${JSON.stringify(value).slice(0, 100)}`;
}

function describeKeys(object: Record<string, unknown>): string {
  const keys = Object.keys(object);
  if (keys.length === 0) return '(none)';
  const shown = keys.slice(0, 10).map((key) => JSON.stringify(key.slice(0, 50)));
  return shown.join(', ') + (keys.length > shown.length ? ` and ${keys.length - shown.length} more` : '');
}

function listProblems(problems: string[]): string {
  const shown = problems.slice(0, MAX_PROBLEMS).join('; ');
  return problems.length > MAX_PROBLEMS ? `${shown}; and ${problems.length - MAX_PROBLEMS} more problems` : shown;
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
