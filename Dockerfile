# mirrorfleet worker image. Node.js 22.18 and later run the TypeScript sources directly, so there is no
# build step: production dependencies and the sources are all the image needs.
ARG NODE_IMAGE=node:24-slim

FROM ${NODE_IMAGE} AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
WORKDIR /app
ENV NODE_ENV=production
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY queues ./queues
COPY workers ./workers
USER node
EXPOSE 9464
ENTRYPOINT ["node", "/app/bin/mirrorfleet.js"]
CMD ["worker"]
