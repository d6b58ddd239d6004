import { buildOpenApiDocument } from '../../api/openapi.ts';
import { describeOperations } from '../../api/operations.ts';
import { QUEUE_ROUTES } from '../../api/queue-routes.ts';
import { startApi } from '../../api/server.ts';
import { loadConfig } from '../../config/config.ts';
import { MirrorfleetError } from '../../errors.ts';
import { redact } from '../../log/redact.ts';
import { createLogger } from '../../log/logger.ts';
import { parse, positiveInteger, rejectWrongRedisCredentials } from '../common.ts';

/**
 * `mirrorfleet api`: runs the producer HTTP API until SIGTERM or SIGINT. With `--print-openapi`, prints the
 * OpenAPI document instead (it needs neither Redis nor a configuration).
 */
export async function runApi(args: string[]): Promise<number> {
  const { values } = parse(args, { port: { type: 'string' }, host: { type: 'string' }, 'print-openapi': { type: 'boolean' } }, false);
  if (values['print-openapi']) {
    process.stdout.write(openApiText());
    return 0;
  }

  const config = loadConfig();
  await rejectWrongRedisCredentials(config);
  const logger = createLogger(config.logLevel);
  const port = positiveInteger('port', values.port as string | undefined, config.api.port);
  let api;
  try {
    const host = values.host as string | undefined;
    api = await startApi({ config, logger, port, ...(host === undefined ? {} : { host }), ...(values.port === undefined ? {} : { portSource: '--port' }) });
  } catch (error) {
    if (!(error instanceof MirrorfleetError) || error.code !== 'TIMEOUT') throw error;
    process.stderr.write(`mirrorfleet: ${redact(error.message)}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = () => {
      api.close().then(resolve, (error: unknown) => {
        logger.error({ error: (error as Error).message }, 'api did not stop cleanly');
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  return 0;
}

/** Returns the OpenAPI document as `docs/openapi.json` stores it: indented JSON with a final newline. */
export function openApiText(): string {
  return `${JSON.stringify(buildOpenApiDocument(describeOperations(QUEUE_ROUTES)), null, 2)}\n`;
}
