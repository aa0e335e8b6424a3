#!/usr/bin/env bash
# Install the peer library for bench/bench_batch.py: langasync 0.2.3 in its own venv,
# outside the repo, with the same LangChain versions batchain is benchmarked with.
#
#   bash bench/setup_langasync.sh          # prints the venv's python on its last line
#
# Override the location with LANGASYNC_VENV=/path. Idempotent: re-running only checks.
set -euo pipefail

VENV="${LANGASYNC_VENV:-/tmp/batchain-bench/venv-langasync}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The same interpreter family as the project venv (3.11), else whatever python3 is.
BASE_PY="${LANGASYNC_BASE_PYTHON:-}"
if [[ -z "$BASE_PY" ]]; then
  if [[ -f "$HERE/../.venv/pyvenv.cfg" ]]; then
    BASE_PY="$(sed -n 's/^executable = //p' "$HERE/../.venv/pyvenv.cfg")"
  fi
  [[ -x "${BASE_PY:-}" ]] || BASE_PY="$(command -v python3)"
fi

# langasync's runtime requirements (wheel METADATA): langchain-core>=1,<2,
# langchain-anthropic>=1,<1.8, httpx, pydantic(-settings), cloudpickle, aioboto3,
# langchain-aws. langchain-openai is not a runtime dependency (providers are detected
# by lc_id), so it is pinned here explicitly; `anthropic<2` / `openai<4` are dev-extra
# pins only and are left to the resolver.
PINS=(
  "langasync==0.2.3"
  "langchain-core==1.7.2"
  "langchain-openai==1.7.3"
  "langchain-anthropic==1.7.7"
)

if [[ ! -x "$VENV/bin/python" ]]; then
  mkdir -p "$(dirname "$VENV")"
  "$BASE_PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$VENV/bin/python" -c "import langasync, langchain_openai; assert langasync.__version__.startswith('0.2.3')" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet "${PINS[@]}"
fi
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md
for name in ("langasync", "langchain-core", "langchain-openai", "langchain-anthropic", "anthropic", "openai", "httpx"):
    print(f"  {name}=={md.version(name)}")
EOF
echo "$VENV/bin/python"
