import { parseImagesFile } from '../../cleanup/images-file.ts';
import type { CleanupRequestInput } from '../../../queues/cleanup.ts';
import { UsageError, parse, readInputFile } from '../common.ts';
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
  const images = parseImagesFile(content, serviceLabel === undefined ? {} : { serviceLabel });

  const request: CleanupRequestInput = {
    v: 1,
    kind: 'reconcile',
    cluster: values.cluster as string,
    images,
    dryRun: Boolean(values['dry-run']),
    ...(values.registry ? { registry: values.registry as string } : {}),
  };
  return submitCleanup(request, values);
}
