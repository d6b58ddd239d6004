import { loadConfig } from '../../config/config.ts';
import { LIMITS } from '../../config/schema.ts';
import { startWorkers, WORKER_QUEUES } from '../../../workers/run.ts';
import { UsageError, parse, positiveInteger, rejectWrongRedisCredentials } from '../common.ts';

/** `mirrorfleet worker`: runs workers until SIGTERM or SIGINT, then shuts down gracefully. */
export async function runWorker(args: string[]): Promise<number> {
  const { values } = parse(args, { queues: { type: 'string' }, concurrency: { type: 'string' }, 'metrics-port': { type: 'string' } }, false);
  const config = loadConfig();
  const queues = (values.queues as string | undefined)?.split(',').map((queue) => queue.trim()) ?? [...WORKER_QUEUES];
  for (const queue of queues) {
    if (!(WORKER_QUEUES as readonly string[]).includes(queue)) throw new UsageError(`unknown queue "${queue}" in --queues; accepted: ${WORKER_QUEUES.join(', ')}`);
  }
  // The same range as MIRRORFLEET_CONCURRENCY and worker.concurrency in the configuration file.
  const concurrency = positiveInteger('concurrency', values.concurrency as string | undefined, config.worker.concurrency, LIMITS.workerConcurrency.min, LIMITS.workerConcurrency.max);
  const metricsPort = positiveInteger('metrics-port', values['metrics-port'] as string | undefined, config.worker.metricsPort, LIMITS.metricsPort.min, LIMITS.metricsPort.max);
  const lockDurationMs = process.env.MIRRORFLEET_JOB_LOCK_MS ? positiveInteger('MIRRORFLEET_JOB_LOCK_MS', process.env.MIRRORFLEET_JOB_LOCK_MS, 30_000, 1000) : undefined;

  await rejectWrongRedisCredentials(config);
  const running = await startWorkers({
    config,
    queues,
    concurrency,
    metricsPort,
    ...(values['metrics-port'] === undefined ? {} : { metricsPortSource: '--metrics-port' }),
    ...(lockDurationMs ? { lockDurationMs } : {}),
  });
  await new Promise<void>((resolve) => {
    const onSignal = () => {
      running.stop(config.worker.shutdownGraceSeconds * 1000).then(resolve, resolve);
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  return 0;
}

