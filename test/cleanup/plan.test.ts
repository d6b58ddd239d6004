import { describe, expect, test } from 'vitest';
import { planRepository, type PlanOptions } from '../../src/cleanup/plan.ts';
import { formatImageKey, type ImageRecord, type ReleaseKind, type RepositoryState } from '../../src/refcounts/types.ts';

const REPO = 'prod/shared/docker.io/library/app';
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const INDEX = digest('1');
const OTHER_INDEX = digest('2');
const CHILD_A = digest('a');
const CHILD_B = digest('b');
const CHILD_C = digest('c');
const SINGLE = digest('5');

const HOUR = 3_600_000;
// Any time later than every release in the tests; the Unix epoch plus about 11 years.
const NOW = 100_000 * HOUR;
const OPTIONS: PlanOptions = { now: NOW, previousRetentionMs: 24 * HOUR, releasedRetentionMs: 365 * 24 * HOUR, canDeleteTags: false, budget: 1000 };

interface ImageSpec {
  tag?: string;
  digest: string;
  users?: string[];
  /** Hours before NOW that the image lost its last use. */
  unusedHoursAgo?: number;
  kind?: ReleaseKind;
}

/** Builds a repository state: the images, index edges, and tag records (each tagged image's tag by default). */
function state(images: ImageSpec[], edges: Array<[string, string]> = [], tags?: Record<string, string>): RepositoryState {
  const records: ImageRecord[] = images.map((spec) => {
    const image = { repository: REPO, ...(spec.tag === undefined ? {} : { tag: spec.tag }), digest: spec.digest };
    return {
      image,
      key: formatImageKey(image),
      users: (spec.users ?? []).map((user) => ({ user, recordedAt: 0 })),
      ...(spec.unusedHoursAgo === undefined ? {} : { unusedSince: NOW - spec.unusedHoursAgo * HOUR, kind: spec.kind ?? 'released' }),
    };
  });
  const children = new Map<string, string[]>();
  const parents = new Map<string, string[]>();
  for (const [parent, child] of edges) {
    children.set(parent, [...(children.get(parent) ?? []), child]);
    parents.set(child, [...(parents.get(child) ?? []), parent]);
  }
  const tagRecords = tags ?? Object.fromEntries(images.filter((spec) => spec.tag !== undefined).map((spec) => [spec.tag!, spec.digest]));
  return { repository: REPO, revision: '7', images: records, tags: new Map(Object.entries(tagRecords)), children, parents, leases: 0 };
}

const YEAR_AND_A_DAY = 366 * 24;
const INDEX_EDGES: Array<[string, string]> = [
  [INDEX, CHILD_A],
  [INDEX, CHILD_B],
];

function deletedReferences(plan: ReturnType<typeof planRepository>): string[] {
  return plan.deletions.map((deletion) => `${deletion.method} ${deletion.reference}`);
}

function keptReasons(plan: ReturnType<typeof planRepository>): Record<string, string> {
  return Object.fromEntries(plan.kept.map((kept) => [formatImageKey(kept.image).slice(REPO.length), kept.reason]));
}

describe('planRepository retention', () => {
  test('keeps an image in use however old', () => {
    const plan = planRepository(state([{ tag: '1', digest: SINGLE, users: ['prod/web'] }]), { ...OPTIONS, releasedRetentionMs: 0 });

    expect(plan.deletions).toEqual([]);
    expect(plan.kept).toEqual([expect.objectContaining({ reason: 'in-use', detail: 'used by prod/web' })]);
  });

  test('keeps a released image for a year', () => {
    const plan = planRepository(state([{ tag: '1', digest: SINGLE, unusedHoursAgo: 364 * 24 }]), OPTIONS);

    expect(plan.deletions).toEqual([]);
    expect(plan.kept[0]?.reason).toBe('retention');
    expect(plan.kept[0]?.deletableAt).toBe(NOW + 24 * HOUR);
  });

  test('deletes a released image after a year', () => {
    const plan = planRepository(state([{ tag: '1', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY }]), OPTIONS);

    expect(deletedReferences(plan)).toEqual([`digest ${SINGLE}`]);
    expect(plan.deletions[0]?.tags).toEqual(['1']);
    expect(plan.deletions[0]?.reason).toMatch(/its last use was released; retention 365 d$/);
    expect(plan.imagesRemoved).toBe(1);
  });

  test('gives a previous image 24 hours', () => {
    const waiting = planRepository(state([{ tag: '1', digest: SINGLE, unusedHoursAgo: 23, kind: 'previous' }]), OPTIONS);
    const due = planRepository(state([{ tag: '1', digest: SINGLE, unusedHoursAgo: 24, kind: 'previous' }]), OPTIONS);

    expect(waiting.deletions).toEqual([]);
    expect(waiting.kept[0]?.reason).toBe('retention');
    expect(deletedReferences(due)).toEqual([`digest ${SINGLE}`]);
    expect(due.deletions[0]?.reason).toMatch(/a newer image of the same service replaced it; retention 24 h$/);
  });

  test('never deletes an image without a record of release', () => {
    const plan = planRepository(state([{ tag: '1', digest: SINGLE }]), { ...OPTIONS, releasedRetentionMs: 0 });

    expect(plan.deletions).toEqual([]);
    expect(plan.kept[0]?.reason).toBe('no-record');
  });
});

describe('planRepository by digest', () => {
  test('keeps an index shared with a tag in use, and its children', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: INDEX, users: ['prod/web'] },
          { tag: 'stable', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
        ],
        INDEX_EDGES,
      ),
      OPTIONS,
    );

    expect(plan.deletions).toEqual([]);
    expect(keptReasons(plan)).toEqual({ [`:latest@${INDEX}`]: 'in-use', [`:stable@${INDEX}`]: 'shared-digest' });
  });

  test('deletes an unused index before its children', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
          { tag: 'stable', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
        ],
        INDEX_EDGES,
      ),
      OPTIONS,
    );

    expect(deletedReferences(plan)).toEqual([`digest ${INDEX}`, `digest ${CHILD_A}`, `digest ${CHILD_B}`]);
    expect(plan.deletions[0]?.tags).toEqual(['latest', 'stable']);
    expect(plan.deletions[1]?.reason).toBe(`listed only by index ${INDEX}, which is deleted before it`);
    expect(plan.imagesRemoved).toBe(2);
  });

  test('keeps a child shared with a kept index', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'old', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
          { tag: 'new', digest: OTHER_INDEX, users: ['prod/web'] },
        ],
        [...INDEX_EDGES, [OTHER_INDEX, CHILD_B], [OTHER_INDEX, CHILD_C]],
      ),
      OPTIONS,
    );

    expect(deletedReferences(plan)).toEqual([`digest ${INDEX}`, `digest ${CHILD_A}`]);
  });

  test('keeps a tagged child listed by a kept index', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: INDEX, users: ['prod/web'] },
          { tag: 'arm64', digest: CHILD_A, unusedHoursAgo: YEAR_AND_A_DAY },
        ],
        INDEX_EDGES,
      ),
      OPTIONS,
    );

    expect(plan.deletions).toEqual([]);
    expect(plan.kept.find((kept) => kept.image.tag === 'arm64')).toEqual(
      expect.objectContaining({ reason: 'listed-by-kept-index', detail: `index ${INDEX}, which stays, lists its digest` }),
    );
  });

  test('keeps a digest pinned by a use without a tag', () => {
    const plan = planRepository(
      state([
        { tag: '1', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY },
        { digest: SINGLE, users: ['prod/web'] },
      ]),
      OPTIONS,
    );

    expect(plan.deletions).toEqual([]);
    expect(keptReasons(plan)[`:1@${SINGLE}`]).toBe('shared-digest');
  });

  test('deletes the old digest of a moved tag without touching the tag', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY },
          { tag: 'latest', digest: INDEX, users: ['prod/web'] },
        ],
        INDEX_EDGES,
        { latest: INDEX },
      ),
      OPTIONS,
    );

    expect(deletedReferences(plan)).toEqual([`digest ${SINGLE}`]);
    expect(plan.deletions[0]?.tags).toEqual([]);
  });

  test('orders nested indexes from the top down', () => {
    const nested = digest('e');
    const plan = planRepository(
      state([{ tag: 'latest', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY }], [
        [INDEX, nested],
        [nested, CHILD_C],
        [INDEX, CHILD_A],
      ]),
      OPTIONS,
    );

    expect(deletedReferences(plan)).toEqual([`digest ${INDEX}`, `digest ${CHILD_A}`, `digest ${nested}`, `digest ${CHILD_C}`]);
  });

  test('never deletes a manifest it knows only as a parent', () => {
    const unknownParent = digest('f');
    const plan = planRepository(
      state([{ tag: 'arm64', digest: CHILD_A, unusedHoursAgo: YEAR_AND_A_DAY }], [[unknownParent, CHILD_A]]),
      OPTIONS,
    );

    expect(plan.deletions).toEqual([]);
    expect(plan.kept[0]?.reason).toBe('listed-by-kept-index');
  });
});

describe('planRepository by tag', () => {
  const byTag = { ...OPTIONS, canDeleteTags: true };

  test('deletes an unused tag while another tag in use keeps the digest', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: INDEX, users: ['prod/web'] },
          { tag: 'stable', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
        ],
        INDEX_EDGES,
      ),
      byTag,
    );

    expect(deletedReferences(plan)).toEqual(['tag stable']);
    expect(keptReasons(plan)).toEqual({ [`:latest@${INDEX}`]: 'in-use' });
  });

  test('keeps the last tag of a digest that is still needed', () => {
    const plan = planRepository(
      state([
        { tag: '1', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY },
        { digest: SINGLE, users: ['prod/web'] },
      ]),
      byTag,
    );

    expect(plan.deletions).toEqual([]);
    expect(keptReasons(plan)[`:1@${SINGLE}`]).toBe('last-tag');
  });

  test('deletes every tag of a digest nobody needs, and no digest', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
          { tag: 'stable', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY + 1 },
        ],
        INDEX_EDGES,
      ),
      byTag,
    );

    expect(deletedReferences(plan)).toEqual(['tag stable', 'tag latest']);
  });

  test('only forgets a moved tag and a use by digest', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'latest', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY },
          { digest: CHILD_C, unusedHoursAgo: YEAR_AND_A_DAY },
          { tag: 'latest', digest: INDEX, users: ['prod/web'] },
        ],
        INDEX_EDGES,
        { latest: INDEX },
      ),
      byTag,
    );

    expect(plan.deletions).toEqual([]);
    expect(plan.forget.map((entry) => formatImageKey(entry.image))).toEqual([`${REPO}:latest@${SINGLE}`, `${REPO}@${CHILD_C}`]);
    expect(plan.forget[0]?.reason).toMatch(/tag latest now points at another digest$/);
  });
});

describe('planRepository budget', () => {
  test('takes the oldest images first and keeps the rest with reason limit', () => {
    const plan = planRepository(
      state(
        [
          { tag: 'old', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY + 10 },
          { tag: 'newer', digest: INDEX, unusedHoursAgo: YEAR_AND_A_DAY },
        ],
        INDEX_EDGES,
      ),
      { ...OPTIONS, budget: 1 },
    );

    expect(deletedReferences(plan)).toEqual([`digest ${SINGLE}`]);
    expect(plan.limited).toBe(true);
    expect(keptReasons(plan)).toEqual({ [`:newer@${INDEX}`]: 'limit' });
  });

  test('deletes nothing with a budget of zero', () => {
    const plan = planRepository(state([{ tag: '1', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY }]), { ...OPTIONS, budget: 0 });

    expect(plan.deletions).toEqual([]);
    expect(plan.limited).toBe(true);
  });

  test('counts tags against the budget by tag', () => {
    const plan = planRepository(
      state([
        { tag: 'a', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY + 2 },
        { tag: 'b', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY + 1 },
        { tag: 'c', digest: SINGLE, unusedHoursAgo: YEAR_AND_A_DAY },
      ]),
      { ...OPTIONS, canDeleteTags: true, budget: 2 },
    );

    expect(deletedReferences(plan)).toEqual(['tag a', 'tag b']);
    expect(keptReasons(plan)).toEqual({ [`:c@${SINGLE}`]: 'limit' });
  });
});
