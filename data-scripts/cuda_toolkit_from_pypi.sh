#!/usr/bin/env bash
# Sets up what `cargo build --features cuda` needs on a machine without a CUDA toolkit (and
# without a GPU): nvcc, headers and libraries from NVIDIA's PyPI wheels, plus link-time stubs.
#
#   bash data-scripts/cuda_toolkit_from_pypi.sh .cuda          # once
#   source .cuda/env.sh
#   cargo build --release --features cuda --example gpu_check
#
# - The wheels are pinned to CUDA 13.0: GPU drivers of the 580 series (CUDA 13.0) cannot load
#   PTX from a newer toolkit. Set CUDA_COMPUTE_CAP (default 90: H100 / H200) for the kernels'
#   target when no GPU is present to query.
# - cudarc links the driver library (`libcuda.so.1`) directly, and only the driver installs it.
#   A stub with the driver API's symbol names (taken from cudarc's own bindings) satisfies the
#   linker; at run time the machine's real driver library is loaded instead.
# - On the GPU machine, the binary needs `libcudart`, `libcublas`, `libcublasLt` and `libcurand`
#   13: point LD_LIBRARY_PATH at a folder holding them (e.g. the `nvidia/cu13/lib` folder of a
#   PyTorch environment).
set -euo pipefail

dir=${1:?usage: cuda_toolkit_from_pypi.sh <folder>}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
python3 -m venv "$dir/venv"
"$dir/venv/bin/pip" install --quiet \
  "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
  "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
  "nvidia-cublas==13.0.*" "nvidia-curand==10.*"
cuda=$(echo "$dir"/venv/lib/python3*/site-packages/nvidia/cu13)
test -x "$cuda/bin/nvcc" || { echo "nvcc missing under $cuda" >&2; exit 1; }

# Unversioned names for the linker.
link="$dir/link"
mkdir -p "$link"
for lib in cudart cublas cublasLt curand nvrtc; do
  real=$(ls "$cuda/lib/lib$lib.so."* | head -n 1)
  ln -sf "$real" "$link/lib$lib.so"
done

# The driver stub: every `cu*` function cudarc's driver bindings declare.
cargo fetch --quiet
bindings=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs | tail -n 1)
grep -oE 'fn cu[A-Z][A-Za-z0-9_]*\(' "$bindings" | sed 's/^fn //; s/($//' | sort -u |
  awk '{ print "void " $1 "(void) {}" }' > "$link/libcuda_stub.c"
cc -shared -fPIC -o "$link/libcuda.so" -Wl,-soname,libcuda.so.1 "$link/libcuda_stub.c"

cat > "$dir/env.sh" <<EOF
export PATH="$cuda/bin:\$PATH"
export CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
export LIBRARY_PATH="$link\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
EOF
echo "nvcc: $("$cuda/bin/nvcc" --version | tail -n 1)"
echo "now: source $dir/env.sh && cargo build --release --features cuda --example gpu_check"
