#!/usr/bin/env bash
# The shared-server tests (tests/support/unix_users.py) run commands as throwaway Unix
# users, who must reach this checkout and the Python it runs on. On a CI machine both may
# sit in root's 0700 home (pyenv), so give every directory above them o+x: enter only,
# nothing listed or read that was not readable before. Needs root; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(readlink -f "$(command -v python3)")
[ -x .venv/bin/python ] && python=$(readlink -f .venv/bin/python)
for start in "$PWD" "$(dirname "$python")"; do
    dir=$start
    while [ "$dir" != "/" ]; do
        chmod o+x "$dir"
        dir=$(dirname "$dir")
    done
done
