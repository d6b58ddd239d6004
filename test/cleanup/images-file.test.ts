import { describe, expect, test } from 'vitest';
import { parseImagesFile } from '../../src/cleanup/images-file.ts';
import { InvalidInputError } from '../../src/errors.ts';

const DIGEST = `sha256:${'a'.repeat(64)}`;

function pod(labels: Record<string, string>, spec: Record<string, unknown>, status: Record<string, unknown> = {}) {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', labels }, spec, status };
}

describe('parseImagesFile lines', () => {
  test('reads images with and without a service', () => {
    const images = parseImagesFile('# running now\nmirror.example/app:1 web\n\nmirror.example/tool@' + DIGEST + '\n');

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
    const images = parseImagesFile(JSON.stringify(list), { serviceLabel: 'app' });

    expect(images).toEqual([
      { reference: 'mirror.example/app:1', service: 'web' },
      { reference: 'mirror.example/init:2', service: 'web' },
      { reference: `mirror.example/app@${DIGEST}`, service: 'web' },
      { reference: 'mirror.example/job:3' },
    ]);
  });

  test('gives every use to the cluster without a service label', () => {
    const images = parseImagesFile(JSON.stringify(list));

    expect(images.every((image) => image.service === undefined)).toBe(true);
    expect(images).toHaveLength(4);
  });

  test('reads the pod template of a deployment', () => {
    const deployment = { kind: 'Deployment', metadata: { labels: { app: 'api' } }, spec: { template: { metadata: { labels: { app: 'api' } }, spec: { containers: [{ image: 'mirror.example/api:7' }] } } } };

    expect(parseImagesFile(JSON.stringify(deployment), { serviceLabel: 'app' })).toEqual([{ reference: 'mirror.example/api:7', service: 'api' }]);
  });

  test('rejects JSON that does not parse', () => {
    expect(() => parseImagesFile('{"items": [')).toThrow(/the JSON does not parse .*expected the output of kubectl get pods -o json/);
  });
});
