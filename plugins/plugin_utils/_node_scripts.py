# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The sh scripts controller delivery runs on a node, as templates, and the parser of their output.

They need a POSIX sh and busybox tools only (sha256sum, tee, dd, du, mkdir, mktemp, mv -T,
ln, rm, df, awk, sed, readlink, base64, stat, id, kill, sleep, date). Placeholders are ``@name``; every
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

# Facts for _store.check_location: euid=<uid>, a stat=<uid> <hex mode> <path> line for each
# existing directory above the store (by name and resolved), and store=<uid> <hex mode>.
# ``stat`` without -L describes a symbolic link itself.
_LOCATION_FACTS = r"""echo "euid=$(id -u)"
facts() { if [ -e "$1" ] || [ -L "$1" ]; then printf 'stat=%s %s\n' "$(stat -c '%u %f' "$1")" "$1"; fi; }
chain() { p=$1; while :; do facts "$p"; [ "$p" = / ] && break; p=$(dirname "$p"); done; }
parent=$(dirname @dest)
chain "$parent"
real=$(cd "$parent" 2>/dev/null && pwd -P) && [ -n "$real" ] && chain "$real"
if [ -e @store ] || [ -L @store ]; then printf 'store=%s\n' "$(stat -c '%u %f' @store)"; fi
"""

# The location facts, then what dest holds: link=<target>, record=<base64 of release.json>,
# and per staged file (never through a link) size=<file> <bytes> and, for each of
# @algorithms, <algorithm>=<file> <hex digest>.
INSPECT_DEST = (
    _LOCATION_FACTS
    + r"""d=@dest
if [ -L "$d" ]; then
  printf 'link=%s\n' "$(readlink "$d")"
  if [ -f "$d/@record" ]; then printf 'record='; head -c @max_record "$d/@record" | base64 | tr -d '\n'; echo; fi
  for f in @names; do
    if [ -f "$d/$f" ] && [ ! -L "$d/$f" ]; then
      printf 'size=%s %s\n' "$f" "$(stat -c %s "$d/$f")"
      for a in @algorithms; do printf '%s=%s %s\n' "$a" "$f" "$("${a}sum" < "$d/$f" | cut -d" " -f1)"; done
    fi
  done
elif [ -d "$d" ]; then
  if [ -z "$(ls -A "$d")" ]; then echo state=empty; else echo state=foreign; fi
elif [ -e "$d" ]; then echo state=foreign
else echo state=absent
fi
"""
)

# The lock (module_utils/_node_lock.py has the protocol). Its holder is a keeper process
# that ignores the hangup of the session that started it and lives for @lease seconds
# unless renewed. These functions are shared by the lock scripts below.
_LOCK_FUNCTIONS = r"""store=@store; lock="$store/.lock"
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)
start_of() { s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; set -- $s; echo "${20}"; }
alive() {  # pid start boot: whether that process still runs in this boot
  case $1 in ''|*[!0-9]*) return 1 ;; esac
  [ -z "$3" ] || [ -z "$boot" ] || [ "$3" = "$boot" ] || return 1
  if now=$(start_of "$1"); then [ -z "$2" ] || [ "$now" = "$2" ]; else kill -0 "$1" 2>/dev/null; fi
}
field() { sed -n "s/^$1=//p" "$2" 2>/dev/null | head -n 1; }
keeper() {  # starts a keeper; sets kpid and kstart
  ( trap '' HUP INT; exec sleep @lease ) </dev/null >/dev/null 2>&1 &
  kpid=$!; kstart=$(start_of "$kpid" || true)
}
owner() {  # the owner file of the keeper kpid
  printf 'pid=%s\nstart=%s\nboot=%s\nsince=%s\nby=%s\ncontroller=%s\n' \
    "$kpid" "$kstart" "$boot" "$(date +%s)" 'controller delivery' @controller
}
ours() { [ "$(field pid "$lock/owner") $(field start "$lock/owner")" = "@pid @start" ]; }
"""

# One attempt at the lock: held=<pid> <start> of our keeper; retry=now after clearing a
# stale lock; else owner_<key>=<value> lines describing the live holder.
ACQUIRE_LOCK = (
    _LOCK_FUNCTIONS
    + r"""mkdir -p "$(dirname "$store")" || { echo "@{marker}cannot create $(dirname "$store")" >&2; exit 4; }
if mkdir "$store" 2>/dev/null; then chmod 755 "$store"; fi
echo "euid=$(id -u)"
if [ -e "$store" ] || [ -L "$store" ]; then printf 'store=%s\n' "$(stat -c '%u %f' "$store")"; fi
[ -d "$store" ] && [ ! -L "$store" ] || exit 0  # the controller refuses it from these facts
keeper
new="$store/.lock-new-$kpid"
rm -rf "$new"
if mkdir -m 700 "$new" && owner > "$new/owner" && mv -fT "$new" "$lock" 2>/dev/null; then
  echo "held=$kpid $kstart"; exit 0
fi
rm -rf "$new"; kill "$kpid" 2>/dev/null
if [ -L "$lock" ] || { [ -e "$lock" ] && [ ! -d "$lock" ]; }; then rm -f "$lock"; echo retry=now; exit 0; fi
pid=$(field pid "$lock/owner"); start=$(field start "$lock/owner")
if [ -n "$pid" ] && ! alive "$pid" "$start" "$(field boot "$lock/owner")"; then
  moved="$store/.lock-stale-$$"
  if mv -fT "$lock" "$moved" 2>/dev/null; then
    # Put it back if, in between, it became another run's.
    if [ "$(field pid "$moved/owner") $(field start "$moved/owner")" = "$pid $start" ]; then rm -rf "$moved"
    else mv -fT "$moved" "$lock" 2>/dev/null; fi
  fi
  echo retry=now; exit 0
fi
sed -n 's/^\([a-z]*\)=/owner_\1=/p' "$lock/owner" 2>/dev/null
"""
)

# Moves aside the lock of @pid @start (a controller run that is gone, found by the controller).
BREAK_LOCK = (
    _LOCK_FUNCTIONS
    + r"""moved="$store/.lock-stale-$$"
if ours && mv -fT "$lock" "$moved" 2>/dev/null; then
  if [ "$(field pid "$moved/owner") $(field start "$moved/owner")" = "@pid @start" ]; then
    if [ "$(start_of @pid)" = "@start" ]; then kill @pid 2>/dev/null; fi
    rm -rf "$moved"
  else mv -fT "$moved" "$lock" 2>/dev/null; fi
fi
"""
)

# Renews the lease of our lock with a new keeper: held=<pid> <start>, or lost=1.
RENEW_LOCK = (
    _LOCK_FUNCTIONS
    + r"""ours || { kill @pid 2>/dev/null; echo lost=1; exit 0; }
keeper
owner > "$lock/owner.new" && mv -f "$lock/owner.new" "$lock/owner" || { kill "$kpid"; echo "@{marker}cannot renew $lock" >&2; exit 4; }
kill @pid 2>/dev/null
echo "held=$kpid $kstart"
"""
)

RELEASE_LOCK = (
    _LOCK_FUNCTIONS
    + r"""released="$store/.lock-stale-$$-released"
if ours && mv -fT "$lock" "$released"; then rm -rf "$released"; fi
kill @pid 2>/dev/null
exit 0
"""
)

# Under the lock: sweeps what dead runs left (work, trash, link and lock entries, and the
# partial directories of other releases), then makes the work directory @work (the release's
# partial-<digest>, where an interrupted run's layers wait to be resumed: only the names in
# @keep stay there) and checks that the file system has @needed_kib KiB free beyond what the
# work directory holds: work=<path>, or space=<free KiB>.
PREPARE = r"""set -e
store=@store; work=@work
mkdir -p "$store"
for left in "$store"/tmp-* "$store"/trash-* "$store"/link-* "$store"/.lock-new-* "$store"/.lock-stale-* \
            "$store"/partial-*; do
  [ "$left" != "$work" ] || [ -L "$left" ] || continue
  if [ -e "$left" ] || [ -L "$left" ]; then rm -rf "$left"; fi
done
if [ -e "$work" ] && [ ! -d "$work" ]; then rm -f "$work"; fi
held=0
if [ -d "$work" ]; then
  for entry in "$work"/* "$work"/.[!.]* "$work"/..?*; do
    if [ -f "$entry" ] && [ ! -L "$entry" ]; then
      case " @keep " in *" ${entry##*/} "*) continue ;; esac
    fi
    if [ -e "$entry" ] || [ -L "$entry" ]; then rm -rf "$entry"; fi
  done
  held=$(du -sk "$work" | awk '{ print $1 }')
fi
avail=$(df -Pk "$store" | awk 'NR == 2 { print $4 }')
case "$avail,$held" in ,*|*,|*[!0-9,]*) echo "@{marker}cannot read the free space of $store with df" >&2; exit 5 ;; esac
if [ $((avail + held)) -lt @needed_kib ]; then echo "space=$avail"; exit 0; fi
mkdir -p "$work"
chmod 755 "$work"
echo "work=$work"
"""

# What the work directory holds of a layer, each file hashed once from disk: done=<bytes>
# <sha256> for <name> (complete), part=<bytes> <sha256> for <name>.part; files longer than
# the layer (@size) are removed unread.
LAYER_STATE = r"""work=@work
for kind in done part; do
  f="$work/@name"; [ "$kind" = done ] || f="$f.part"
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  have=$(stat -c %s "$f")
  if [ "$have" -gt @size ]; then rm -f "$f"; continue; fi
  sum=$(sha256sum < "$f") || { echo "@{marker}cannot hash $f" >&2; exit 3; }
  printf '%s=%s %s\n' "$kind" "$have" "${sum%% *}"
done
"""

# Appends the chunk on stdin to @part at @offset (cutting off what a broken try left after
# it) while hashing it: sum=<sha256 of what arrived>, size=<bytes in the part now>. Out of
# step (the part is shorter than @offset) it reads nothing into the part: size=<bytes>.
APPEND_CHUNK = r"""part=@part
have=0; [ ! -f "$part" ] || have=$(stat -c %s "$part")
if [ "$have" -lt @offset ]; then cat > /dev/null; echo "size=$have"; exit 0; fi
if [ "$have" -gt @offset ]; then
  dd if=/dev/null of="$part" bs=1 seek=@offset 2>/dev/null \
    || { cat > /dev/null; echo "@{marker}cannot cut $part back to @offset bytes" >&2; exit 3; }
fi
sum=$(tee -a "$part" | sha256sum)
echo "sum=${sum%% *}"
echo "size=$(stat -c %s "$part")"
"""

# The streamed layer is complete and matched: <name>.part becomes <name> (@size bytes).
COMPLETE_LAYER = r"""work=@work; f="$work/@name"
if [ -f "$f.part" ]; then mv -f "$f.part" "$f" || { echo "@{marker}cannot rename $f.part" >&2; exit 3; }; fi
have=$(stat -c %s "$f" 2>/dev/null)
[ "$have" = @size ] || { echo "@{marker}$f holds ${have:-no} bytes, expected @size" >&2; exit 3; }
"""

REMOVE_FILE = "rm -f @path"

# Writes stdin (a small file) to @path through a temporary name.
WRITE_FILE = "cat > @path.new && mv -f @path.new @path"

# Checks the files (@checks: 'check <sha256> <name>' for files copied as a whole, hashed here,
# 'check_size <bytes> <name>' for files verified as they arrived), then publishes the work
# directory as the release and points dest at it.
PUBLISH = r"""work=@work; store=@store; dest=@dest; final="$store/@name"
fail() { rm -rf "$work"; echo "@{marker}$1" >&2; exit 3; }
# The files to hash are hashed at once, one core each; the sums wait in $work/.sha256-<name>.
for f in @hashed; do { sha256sum < "$work/$f" | cut -d' ' -f1 > "$work/.sha256-$f"; } & done
wait
check_size() {
  [ "$(stat -c %s "$work/$2" 2>/dev/null)" = "$1" ] || fail "$2 does not hold its $1 bytes; the previous release is kept"
}
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
