import { describe, expect, test } from 'vitest';
import { describeCleanup } from '../../src/cli/commands/sweep.ts';
import type { CleanupResult } from '../../queues/cleanup.ts';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const image = { registry: 'mirror.test', repository: 'prod/shared/app', digest: DIGEST };

function result(overrides: Partial<CleanupResult>): CleanupResult {
  return { jobId: '7', kind: 'sweep', dryRun: false, deleted: [], kept: [], forgotten: [], released: [], recorded: [], missing: [], ignored: [], limits: [], durationMs: 12, ...overrides };
}

describe('describeCleanup', () => {
  test('lists each deletion and kept image with its reason', () => {
    const text = describeCleanup(
      result({
        deleted: [{ ...image, tag: '1', image: `mirror.test/prod/shared/app:1@${DIGEST}`, method: 'digest', reference: DIGEST, tags: ['1'], result: 'absent', images: [], reason: 'unused since then' }],
        kept: [{ ...image, tag: '2', image: `mirror.test/prod/shared/app:2@${DIGEST}`, reason: 'in-use', detail: 'used by prod/web' }],
        limits: [{ registry: 'local', maxDeletePercent: 50, known: 2, allowed: 1, removed: 1, reached: true, message: 'the sweep of local stopped at its limit' }],
      }),
    );

    expect(text.split('\n')).toEqual([
      'sweep: 1 deleted, 1 kept in 12 ms',
      `  deleted      mirror.test/prod/shared/app@${DIGEST} by digest (already gone): unused since then`,
      `  kept         mirror.test/prod/shared/app:2@${DIGEST}: in-use: used by prod/web`,
      '  limit: the sweep of local stopped at its limit',
      '',
    ]);
  });

  test('says what a dry run would delete', () => {
    const text = describeCleanup(
      result({
        dryRun: true,
        deleted: [{ ...image, image: `mirror.test/prod/shared/app@${DIGEST}`, method: 'digest', reference: DIGEST, tags: [], result: 'planned', images: [], reason: 'old' }],
      }),
    );

    expect(text).toMatch(/^sweep \(dry run\): 1 would delete, 0 kept/);
    expect(text).toContain(`  would delete mirror.test/prod/shared/app@${DIGEST} by digest: old`);
  });

  test('lists released uses and reconcile findings', () => {
    const text = describeCleanup(
      result({
        kind: 'reconcile',
        released: [{ ...image, image: `mirror.test/prod/shared/app@${DIGEST}`, user: 'prod/old', usesLeft: 0 }],
        missing: ['mirror.test/prod/shared/app:gone'],
        ignored: ['docker.io/library/nginx:1.27'],
      }),
    );

    expect(text).toContain('reconcile: 0 deleted, 0 kept, 1 use released in 12 ms');
    expect(text).toContain(`  released     mirror.test/prod/shared/app@${DIGEST} by prod/old, 0 uses left`);
    expect(text).toContain('  missing      mirror.test/prod/shared/app:gone: the mirror registry does not have it');
    expect(text).toContain('  ignored      docker.io/library/nginx:1.27: outside the selected mirror registries');
  });

  test('names a use by the whole cluster in words', () => {
    const text = describeCleanup(result({ kind: 'reconcile', released: [{ ...image, image: `mirror.test/prod/shared/app@${DIGEST}`, user: 'prod/', usesLeft: 1 }] }));

    expect(text).toContain(`  released     mirror.test/prod/shared/app@${DIGEST} by cluster prod (no service named), 1 use left`);
    expect(text).not.toContain('by prod/,');
  });
});
