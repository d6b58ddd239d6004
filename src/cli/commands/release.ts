import type { CleanupRequestInput } from '../../../queues/cleanup.ts';
import { UsageError, parse } from '../common.ts';
import { submitCleanup } from './sweep.ts';

/** `mirrorfleet release`: drops the uses of a deleted service, or of every service of a cluster. */
export async function runReleaseCommand(args: string[]): Promise<number> {
  const { values } = parse(
    args,
    {
      cluster: { type: 'string' },
      service: { type: 'string' },
      'all-services': { type: 'boolean' },
      registry: { type: 'string' },
      'dry-run': { type: 'boolean' },
      wait: { type: 'boolean' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
    },
    false,
  );
  if (!values.cluster) throw new UsageError('--cluster is required: the cluster of the deleted service');
  if (Boolean(values.service) === Boolean(values['all-services'])) {
    throw new UsageError('give --service ID for one service, or --all-services for every service of the cluster');
  }
  const request: CleanupRequestInput = {
    v: 1,
    kind: 'release',
    cluster: values.cluster as string,
    dryRun: Boolean(values['dry-run']),
    ...(values.service ? { service: values.service as string } : { allServices: true }),
    ...(values.registry ? { registry: values.registry as string } : {}),
  };
  return submitCleanup(request, values);
}
