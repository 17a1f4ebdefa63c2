#!/usr/bin/env bash
# Packs what bench/gpu/run.sh needs on the GPU host into .gpu/ (ignored by git): Node.js
# (../shared/gpu/pack-node.sh) and the dev-only node_modules the CUDA tests use (uvu and its
# dependencies); the production modules (tsx, zod, the addon headers) come from pack-serve.sh's
# prod_modules.tar.xz, so the two tarballs do not carry the same packages twice (the device tool
# carries 64 MiB at most, the checkout included).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash ../shared/gpu/pack-node.sh
[[ -f .gpu/prod_modules.tar.xz ]] || bash bench/gpu/pack-serve.sh
tar -C node_modules -cJf .gpu/node_modules.tar.xz uvu dequal diff kleur sade mri
ls -la .gpu
