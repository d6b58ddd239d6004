import { parseImagesFile } from '../../cleanup/images-file.ts';
import type { CleanupRequestInput } from '../../../queues/cleanup.ts';
import { UsageError, countOf, parse, readInputFile } from '../common.ts';
import { submitCleanup } from './sweep.ts';

/**
 * `mirrorfleet reconcile`: rebuilds a cluster's uses from the images it runs, read from a file (or `-`
 * for standard input) in the output format of `kubectl get pods -o json`, or as `IMAGE [SERVICE]` lines.
 */
export async function runReconcileCommand(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    {
      cluster: { type: 'string' },
      'from-file': { type: 'string' },
      'service-label': { type: 'string' },
      'allow-empty': { type: 'boolean' },
      registry: { type: 'string' },
      'dry-run': { type: 'boolean' },
      wait: { type: 'boolean' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
    },
    false,
  );
  if (!values.cluster) throw new UsageError('--cluster is required: the cluster that runs the listed images');
  const path = values['from-file'] as string | undefined;
  if (!path) throw new UsageError('--from-file is required: a file of images the cluster runs, or - for standard input');

  const content = await readInputFile(path);
  const serviceLabel = values['service-label'] as string | undefined;
  const allowEmpty = Boolean(values['allow-empty']);
  const { images, pods, podsWithoutLabel } = parseImagesFile(content, { allowEmpty, ...(serviceLabel === undefined ? {} : { serviceLabel }) });
  if (serviceLabel !== undefined && pods !== undefined && podsWithoutLabel! > 0) {
    process.stderr.write(
      `reconcile: ${podsWithoutLabel} of ${countOf(pods, 'pod')} had no label ${serviceLabel}; their images are recorded as used by cluster ${values.cluster as string} (no service named)\n`,
    );
  }

  const request: CleanupRequestInput = {
    v: 1,
    kind: 'reconcile',
    cluster: values.cluster as string,
    images,
    allowEmpty,
    dryRun: Boolean(values['dry-run']),
    ...(values.registry ? { registry: values.registry as string } : {}),
  };
  return submitCleanup(request, values);
}
