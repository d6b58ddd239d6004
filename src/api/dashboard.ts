import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import type { IServerAdapter } from '@bull-board/api/typings/app';
import { FastifyAdapter } from '@bull-board/fastify';
import type { Queue } from 'bullmq';
import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import { DASHBOARD_PATH } from './operations.ts';

/**
 * Mounts the bull-board dashboard at `/admin/queues`: jobs of every queue by state, with retry of a
 * failed job. `guard` runs before every page, asset and dashboard API request under that path.
 */
export async function registerDashboard(app: FastifyInstance, queues: readonly Queue[], guard: onRequestHookHandler): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: queues.map((queue) => new BullMQAdapter(queue, { allowRetries: true, readOnlyMode: false })),
    // NOTE: @bull-board/fastify 9.10.1 brings its own @bull-board/api 9.10.1, whose types differ from the
    // top-level 9.10.2 in private members only. Pinning both packages to one version would remove this cast.
    serverAdapter: serverAdapter as unknown as IServerAdapter,
    options: { uiConfig: { boardTitle: 'mirrorfleet' } },
  });

  // An encapsulated context, so the guard covers the dashboard's routes and no others.
  await app.register(async (scope) => {
    scope.addHook('onRequest', guard);
    await scope.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
  });
}
