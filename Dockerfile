# syntax=docker/dockerfile:1

# Node 24 is the active LTS line; the Debian base matches the machines this project is built on.
ARG NODE_IMAGE=node:24-bookworm-slim

# --- build: every dependency (TypeScript and friends), src/ compiled into dist/ ---
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# The lockfile alone first, so the dependency layer is reused while only sources change.
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- runtime: production dependencies, the compiled code and the SQL migrations only ---
FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
# Read at start from ../../migrations relative to dist/db/, i.e. /app/migrations.
COPY migrations ./migrations
# The code stays root-owned (read-only to the service); DATA_DIR (./data) is the one writable
# place, used only outside production (embedded database, generated dev secret).
RUN mkdir data && chown node:node data
USER node

EXPOSE 5000
# Liveness without curl (not in the slim image): Node's own fetch against GET /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||5000)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# node runs directly as PID 1, not through `npm start` (whose prestart would rebuild, and npm
# does not forward signals reliably). As PID 1, node gets SIGTERM because the server installs
# its own SIGTERM/SIGINT handler (close-with-grace: drain requests, close the pool, exit 0),
# and it starts no child processes, so no init (tini) is needed to reap zombies.
# The same node flags as `npm start` (README, Operation): a 1 GiB heap limit, so V8 collects its
# old generation before it grows to 4x its live size, and no allocation-site pretenuring, which
# sent some processes into a mode of promoting request garbage. Replace the command to change them.
CMD ["node", "--max-old-space-size=1024", "--no-allocation-site-pretenuring", "dist/server.js"]
