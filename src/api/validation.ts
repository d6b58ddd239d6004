import { z } from 'zod';
import type { FastifySchemaCompiler } from 'fastify';
import { describeValue } from '../config/problems.ts';
import { referenceForMessage } from '../image-ref/message-value.ts';

/**
 * Request validation with zod inside fastify. Each route's schemas are zod schemas, and fastify receives
 * their JSON Schema form, which the OpenAPI document shows too. The validator compiler maps that JSON
 * Schema back to the zod schema it came from, so zod's checks, defaults and messages apply.
 */

export type JsonSchema = Record<string, unknown>;

/** One invalid field of a request. */
export interface Problem {
  /** Dotted path such as `source` or `platforms.0`, or the request part (`body`, `query`) for the whole part. */
  field: string;
  message: string;
}

interface RegisteredSchema {
  schema: z.ZodType;
  /** Top-level fields whose values are never shown. */
  sensitiveFields: readonly string[];
}

const registered = new WeakMap<object, RegisteredSchema>();

/** Returns the JSON Schema (2020-12) of `schema` without `$schema`, as the OpenAPI 3.1 document embeds it. */
export function toJsonSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const json = z.toJSONSchema(schema, { io, target: 'draft-2020-12', unrepresentable: 'any' }) as JsonSchema;
  delete json.$schema;
  return json;
}

/**
 * Returns the JSON Schema of a request part for fastify's route options, remembering `schema` for
 * validation. Values under `sensitiveFields` never appear in error messages.
 */
export function requestSchema(schema: z.ZodType, sensitiveFields: readonly string[] = []): JsonSchema {
  const json = toJsonSchema(schema, 'input');
  registered.set(json, { schema, sensitiveFields });
  return json;
}

const PART_NAMES: Record<string, string> = { body: 'body', querystring: 'query', params: 'path', headers: 'headers' };

/** A request part that its zod schema rejected; fastify's error handler turns it into a 400 response. */
export class RequestValidationError extends Error {
  readonly statusCode = 400;
  readonly code = 'FST_ERR_VALIDATION';
  readonly problems: Problem[];

  constructor(part: string, problems: Problem[]) {
    super(`invalid request ${part}: ${problems.map((problem) => `${problem.field}: ${problem.message}`).join('; ')}`);
    this.problems = problems;
  }
}

/** fastify validator compiler for schemas made by `requestSchema`. */
export const zodValidatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const entry = registered.get(schema as object);
  const part = PART_NAMES[httpPart ?? ''] ?? String(httpPart);
  if (entry === undefined) throw new Error(`the ${part} schema of a route was not made by requestSchema(), so it cannot be validated`);
  return (data: unknown) => {
    // fastify passes null for an absent part.
    const input = data === null ? undefined : data;
    const result = entry.schema.safeParse(input);
    if (result.success) return { value: result.data };
    return { error: new RequestValidationError(part, describeIssues(result.error.issues, input, schema as JsonSchema, part, entry.sensitiveFields)) };
  };
};

/** Turns zod issues into problems that name the field, the value found (never of secret-named fields) and what is accepted. */
export function describeIssues(
  issues: readonly z.core.$ZodIssue[],
  input: unknown,
  json: JsonSchema,
  part: string,
  sensitiveFields: readonly string[] = [],
): Problem[] {
  const problems: Problem[] = [];
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') {
      const accepted = acceptedFields(json, issue.path, input);
      for (const key of issue.keys) {
        const field = [...issue.path, key].join('.');
        problems.push({ field, message: `unknown field; accepted fields: ${accepted.join(', ') || 'none'}` });
      }
      continue;
    }

    const field = issue.path.map(String).join('.') || part;
    const value = valueAt(input, issue.path);
    if (value === undefined) {
      const message = issue.path.length === 0 ? `missing; expected a JSON object` : `missing; ${issue.message}`;
      problems.push({ field, message });
      continue;
    }
    if (sensitiveFields.includes(String(issue.path[0]))) {
      problems.push({ field, message: issue.message });
      continue;
    }
    const lastKey = issue.path.at(-1);
    // A string may carry user information (user:password@host/app), which is redacted before it is shown.
    const displayed = typeof value === 'string' && value.includes('@') ? referenceForMessage(value) : value;
    problems.push({ field, message: `${issue.message} (found ${describeValue(typeof lastKey === 'string' ? lastKey : field, displayed)})` });
  }
  return problems;
}

function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let current = input;
  for (const key of path) {
    if (typeof current !== 'object' || current === null) return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/**
 * Lists the property names the JSON Schema allows at `path`, following `properties` and array `items`.
 * Of a union (`oneOf` or `anyOf`), it takes the branch whose `const` properties the input matches, such as
 * the branch of a cleanup request's `kind`.
 */
function acceptedFields(json: JsonSchema, path: readonly PropertyKey[], input: unknown): string[] {
  let current: JsonSchema | undefined = branchFor(json, input);
  let value = input;
  for (const key of path) {
    if (current === undefined) break;
    const properties = current.properties as Record<string, JsonSchema> | undefined;
    current = typeof key === 'number' ? (current.items as JsonSchema | undefined) : properties?.[String(key)];
    value = typeof value === 'object' && value !== null ? (value as Record<PropertyKey, unknown>)[key] : undefined;
    if (current !== undefined) current = branchFor(current, value);
  }
  const properties = current?.properties as Record<string, unknown> | undefined;
  return properties ? Object.keys(properties) : [];
}

function branchFor(json: JsonSchema, input: unknown): JsonSchema | undefined {
  const branches = (json.oneOf ?? json.anyOf) as JsonSchema[] | undefined;
  if (branches === undefined) return json;
  if (typeof input !== 'object' || input === null) return undefined;
  return branches.find((branch) => {
    const properties = (branch.properties ?? {}) as Record<string, JsonSchema>;
    const constants = Object.entries(properties).filter(([, property]) => 'const' in property);
    return constants.length > 0 && constants.every(([name, property]) => (input as Record<string, unknown>)[name] === property.const);
  });
}
