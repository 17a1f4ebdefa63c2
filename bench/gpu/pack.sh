#!/usr/bin/env bash
# Packs what bench/gpu/run.sh needs on the GPU host into .gpu/ (ignored by git): Node.js
# (../shared/gpu/pack-node.sh) and the node_modules the CUDA tests and the addon build use.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ../shared/gpu/pack-node.sh
tar -C node_modules -cJf .gpu/node_modules.tar.xz tsx esbuild @esbuild/linux-x64 uvu dequal diff kleur sade mri \
  node-api-headers node-addon-api zod
ls -la .gpu
