import { describe, expect, test } from 'vitest';
import { parseImagesFile } from '../../src/cleanup/images-file.ts';
import { InvalidInputError } from '../../src/errors.ts';

const DIGEST = `sha256:${'a'.repeat(64)}`;

function pod(labels: Record<string, string>, spec: Record<string, unknown>, status: Record<string, unknown> = {}, name = 'p') {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'shop', labels }, spec, status };
}

function podList(...items: unknown[]) {
  return JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
}

describe('parseImagesFile lines', () => {
  test('reads images with and without a service', () => {
    const { images } = parseImagesFile('# running now\nmirror.example/app:1 web\n\nmirror.example/tool@' + DIGEST + '\n');

    expect(images).toEqual([{ reference: 'mirror.example/app:1', service: 'web' }, { reference: `mirror.example/tool@${DIGEST}` }]);
  });

  test('rejects a line with three fields naming it', () => {
    expect(() => parseImagesFile('a:1 web extra')).toThrow(InvalidInputError);
    expect(() => parseImagesFile('ok:1\na:1 web extra')).toThrow(/line 2 \("a:1 web extra"\): expected "IMAGE \[SERVICE\]"/);
  });
});

describe('parseImagesFile kubectl JSON', () => {
  const list = {
    apiVersion: 'v1',
    kind: 'List',
    items: [
      pod(
        { app: 'web' },
        { containers: [{ name: 'app', image: 'mirror.example/app:1' }], initContainers: [{ name: 'init', image: 'mirror.example/init:2' }] },
        { containerStatuses: [{ name: 'app', imageID: `docker-pullable://mirror.example/app@${DIGEST}` }] },
      ),
      pod({}, { containers: [{ name: 'job', image: 'mirror.example/job:3' }] }, { containerStatuses: [{ name: 'job', imageID: `sha256:${'b'.repeat(64)}` }] }),
    ],
  };

  test('takes spec images and pulled digests, with the service from a label', () => {
    const { images } = parseImagesFile(JSON.stringify(list), { serviceLabel: 'app' });

    expect(images).toEqual([
      { reference: 'mirror.example/app:1', service: 'web' },
      { reference: 'mirror.example/init:2', service: 'web' },
      { reference: `mirror.example/app@${DIGEST}`, service: 'web' },
      { reference: 'mirror.example/job:3' },
    ]);
  });

  test('gives every use to the cluster without a service label', () => {
    const { images } = parseImagesFile(JSON.stringify(list));

    expect(images.every((image) => image.service === undefined)).toBe(true);
    expect(images).toHaveLength(4);
  });

  test('rejects a deployment naming its kind', () => {
    const deployment = { kind: 'Deployment', metadata: { labels: { app: 'api' } }, spec: { template: { metadata: { labels: { app: 'api' } }, spec: { containers: [{ image: 'mirror.example/api:7' }] } } } };

    expect(() => parseImagesFile(JSON.stringify(deployment), { serviceLabel: 'app' })).toThrow(/found an object with kind "Deployment" and the keys "kind", "metadata", "spec"; expected the output of kubectl get pods -o json/);
  });

  test('reads a single pod', () => {
    const single = pod({ app: 'web' }, { containers: [{ image: 'mirror.example/app:1' }] });

    expect(parseImagesFile(JSON.stringify(single), { serviceLabel: 'app' })).toEqual({ images: [{ reference: 'mirror.example/app:1', service: 'web' }], pods: 1, podsWithoutLabel: 0 });
  });

  test('reads a PodList whose items have no kind', () => {
    const { kind: _kind, ...item } = pod({}, { containers: [{ image: 'mirror.example/app:1' }] });

    expect(parseImagesFile(JSON.stringify({ kind: 'PodList', items: [item] })).images).toEqual([{ reference: 'mirror.example/app:1' }]);
  });

  test('rejects JSON that does not parse', () => {
    expect(() => parseImagesFile('{"items": [')).toThrow(/the JSON does not parse .*expected the output of kubectl get pods -o json/);
  });
});

describe('parseImagesFile input that names nothing', () => {
  test.each([
    ['empty text', ''],
    ['blank lines', '\n  \n\t\n'],
    ['only comments', '# kubectl failed\n\n# nothing else\n'],
  ])('rejects %s', (_name, text) => {
    expect(() => parseImagesFile(text)).toThrow(InvalidInputError);
    expect(() => parseImagesFile(text)).toThrow(/the input is empty .*would release every use of the cluster/);
    expect(() => parseImagesFile(text, { allowEmpty: true }), 'with allowEmpty too').toThrow(/the input is empty/);
  });

  test.each([
    ['{}', /found an object with no kind and the keys \(none\)/],
    ['{"foo":1}', /found an object with no kind and the keys "foo"/],
    ['{"items":5}', /found an object with no kind and the keys "items"/],
    ['{"items":null}', /found an object with no kind and the keys "items"/],
    ['{"kind":"List","items":null}', /the List has items null, not an array of pods/],
    ['{"kind":"List"}', /the List has items nothing, not an array of pods/],
    ['[]', /found an array of 0 entries/],
    ['null', /found null/],
    ['"nginx"', /found the string "nginx"/],
    ['{"items":[{"foo":1}]}', /found an object with no kind and the keys "items"/],
    ['{"kind":"List","items":[{"foo":1}]}', /items\[0\] \(\(no name\)\) has no spec.containers array/],
    ['{"kind":"List","items":[5]}', /items\[0\] is the number 5, not a Pod/],
    ['{"kind":"List","items":[{"kind":"Service","metadata":{"name":"web"}}]}', /items\[0\] \(web\) has kind "Service", not Pod/],
    ['{"kind":"Pod","metadata":{"name":"web","namespace":"shop"},"spec":{"containers":[{"name":"app"}]}}', /the Pod shop\/web has no image in spec.containers\[0\]/],
  ])('rejects %s naming what it found', (text, message) => {
    expect(() => parseImagesFile(text, { allowEmpty: true })).toThrow(InvalidInputError);
    expect(() => parseImagesFile(text, { allowEmpty: true })).toThrow(message);
  });

  test('rejects a pod list without pods', () => {
    expect(() => parseImagesFile(podList())).toThrow(/the pod list has no pods, and reconciling with it would release every use of the cluster; pass --allow-empty/);
  });

  test('accepts a pod list without pods when allowed', () => {
    expect(parseImagesFile(podList(), { allowEmpty: true })).toEqual({ images: [], pods: 0, podsWithoutLabel: 0 });
  });
});

describe('parseImagesFile service labels', () => {
  const containers = { containers: [{ image: 'mirror.example/app:1' }] };

  test('lowercases an uppercase label value', () => {
    const { images } = parseImagesFile(podList(pod({ app: 'Web_UI' }, containers)), { serviceLabel: 'app' });

    expect(images).toEqual([{ reference: 'mirror.example/app:1', service: 'web_ui' }]);
  });

  test('rejects an invalid label value naming the pod', () => {
    const text = podList(pod({ app: 'web' }, containers, {}, 'ok'), pod({ app: 'Web__UI' }, containers, {}, 'web-5f7'));

    expect(() => parseImagesFile(text, { serviceLabel: 'app' })).toThrow(InvalidInputError);
    expect(() => parseImagesFile(text, { serviceLabel: 'app' })).toThrow(/pod shop\/web-5f7 has label app="Web__UI", which is not a valid service id even in lowercase: service must be lowercase letters/);
  });

  test('counts pods without the label', () => {
    const text = podList(pod({ app: 'web' }, containers), pod({}, containers), pod({ tier: 'x' }, containers));

    const parsed = parseImagesFile(text, { serviceLabel: 'app' });

    expect(parsed.pods).toBe(3);
    expect(parsed.podsWithoutLabel).toBe(2);
    expect(parsed.images).toEqual([{ reference: 'mirror.example/app:1', service: 'web' }, { reference: 'mirror.example/app:1' }, { reference: 'mirror.example/app:1' }]);
  });

  test('rejects an invalid service in a line naming it', () => {
    expect(() => parseImagesFile('mirror.example/app:1 Web')).toThrow(/line 1: invalid service "Web": service must be lowercase letters/);
  });
});
