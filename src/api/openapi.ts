import { isDeepStrictEqual } from 'node:util';
import type { z } from 'zod';
import type { OperationSpec, ResponseSpec } from './operations.ts';
import type { QueueRoute } from './queue-routes.ts';
import { toJsonSchema, type JsonSchema } from './validation.ts';

/**
 * Builds the OpenAPI 3.1 document of the HTTP API from its operation list. Schemas are the zod
 * schemas of the queues and of the API, converted to JSON Schema 2020-12, which OpenAPI 3.1 uses as is.
 * `docs/openapi.json` is this document; `mirrorfleet api --print-openapi` writes it.
 */

/** Version of the API contract, not of the package: it changes when a route or schema changes. */
export const API_VERSION = '1.0.0';

export type OpenApiDocument = Record<string, unknown> & { paths: Record<string, Record<string, unknown>> };

export function buildOpenApiDocument(operations: readonly OperationSpec[]): OpenApiDocument {
  const schemas: Record<string, JsonSchema> = {};
  const tags = new Map<string, string>([['operations', 'Health, readiness, metrics, this document and the queue dashboard.']]);
  const paths: Record<string, Record<string, unknown>> = {};

  const schemaObject = (schema: z.ZodType, io: 'input' | 'output', name: string | undefined, route: QueueRoute | undefined): JsonSchema => {
    const json = toJsonSchema(schema, io);
    if (route?.fieldDescriptions) describeRequestFields(json, name?.endsWith('Request') ? json : undefined, route.fieldDescriptions);
    if (name === undefined) return json;
    const known = schemas[name];
    if (known !== undefined && !isDeepStrictEqual(known, json)) throw new Error(`two different schemas are named ${name} in the OpenAPI document`);
    schemas[name] = json;
    return { $ref: `#/components/schemas/${name}` };
  };

  for (const operation of operations) {
    if (operation.route) tags.set(operation.tag, operation.route.summary);

    const parameters = [
      ...parametersOf(operation.params, 'path'),
      ...parametersOf(operation.query, 'query'),
    ];
    const responses: Record<string, unknown> = {};
    for (const [status, response] of Object.entries(operation.responses)) {
      responses[status] = responseObject(response, (schema, name) => schemaObject(schema, 'output', name, operation.route));
    }

    const entry: Record<string, unknown> = {
      operationId: operation.operationId,
      summary: operation.summary,
      ...(operation.description ? { description: operation.description } : {}),
      tags: [operation.tag],
      // OpenAPI 3.1 lets the security requirement of an http scheme list role names; these are the token scopes.
      security: operation.scope ? securityOf(operation) : [],
      ...(parameters.length > 0 ? { parameters } : {}),
      ...(operation.body
        ? {
            requestBody: {
              required: true,
              content: {
                'application/json': {
                  schema: schemaObject(operation.body, 'input', operation.bodyName, operation.route),
                  ...(operation.bodyExample === undefined ? {} : { example: operation.bodyExample }),
                },
              },
            },
          }
        : {}),
      responses,
    };
    paths[operation.path] = { ...paths[operation.path], [operation.method.toLowerCase()]: entry };
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'mirrorfleet API',
      version: API_VERSION,
      description:
        'Enqueue mirrorfleet jobs, read them and wait for them. Every /v1 route needs a bearer token with the scope its ' +
        'security requirement names (enqueue or admin); tokens come from MIRRORFLEET_API_TOKENS or the configuration file.',
    },
    tags: [...tags].map(([name, description]) => ({ name, description })),
    paths,
    components: {
      schemas,
      securitySchemes: {
        bearerAuth: { type: 'http', scheme: 'bearer', description: 'A token from MIRRORFLEET_API_TOKENS or api.tokens.' },
        basicAuth: { type: 'http', scheme: 'basic', description: 'Any user name; the password is the token. For browsers opening the dashboard.' },
      },
    },
  };
}

function securityOf(operation: OperationSpec): Record<string, string[]>[] {
  const scopes = [operation.scope!];
  return operation.allowBasic ? [{ bearerAuth: scopes }, { basicAuth: scopes }] : [{ bearerAuth: scopes }];
}

function parametersOf(schema: z.ZodType | undefined, location: 'path' | 'query'): Record<string, unknown>[] {
  if (schema === undefined) return [];
  const json = toJsonSchema(schema, 'input');
  const properties = (json.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((json.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => {
    const { description, ...propertySchema } = property;
    return {
      name,
      in: location,
      // Path parameters are always required in OpenAPI.
      required: location === 'path' || required.has(name),
      ...(typeof description === 'string' ? { description } : {}),
      schema: propertySchema,
    };
  });
}

function responseObject(response: ResponseSpec, schemaOf: (schema: z.ZodType, name: string | undefined) => JsonSchema): Record<string, unknown> {
  const headers = Object.entries(response.headers ?? {}).map(([name, description]) => [name, { description, schema: { type: 'string' } }]);
  let content: Record<string, unknown> | undefined;
  if (response.schema) content = { 'application/json': { schema: schemaOf(response.schema, response.schemaName) } };
  else if (response.mediaType) content = { [response.mediaType]: { schema: { type: 'string' } } };
  return {
    description: response.description,
    ...(headers.length > 0 ? { headers: Object.fromEntries(headers) } : {}),
    ...(content ? { content } : {}),
  };
}

/**
 * Adds `descriptions` to the request's fields that have none: on the request schema itself (`request`),
 * or on the `request` property of a job view, in every branch of a union.
 */
function describeRequestFields(json: JsonSchema, request: JsonSchema | undefined, descriptions: Record<string, string>): void {
  const target = request ?? ((json.properties as Record<string, JsonSchema> | undefined)?.request as JsonSchema | undefined);
  if (target === undefined) return;
  const objects = [target, ...(((target.oneOf ?? target.anyOf) as JsonSchema[] | undefined) ?? [])];
  for (const object of objects) {
    const properties = object.properties as Record<string, JsonSchema> | undefined;
    for (const [field, description] of Object.entries(descriptions)) {
      const property = properties?.[field];
      if (property !== undefined && property.description === undefined) property.description = description;
    }
  }
}
