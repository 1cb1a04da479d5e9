# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""The sh scripts of A/B activation, run on a KubeSolo OS node over the connection's shell.

Busybox only: findfs (or blkid -L), mount, umount, mktemp, sha256sum, base64,
df, awk, cp, mv, sync. Partitions are found by file system label and mounted
at a fresh private directory (mktemp -d) that is unmounted and removed
whatever happens. Placeholders are ``@name`` (see _node_scripts.render);
values that come from the user are quoted by the caller. Output is
``key=value`` lines; errors are marked with the error marker.
"""

from __future__ import annotations

_MOUNTS = r"""set -u
mounted=""
mnt_root=$(mktemp -d "${TMPDIR:-/tmp}/kubesolo-fleet-mnt.XXXXXX") || { echo "@{marker}cannot make a mount point" >&2; exit 4; }
cleanup() { for m in $mounted; do umount "$m" 2>/dev/null; done; rm -rf "$mnt_root" 2>/dev/null; }
trap cleanup EXIT
fail() { echo "@{marker}$1" >&2; exit 3; }
device_of() { findfs "LABEL=$1" 2>/dev/null || blkid -L "$1" 2>/dev/null; }
mount_label() {  # label name options: mounts the partition labelled label at $mnt_root/name
  dev=$(device_of "$1") && [ -n "$dev" ] || return 1
  mkdir -p "$mnt_root/$2" && mount -o "$3" "$dev" "$mnt_root/$2" || return 2
  mounted="$mnt_root/$2 $mounted"
}
unmount() { umount "$mnt_root/$1" && mounted=$(echo " $mounted " | sed "s# $mnt_root/$1 # #"); }
"""

# What the node is: boot_id, version, efi=<0|1>, slot_A/slot_B=<0|1> (a partition with that
# label exists), grubenv=<base64>, and per slot that exists slot_<S>_record=<base64 of its
# record> and slot_<S>_size=<file> <bytes>.
INSPECT = (
    _MOUNTS
    + r"""label_A=@label_a; label_B=@label_b
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
printf 'version=%s\n' "$(sed -n 's/^VERSION_ID=//p' @version_file 2>/dev/null | head -n 1 | tr -d '"')"
if mount_label @efi_label efi ro; then
  echo efi=1
  if [ -f "$mnt_root/efi"@grubenv ]; then printf 'grubenv='; head -c 2048 "$mnt_root/efi"@grubenv | base64 | tr -d '\n'; echo; fi
else echo efi=0
fi
for s in A B; do
  eval label=\$label_$s
  if mount_label "$label" "slot$s" ro; then
    echo "slot_$s=1"
    d="$mnt_root/slot$s"
    if [ -f "$d/@record" ]; then printf 'slot_%s_record=' "$s"; head -c 65536 "$d/@record" | base64 | tr -d '\n'; echo; fi
    for f in @names; do if [ -f "$d/$f" ]; then printf 'slot_%s_size=%s %s\n' "$s" "$f" "$(stat -c %s "$d/$f")"; fi; done
  else echo "slot_$s=0"
  fi
done
exit 0
"""
)

# Hashes the files of slot @slot: slot_sha256=<file> <hex> each.
HASH_SLOT = (
    _MOUNTS
    + r"""mount_label @label slot ro || fail "cannot mount the partition labelled "@label
for f in @names; do
  if [ -f "$mnt_root/slot/$f" ]; then
    printf 'slot_sha256=%s %s\n' "$f" "$(sha256sum < "$mnt_root/slot/$f" | cut -d' ' -f1)"
  fi
done
exit 0
"""
)

# Writes the staged files (@source) into the passive slot @label: refuses during a trial boot,
# checks the space, copies under temporary names, syncs, unmounts (so that what is read back
# comes from the disk, not the page cache), mounts again and checks every file against the
# manifest's sha256 (@checks: 'check <sha256> <name>' lines), renames them into place, writes
# the record and syncs. written=1 when done.
WRITE_SLOT = (
    _MOUNTS
    + r"""mount_label @efi_label efi ro || fail "no partition labelled "@efi_label" (not a KubeSolo A/B node)"
env=$(cat "$mnt_root/efi"@grubenv 2>/dev/null) || fail "no grubenv at "@grubenv" on "@efi_label
case "$env" in *"active_slot=@active"*) ;; *) fail "grubenv no longer names slot @active as active; inspect again" ;; esac
trial="the node runs an unverified trial boot (boot_success is not 1): its other slot is the only known-good system"
case "$env" in *boot_success=1*) ;; *) fail "$trial, refusing to overwrite it" ;; esac
unmount efi
for f in @names; do [ -f @source/"$f" ] || fail "the staged release has no $f at "@source; done
mount_label @label slot rw || fail "cannot mount the partition labelled "@label" read-write"
d="$mnt_root/slot"
avail=$(df -Pk "$d" | awk 'NR == 2 { print $4 }')
case "$avail" in ''|*[!0-9]*) fail "cannot read the free space of "@label" with df" ;; esac
[ "$avail" -ge @needed_kib ] || fail "not enough space on "@label": $avail KiB free, @needed_kib KiB needed (the release plus 10%)"
for f in @names; do rm -f "$d/.$f.new"; cp @source/"$f" "$d/.$f.new" || fail "cannot copy $f to "@label; done
sync
unmount slot || fail "cannot unmount "@label
mount_label @label slot rw || fail "cannot mount the partition labelled "@label" again"
check() {
  got=$(sha256sum < "$d/.$2.new" | cut -d' ' -f1)
  [ "$got" = "$1" ] || fail "$2 reads back from "@label" with sha256 $got, expected $1; the slot is not activated"
}
@checks
for f in @names; do mv -f "$d/.$f.new" "$d/$f" || fail "cannot rename $f into place on "@label; done
printf '%s' @record_data | base64 -d > "$d/.@record.new" && mv -f "$d/.@record.new" "$d/@record" || fail "cannot write the record"
sync
echo written=1
"""
)

# Replaces grubenv on @efi_label with @block (base64 of 1024 bytes): written beside it, synced,
# renamed over it, synced, then read back. env_written=<sha256 of what is there now>.
WRITE_GRUBENV = (
    _MOUNTS
    + r"""mount_label @efi_label efi rw || fail "cannot mount the partition labelled "@efi_label" read-write"
target="$mnt_root/efi"@grubenv
[ -f "$target" ] || fail "no grubenv at "@grubenv" on "@efi_label
new="$(dirname "$target")/.grubenv.new"
printf '%s' @block | base64 -d > "$new" || fail "cannot write $new"
sync
mv -f "$new" "$target" || fail "cannot rename the new grubenv into place"
sync
unmount efi || fail "cannot unmount "@efi_label
mount_label @efi_label efi ro || fail "cannot mount "@efi_label" again"
printf 'env_written=%s\n' "$(sha256sum < "$mnt_root/efi"@grubenv | cut -d' ' -f1)"
"""
)

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
