#!/usr/bin/env bash
# Packs what bench/gpu/serve.sh needs on the GPU host into .gpu/ (ignored by git): Node.js and the
# production node_modules (no TypeScript, no test clients), as one xz tarball.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ../shared/gpu/pack-node.sh
rm -rf /tmp/ms-prod && mkdir -p /tmp/ms-prod
cp package.json package-lock.json /tmp/ms-prod/
(cd /tmp/ms-prod && npm install --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null 2>&1)
rm -rf /tmp/ms-prod/node_modules/cmake-js /tmp/ms-prod/node_modules/typescript
tar -C /tmp/ms-prod/node_modules -cJf .gpu/prod_modules.tar.xz .
ls -la .gpu
