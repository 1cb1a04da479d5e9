# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The sh scripts controller delivery runs on a node, as templates, and the parser of their output.

They need a POSIX sh and busybox tools only (sha256sum, mkdir, mktemp, mv -T,
ln, rm, df, awk, readlink, base64, wc). Placeholders are ``@name``; every
value that comes from a path or a digest is shell-quoted by the caller.
Scripts report with ``key=value`` lines on stdout, and mark their own error
lines with ERROR_MARKER: over SSH with a terminal, stderr and stdout arrive
mixed with the client's chatter ("Shared connection ... closed.").
"""

from __future__ import annotations

import shlex
import string

from ansible_collections.kubesolo.fleet.plugins.module_utils._text import printable

ERROR_MARKER = "kubesolo-fleet-error: "


class _ScriptTemplate(string.Template):
    delimiter = "@"


def render(template, **values):
    """``template`` with its placeholders replaced; values are inserted as given (quote() them)."""
    return _ScriptTemplate(template).substitute(values, marker=ERROR_MARKER)


def quote(text):
    return shlex.quote(text)


def parse_fields(stdout):
    """The ``key=value`` lines of a script's output as [(key, value)], in order; other lines are chatter."""
    fields = []
    for line in (stdout or "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            fields.append((key, value))
    return fields


def error_reason(stdout, stderr):
    """Why a script failed: its own marked line, else the last line it printed ('' for none), printable."""
    errors = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    output = [line.strip() for line in (stdout or "").splitlines() if line.strip()]
    marked = [line[len(ERROR_MARKER) :] for line in errors + output if line.startswith(ERROR_MARKER)]
    chosen = marked[-1] if marked else (errors or output or [""])[-1]
    return printable(chosen, limit=300)


ARCHITECTURE = "uname -m"

# What dest holds: link=<target>, record=<base64 of release.json>, and a
# @key=<file> <value> line per staged file (its size, or its sha256 with rehash).
INSPECT_DEST = r"""d=@dest
if [ -L "$d" ]; then
  printf 'link=%s\n' "$(readlink "$d")"
  if [ -f "$d/@record" ]; then printf 'record='; head -c @max_record "$d/@record" | base64 | tr -d '\n'; echo; fi
  for f in @names; do
    if [ -f "$d/$f" ]; then printf '@key=%s %s\n' "$f" "$(@measure)"; fi
  done
elif [ -d "$d" ]; then
  if [ -z "$(ls -A "$d")" ]; then echo state=empty; else echo state=foreign; fi
elif [ -e "$d" ]; then echo state=foreign
else echo state=absent
fi
"""
MEASURE_SIZE = 'wc -c < "$d/$f"'
MEASURE_SHA256 = 'sha256sum < "$d/$f" | cut -d" " -f1'

# Creates the store and a work directory in it (work=<path>) when the file
# system has @needed_kib KiB free; else space=<free KiB>.
PREPARE = r"""set -e
store=@store
mkdir -p "$store"
chmod 755 "$store"
avail=$(df -Pk "$store" | awk 'NR == 2 { print $4 }')
case "$avail" in ''|*[!0-9]*) echo "@{marker}cannot read the free space of $store with df" >&2; exit 5 ;; esac
if [ "$avail" -lt @needed_kib ]; then echo "space=$avail"; exit 0; fi
printf 'work=%s\n' "$(mktemp -d "$store/tmp-XXXXXX")"
"""

REMOVE_WORK = "rm -rf @work"

# Checks the copied files (@checks: one 'check <sha256> <name>' line each),
# then publishes the work directory as the release and points dest at it.
PUBLISH = r"""work=@work; store=@store; dest=@dest; final="$store/@name"
fail() { rm -rf "$work"; echo "@{marker}$1" >&2; exit 3; }
# All files are hashed at once, one core each; the sums wait in $work/.sha256-<name>.
for f in @names; do { sha256sum < "$work/$f" | cut -d' ' -f1 > "$work/.sha256-$f"; } & done
wait
check() {
  got=$(cat "$work/.sha256-$2" 2>/dev/null); rm -f "$work/.sha256-$2"
  [ -n "$got" ] || fail "cannot hash $2"
  [ "$got" = "$1" ] || fail "$2 arrived with sha256 $got, expected $1; the previous release is kept"
}
@checks
chmod 755 "$work" && chmod 644 "$work"/* || fail "cannot set modes in $work"
# On disk before anything points at them: a power loss must not leave dest at unwritten files.
sync
prev=$(readlink "$dest" 2>/dev/null || true)
if [ -e "$final" ]; then
  trash=$(mktemp -d "$store/trash-XXXXXX") && mv "$final" "$trash/old" && rm -rf "$trash" \
    || fail "cannot clear $final"
fi
mv "$work" "$final" || fail "cannot move the release into place"
link="$store/link-$$"
rm -f "$link"
if ! { ln -s @target "$link" && { [ ! -d "$dest" ] || [ -L "$dest" ] || rmdir "$dest"; } \
       && mv -fT "$link" "$dest"; }; then
  rm -f "$link"
  [ "$prev" = @target ] || rm -rf "$final"
  echo "@{marker}cannot point $dest at the new release" >&2
  exit 3
fi
sync
# Only ever remove a release directory of our own store, whatever dest pointed at.
case "$prev" in
  */*/*|*..*) ;;
  @storebase/sha256-*|@storebase/sha512-*) [ "$prev" = @target ] || rm -rf "$(dirname "$dest")/$prev" ;;
esac
"""
