# The mirrorfleet image. It holds the JavaScript that `npm run build` compiles from the TypeScript
# sources, and the production dependencies, nothing else. A checkout runs the sources directly, but a
# process that loads compiled JavaScript starts with about 30 MB less memory (docs/benchmarks.md).
#
#   docker build -t mirrorfleet .                               # target `runtime`: API and mirror workers
#   docker build --target build-worker -t mirrorfleet-build .   # also carries buildah, for build jobs
#   buildah build --build-arg NODE_IMAGE=registry.internal/library/node:24-slim -t mirrorfleet .
#
# NODE_IMAGE names the base: any Debian-based image with Node.js 24 and npm in /usr/local/bin, as the
# official node:24-slim image has them. Point it at your mirror registry to build without Docker Hub.
#
# Two optional build secrets serve `npm ci` behind a private npm registry or a TLS-intercepting proxy.
# They are secrets rather than build arguments because build argument values stay in the image history.
#   --secret id=npmrc,src=$HOME/.npmrc                    an .npmrc: registry, auth token, proxy
#   --secret id=ca-certificates,src=/path/to/ca.pem       extra CA certificates (PEM) to trust

ARG NODE_IMAGE=docker.io/library/node:24-slim

FROM ${NODE_IMAGE} AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-certificates; fi \
    && npm ci --omit=dev --no-audit --no-fund --loglevel=error

# The compiler and the type definitions are development dependencies, so they stay in this stage.
FROM ${NODE_IMAGE} AS compile
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-certificates; fi \
    && npm ci --no-audit --no-fund --loglevel=error
COPY src ./src
COPY queues ./queues
COPY workers ./workers
RUN npm run build

FROM ${NODE_IMAGE} AS app
# A 1 MB young-generation semi-space makes V8 free the dead stream buffers of a copy sooner. In the
# benchmark's memory scenario it cut a worker's peak RSS by about a third, at the same copy speed and
# warm-job rate (docs/benchmarks.md). A NODE_OPTIONS set at run time replaces it.
ENV NODE_ENV=production NODE_OPTIONS=--max-semi-space-size=1
# A numeric user and group, so that Kubernetes can enforce runAsNonRoot without looking up a name.
RUN groupadd --gid 10001 mirrorfleet \
    && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /home/mirrorfleet --create-home \
       --shell /usr/sbin/nologin mirrorfleet
WORKDIR /app
COPY --from=dependencies /app/node_modules ./node_modules
COPY --from=compile /app/dist ./dist
COPY package.json ./
# bin/mirrorfleet.js runs dist/ because the image holds no src/.
COPY bin ./bin
# The code belongs to root and is read-only for the process. The build context may carry a
# restrictive umask, so the modes are set here instead of trusting the context.
RUN chmod -R u=rwX,go=rX /app/package.json /app/bin /app/dist \
    && chmod 0755 /app/bin/mirrorfleet.js \
    && ln -s /app/bin/mirrorfleet.js /usr/local/bin/mirrorfleet
USER 10001:10001
# 9464: /metrics, /healthz and /readyz of a worker (MIRRORFLEET_METRICS_PORT).
EXPOSE 9464
ENTRYPOINT ["mirrorfleet"]
CMD ["worker"]

# For workers that run build jobs: buildah with chroot isolation and vfs storage, which need no
# daemon and no overlay mounts.
# NOTE: buildah still creates a user namespace. Docker's default seccomp profile and many Kubernetes
# pod security settings forbid that, so such a container needs seccomp and AppArmor unconfined (or
# privileged). tini reaps the buildah processes that a build leaves behind.
FROM app AS build-worker
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends buildah uidmap git tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && echo 'mirrorfleet:100000:65536' > /etc/subuid \
    && echo 'mirrorfleet:100000:65536' > /etc/subgid
ENV BUILDAH_ISOLATION=chroot STORAGE_DRIVER=vfs
USER 10001:10001
ENTRYPOINT ["tini", "--", "mirrorfleet"]
CMD ["worker"]

# The default target, last so that a plain `docker build` produces it.
FROM app AS runtime
