import { describe, expect, test } from 'vitest';
import { RegistryError } from '../../src/errors.ts';
import { pushRechecking } from '../../src/registry/manifest-push.ts';

function rejection(status: number, registryCodes: string[]): RegistryError {
  return new RegistryError('REGISTRY_PROTOCOL', `target answered ${status} ${registryCodes.join(', ')}`, { registry: 'target', operation: 'pushing manifest', status, registryCodes });
}

describe('pushRechecking', () => {
  test('stops after four pushes', async () => {
    const errors = [1, 2, 3, 4].map(() => rejection(400, ['MANIFEST_BLOB_UNKNOWN', 'DIGEST_INVALID']));
    let pushes = 0;
    let rechecks = 0;

    const pushed = pushRechecking(
      async () => {
        pushes += 1;
        throw errors[pushes - 1];
      },
      async () => {
        rechecks += 1;
      },
    );

    await expect(pushed, 'the last rejection').rejects.toBe(errors[3]);
    expect(pushes).toBe(4);
    expect(rechecks).toBe(3);
  });

  test('other rejections: no recheck', async () => {
    for (const error of [rejection(400, ['DIGEST_INVALID']), rejection(500, ['MANIFEST_BLOB_UNKNOWN']), rejection(404, ['MANIFEST_BLOB_UNKNOWN'])]) {
      let rechecks = 0;

      const pushed = pushRechecking(
        async () => {
          throw error;
        },
        async () => {
          rechecks += 1;
        },
      );

      await expect(pushed).rejects.toBe(error);
      expect(rechecks, `${error.status} ${error.registryCodes.join(', ')}`).toBe(0);
    }
  });

  test('push after a recheck succeeds', async () => {
    let pushes = 0;

    const pushed = await pushRechecking(
      async () => {
        pushes += 1;
        if (pushes === 1) throw rejection(400, ['MANIFEST_BLOB_UNKNOWN']);
        return 'sha256:pushed';
      },
      async () => undefined,
    );

    expect(pushed).toBe('sha256:pushed');
    expect(pushes).toBe(2);
  });

  test('failed recheck keeps the rejection', async () => {
    const rejected = rejection(400, ['MANIFEST_BLOB_UNKNOWN']);
    const recheckFailure = new Error('source blob missing');

    const pushed = pushRechecking(
      async () => {
        throw rejected;
      },
      async () => {
        throw recheckFailure;
      },
    );

    await expect(pushed).rejects.toBe(recheckFailure);
    expect(recheckFailure.cause, 'the rejected PUT').toBe(rejected);
  });
});
