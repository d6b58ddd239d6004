import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';

/**
 * A local stand-in for Scaleway's Container Registry API (`/registry/v1/regions/{region}/...`, JSON with
 * snake_case keys, the secret key in `X-Auth-Token`). It checks each request's path, method, query and
 * body, keeps namespaces, images and tags, and records every call. Anything else gets 400 and lands in
 * `unexpected`. A new namespace reports `unknown` until it has been read once, then `ready`.
 */

export const TEST_SECRET_KEY = '11111111-2222-4333-8444-555555555555';
export const TEST_PROJECT_ID = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
export const TEST_REGION = 'fr-par';
const NAMESPACE_NAME = /^[a-z0-9]+(?:-[a-z0-9]+)*$/;

export interface StandInNamespace {
  id: string;
  name: string;
  status: 'unknown' | 'ready';
  isPublic: boolean;
}

export interface StandInTag {
  id: string;
  name: string;
  digest: string;
}

export interface StandInImage {
  id: string;
  namespaceId: string;
  name: string;
  tags: StandInTag[];
}

export interface ScalewayStandIn {
  origin: string;
  namespaces: StandInNamespace[];
  images: StandInImage[];
  readonly calls: string[];
  readonly unexpected: string[];
  /**
   * Makes the next call (`METHOD /path`, query left out) return `status` with a Scaleway error of `type`,
   * after running `before`, such as another worker's change.
   */
  failNext(call: string, status: number, type: string, before?: () => void): void;
  close(): Promise<void>;
}

export async function startScalewayStandIn(): Promise<ScalewayStandIn> {
  const base = `/registry/v1/regions/${TEST_REGION}`;
  const injected = new Map<string, { status: number; type: string; before: (() => void) | undefined }>();

  const send = (response: ServerResponse, status: number, body: unknown) => {
    const text = JSON.stringify(body);
    response.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) }).end(text);
  };
  const namespaceJson = (namespace: StandInNamespace) => ({
    id: namespace.id,
    name: namespace.name,
    description: '',
    organization_id: TEST_PROJECT_ID,
    project_id: TEST_PROJECT_ID,
    status: namespace.status,
    status_message: '',
    endpoint: `rg.${TEST_REGION}.scw.cloud/${namespace.name}`,
    is_public: namespace.isPublic,
    size: 0,
    image_count: 0,
    region: TEST_REGION,
  });
  const tagJson = (image: StandInImage, tag: StandInTag) => ({ id: tag.id, name: tag.name, image_id: image.id, status: 'ready', digest: tag.digest });

  const server = createServer(async (request: IncomingMessage, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const url = new URL(request.url ?? '/', state.origin);
    const call = `${request.method} ${url.pathname}`;
    const query = Object.fromEntries(url.searchParams);
    const reject = (problem: string) => {
      state.unexpected.push(`${call}: ${problem}`);
      send(response, 400, { type: 'invalid_arguments', message: `unexpected request: ${problem}` });
    };
    if (request.headers['x-auth-token'] !== TEST_SECRET_KEY) {
      reject('missing or wrong X-Auth-Token');
      return;
    }
    state.calls.push(call);
    const failure = injected.get(call);
    if (failure) {
      injected.delete(call);
      failure.before?.();
      send(response, failure.status, { type: failure.type, message: `${failure.type} injected by the test` });
      return;
    }
    const body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>) : {};
    const allowQuery = (keys: string[]) => Object.keys(query).every((key) => keys.includes(key));

    if (call === `GET ${base}/namespaces`) {
      if (!allowQuery(['name', 'project_id', 'page', 'page_size', 'order_by', 'organization_id'])) return reject('query');
      const found = state.namespaces.filter((namespace) => !query.name || namespace.name.includes(query.name));
      return send(response, 200, { namespaces: found.map(namespaceJson), total_count: found.length });
    }
    if (call === `POST ${base}/namespaces`) {
      const name = String(body.name);
      if (body.project_id !== TEST_PROJECT_ID || typeof body.is_public !== 'boolean') return reject('project_id or is_public');
      if (name.length < 4 || name.length > 50 || !NAMESPACE_NAME.test(name)) return send(response, 400, { type: 'invalid_arguments', message: `invalid namespace name ${name}` });
      if (state.namespaces.some((namespace) => namespace.name === name)) return send(response, 409, { type: 'conflict', message: 'namespace already exists' });
      const namespace: StandInNamespace = { id: randomUUID(), name, status: 'unknown', isPublic: body.is_public };
      state.namespaces.push(namespace);
      return send(response, 200, namespaceJson(namespace));
    }
    const namespaceGet = new RegExp(`^GET ${base}/namespaces/([0-9a-f-]{36})$`).exec(call);
    if (namespaceGet) {
      const namespace = state.namespaces.find((entry) => entry.id === namespaceGet[1]);
      if (!namespace) return send(response, 404, { type: 'not_found', message: 'namespace not found' });
      const before = namespaceJson(namespace);
      namespace.status = 'ready';
      return send(response, 200, before);
    }
    if (call === `GET ${base}/images`) {
      if (!allowQuery(['name', 'namespace_id', 'project_id', 'page', 'page_size', 'order_by', 'organization_id'])) return reject('query');
      const found = state.images.filter((image) => (!query.namespace_id || image.namespaceId === query.namespace_id) && (!query.name || image.name.includes(query.name)));
      return send(response, 200, { images: found.map((image) => ({ id: image.id, name: image.name, namespace_id: image.namespaceId, status: 'ready', visibility: 'inherit', size: 0, tags: image.tags.map((tag) => tag.name) })), total_count: found.length });
    }
    const tagList = new RegExp(`^GET ${base}/images/([0-9a-f-]{36})/tags$`).exec(call);
    if (tagList) {
      const image = state.images.find((entry) => entry.id === tagList[1]);
      if (!image) return send(response, 404, { type: 'not_found', message: 'image not found' });
      return send(response, 200, { tags: image.tags.map((tag) => tagJson(image, tag)), total_count: image.tags.length });
    }
    const tagDelete = new RegExp(`^DELETE ${base}/tags/([0-9a-f-]{36})$`).exec(call);
    if (tagDelete) {
      const image = state.images.find((entry) => entry.tags.some((tag) => tag.id === tagDelete[1]));
      const tag = image?.tags.find((entry) => entry.id === tagDelete[1]);
      if (!image || !tag) return send(response, 404, { type: 'not_found', message: 'tag not found' });
      image.tags = image.tags.filter((entry) => entry !== tag);
      return send(response, 200, tagJson(image, tag));
    }
    const imageDelete = new RegExp(`^DELETE ${base}/images/([0-9a-f-]{36})$`).exec(call);
    if (imageDelete) {
      const image = state.images.find((entry) => entry.id === imageDelete[1]);
      if (!image) return send(response, 404, { type: 'not_found', message: 'image not found' });
      state.images = state.images.filter((entry) => entry !== image);
      return send(response, 200, { id: image.id, name: image.name, namespace_id: image.namespaceId, status: 'deleting', visibility: 'inherit', size: 0, tags: [] });
    }
    state.calls.pop();
    reject('no such operation');
  });

  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;

  const state: ScalewayStandIn = {
    origin: `http://127.0.0.1:${port}`,
    namespaces: [],
    images: [],
    calls: [],
    unexpected: [],
    failNext(call, status, type, before) {
      injected.set(call, { status, type, before });
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
  return state;
}
