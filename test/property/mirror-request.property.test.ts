import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { mirrorDedupeId, normaliseMirrorRequest, parseMirrorRequest } from '../../queues/mirror.ts';
import { InvalidInputError } from '../../src/errors.ts';
import { soakCount } from '../reliability/helpers.ts';
import { apply, mutation, validPayload, type Payload } from './payloads.ts';

/**
 * Generated mirror job payloads against the schema: valid ones parse and normalise stably, and every
 * malformed one (wrong types, missing or unknown fields, invalid values, huge strings, arbitrary JSON)
 * is rejected with an InvalidInputError that names the field at fault.
 */

const RUNS = soakCount(3_000, 100_000);
// Soak runs take minutes; the default limit of 60 s per test fits only the short runs.
const TIMEOUT_MS = soakCount(60_000, 1_800_000);

function rejection(payload: unknown): InvalidInputError {
  let error: unknown;
  try {
    parseMirrorRequest(payload);
  } catch (caught) {
    error = caught;
  }
  expect(error, 'the payload is rejected with InvalidInputError').toBeInstanceOf(InvalidInputError);
  const { message } = error as InvalidInputError;
  expect(message.startsWith('invalid mirror request: ')).toBe(true);
  // Each problem shows at most 200 characters of the value, whatever the size of the payload.
  expect(message.length).toBeLessThan(20_000);
  return error as InvalidInputError;
}

describe('mirror request schema properties', { timeout: TIMEOUT_MS }, () => {
  test('valid payloads parse and normalise stably', () => {
    fc.assert(
      fc.property(validPayload, (payload) => {
        const request = parseMirrorRequest(payload);
        const normal = normaliseMirrorRequest(request);

        expect(normaliseMirrorRequest(parseMirrorRequest(normal))).toEqual(normal);
        expect(mirrorDedupeId(normal)).toBe(mirrorDedupeId(request));
      }),
      { numRuns: RUNS },
    );
  });

  test('malformed payloads are rejected naming the field', () => {
    fc.assert(
      fc.property(validPayload, mutation, (payload, change) => {
        // The mutation must break the payload: a mode change can make a missing service valid.
        const broken = apply({ ...payload, mode: 'service', service: payload.service ?? 'web' }, change);
        const { message } = rejection(broken);
        if (change.kind === 'unknown') {
          // The key appears as written or JSON-escaped, depending on where the message quotes it.
          const escaped = JSON.stringify(change.key).slice(1, -1);
          expect(message.includes(change.key) || message.includes(escaped), `unknown key ${escaped} is named`).toBe(true);
        } else {
          expect(message, `${change.kind} ${change.field}`).toContain(change.field);
        }
      }),
      { numRuns: RUNS },
    );
  });

  test('arbitrary JSON payloads are rejected', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (payload) => {
        rejection(payload);
      }),
      { numRuns: RUNS },
    );
  });

  test('non-request text rejected', () => {
    const texts = fc.oneof(fc.string({ maxLength: 200 }), fc.jsonValue().map((value) => JSON.stringify(value)), validPayload.map((value) => JSON.stringify(value).slice(0, -1)));
    fc.assert(
      fc.property(texts, (text) => {
        let payload: unknown = text;
        try {
          payload = JSON.parse(text) as unknown;
        } catch {
          // Malformed JSON reaches the schema as the text itself, as a body that failed to parse would.
        }
        rejection(payload);
      }),
      { numRuns: RUNS },
    );
  });

  test('non-JSON values rejected, not TypeError', () => {
    const circular: Payload = { v: 1, source: 'registry.example/app:1', registry: 'local', cluster: 'prod', service: 'web' };
    circular.self = circular;

    expect(rejection({ v: 1, source: 10n, registry: 'local', cluster: 'prod', service: 'web' }).message).toContain('source');
    expect(rejection(circular).message).toContain('self');
  });
});
