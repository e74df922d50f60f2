"""The shell script behind Sandbox.diff(), shared by every backend.

`git diff` against a base commit that includes new untracked files normally needs
`git add -A -N`, which changes the repo's index. Here the intent-to-add entries go into a
temporary copy of the index (GIT_INDEX_FILE), so the index, the objects and the commits of the
repo are left exactly as the agent left them.
"""

from __future__ import annotations

import shlex

DIFF_LIMIT = 64 << 20
"""Largest diff() returned, in bytes; a bigger diff raises ValueError."""

_SCRIPT = r'''set -ef
idx=$(mktemp)
trap 'rm -f "$idx" "$idx.lock"' EXIT
G="git -c safe.directory=* -c core.quotepath=off"
gitdir=$($G rev-parse --git-dir)
cp "$gitdir/index" "$idx" 2>/dev/null || rm -f "$idx"
export GIT_INDEX_FILE="$idx"
[ -s "$idx" ] || $G read-tree HEAD
# Bytecode is never part of a submission: running the tests leaves __pycache__ behind, and an
# unchecked-hash .pyc in a patch would run instead of the diffed source.
$G ls-files -z --others --exclude-standard -x __pycache__ -x '*.pyc' | xargs -0 -r $G add -N --
$G diff --binary --no-color --no-ext-diff BASE --
'''


def diff_command(base: str = "HEAD") -> str:
    """Shell command, run in the repo, printing `git diff --binary BASE` with untracked files as new."""
    return _SCRIPT.replace("BASE", shlex.quote(base))
