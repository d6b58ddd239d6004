import { describe, expect, test } from 'vitest';
import { countOf, cutQuotedValues, cutText, describeResult } from '../../src/cli/common.ts';
import type { MirrorResult } from '../../queues/mirror.ts';
import type { CleanupResult } from '../../queues/cleanup.ts';
import { describeCleanup } from '../../src/cli/commands/sweep.ts';

const DIGEST = `sha256:${'b'.repeat(64)}`;

function result(copied: { manifests: number; blobs: number }): MirrorResult {
  return {
    jobId: '1',
    action: 'copied',
    source: 'docker.io/library/busybox:1.38',
    sourceDigest: DIGEST,
    target: 'mirror.test/prod/shared/docker.io/library/busybox:1.38',
    pinned: `mirror.test/prod/shared/docker.io/library/busybox@${DIGEST}`,
    digest: DIGEST,
    digestChanged: false,
    platforms: ['linux/amd64'],
    manifests: { copied: copied.manifests, present: 0 },
    blobs: { copied: copied.blobs, mounted: 0, present: 0 },
    bytes: { pulled: 2048, pushed: 2048 },
    durationMs: 5,
  };
}

describe('describeResult', () => {
  test('uses the singular for one', () => {
    expect(describeResult(result({ manifests: 1, blobs: 1 }))).toContain('  1 manifest and 1 blob copied, 0 mounted');
  });

  test('uses the plural for others', () => {
    expect(describeResult(result({ manifests: 2, blobs: 0 }))).toContain('  2 manifests and 0 blobs copied, 0 mounted');
  });
});

describe('message helpers', () => {
  test('countOf picks the noun form', () => {
    expect(countOf(1, 'line')).toBe('1 line');
    expect(countOf(0, 'line')).toBe('0 lines');
    expect(countOf(3, 'mirror job')).toBe('3 mirror jobs');
  });

  test('cutText cuts to the maximum', () => {
    expect(cutText('x'.repeat(80))).toBe('x'.repeat(80));
    expect(cutText('x'.repeat(81))).toBe(`${'x'.repeat(79)}…`);
  });

  test('cutQuotedValues keeps quotes balanced', () => {
    const long = 'y'.repeat(100);

    const cut = cutQuotedValues(`source ("${long}"): invalid "short" and "${long}"`);

    expect(cut).toBe(`source ("${'y'.repeat(79)}…"): invalid "short" and "${'y'.repeat(79)}…"`);
  });
});

describe('describeCleanup of a dry-run release', () => {
  test('says would release', () => {
    const image = { registry: 'mirror.test', repository: 'prod/shared/app', digest: DIGEST, image: `mirror.test/prod/shared/app@${DIGEST}` };
    const result: CleanupResult = {
      jobId: '3', kind: 'release', dryRun: true, deleted: [], kept: [], forgotten: [], recorded: [], missing: [], ignored: [], limits: [], durationMs: 4,
      released: [{ ...image, user: 'prod/web', usesLeft: 0 }],
    };

    const text = describeCleanup(result, { v: 1, kind: 'release', cluster: 'prod', service: 'web', dryRun: true });

    expect(text).toContain('release (dry run): 0 would delete, 0 kept, would release 1 use in 4 ms');
    expect(text).toContain(`  would release mirror.test/prod/shared/app@${DIGEST} by prod/web, 0 uses left`);
    expect(text).not.toMatch(/\breleased\b/);
  });
});
