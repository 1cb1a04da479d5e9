# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller delivery: stage a release on a node that has no Python.

The controller downloads the layers into its cache (_cache.py), copies them
over the connection into a temporary directory beside the stage directory,
and the node checks and publishes them with POSIX sh and busybox tools only
(sh, sha256sum, mkdir, mktemp, mv -T, ln, rm, df, readlink, base64). The
on-disk layout and the release record are the same as host delivery's
(_stage.py), so either mode can take over from the other.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import tempfile

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import FleetError, StageError
from ansible_collections.kubesolo.fleet.plugins.module_utils._release import STAGED_FILES
from ansible_collections.kubesolo.fleet.plugins.module_utils._stage import (
    MAX_RECORD_BYTES,
    RECORD_NAME,
    SPACE_MARGIN,
    build_record,
    managed_release_dir,
    parse_record,
    raise_foreign,
    release_dir_name,
    store_dir,
)

# Prefixes the scripts' own error lines: over SSH with a terminal, stderr and
# stdout arrive mixed with the client's chatter ("Shared connection ... closed.").
ERROR_MARKER = 'kubesolo-fleet-error: '


class NodeCommandError(FleetError):
    code = 'node_command_failed'


def _sh_quote(text):
    return shlex.quote(text)


def _error_detail(stdout, stderr):
    """': <reason>' from a failed script: its own marked line, else the last line it printed."""
    errors = [line.strip() for line in (stderr or '').splitlines() if line.strip()]
    output = [line.strip() for line in (stdout or '').splitlines() if line.strip()]
    marked = [line[len(ERROR_MARKER):] for line in errors + output if line.startswith(ERROR_MARKER)]
    chosen = marked[-1] if marked else (errors or output or [''])[-1]
    return ': ' + chosen[:300] if chosen else ''


class ControllerDelivery:
    """Stages on one node through ``run`` (sh script -> (rc, stdout, stderr)) and ``put`` (local, remote)."""

    def __init__(self, run, put, dest):
        self._run = run
        self._put = put
        self.dest = dest.rstrip('/')
        self.store = store_dir(self.dest)

    def run(self, script, what, error=NodeCommandError):
        rc, stdout, stderr = self._run(script)
        if rc != 0:
            raise error('%s failed on the node (exit %s)%s' % (what, rc, _error_detail(stdout, stderr)))
        return stdout

    def architecture(self):
        return self.run('uname -m', 'reading the architecture').strip()

    def current_release(self, rehash=False):
        """The record of the release dest holds on the node, or None.

        Its files must have their recorded sizes (``wc -c``), or with ``rehash``
        their recorded sha256 (``sha256sum``, a full read of the release).
        """
        names = ' '.join(name for _media_type, name in STAGED_FILES)
        key, measure = ('sha256', 'sha256sum < "$d/$f" | cut -d" " -f1') if rehash else ('size', 'wc -c < "$d/$f"')
        script = '''d=%(dest)s
if [ -L "$d" ]; then
  printf 'link=%%s\\n' "$(readlink "$d")"
  if [ -f "$d/%(record)s" ]; then printf 'record='; head -c %(max)d "$d/%(record)s" | base64 | tr -d '\\n'; echo; fi
  for f in %(names)s; do
    if [ -f "$d/$f" ]; then printf '%(key)s=%%s %%s\\n' "$f" "$(%(measure)s)"; fi
  done
elif [ -d "$d" ]; then
  if [ -z "$(ls -A "$d")" ]; then echo state=empty; else echo state=foreign; fi
elif [ -e "$d" ]; then echo state=foreign
else echo state=absent
fi
''' % {'dest': _sh_quote(self.dest), 'record': RECORD_NAME, 'max': MAX_RECORD_BYTES, 'names': names,
            'key': key, 'measure': measure}
        state, link, record, measured = None, None, None, {}
        for line in self.run(script, 'inspecting %s' % self.dest).splitlines():
            field, _sep, value = line.partition('=')
            if field == 'state':
                state = value
            elif field == 'link':
                link = value
            elif field == 'record':
                try:
                    record = parse_record(base64.b64decode(value))
                except ValueError:
                    record = None
            elif field == key:
                name, _sep, found = value.partition(' ')
                measured[name] = found.strip()
        if state == 'foreign':
            raise_foreign(self.dest)
        if link is None:
            return None
        managed_release_dir(self.dest, link)
        if not record:
            return None
        files = record['files']
        if set(files) != set(measured) or any(
                not isinstance(entry, dict) or str(entry.get(key)) != measured[name]
                for name, entry in files.items()):
            return None
        return record

    def stage(self, release, repository, fetch_all):
        """Copy the verified layers to the node and publish them.

        Checks the node's free space first; ``fetch_all(layers)`` then returns
        [(local path, sha256 hex)] from the controller cache. Returns (record,
        bytes transferred).
        """
        layers = release.staged_layers()
        total = sum(layer['size'] for _name, layer in layers)
        work = self._prepare(int(total * (1 + SPACE_MARGIN) / 1024) + 1, total)
        try:
            files = {}
            fetched = fetch_all([layer for _name, layer in layers])
            for (name, layer), (path, sha256) in zip(layers, fetched):
                files[name] = {'media_type': layer['media_type'], 'digest': layer['digest'],
                               'size': layer['size'], 'sha256': sha256}
                self._put(path, '%s/%s' % (work, name))
            record = build_record(release, repository, files)
            with tempfile.NamedTemporaryFile('wb', suffix='.json') as record_file:
                record_file.write(json.dumps(record, indent=2, sort_keys=True).encode('utf-8'))
                record_file.flush()
                self._put(record_file.name, '%s/%s' % (work, RECORD_NAME))
        except BaseException as exc:
            self._run('rm -rf %s' % _sh_quote(work))
            if isinstance(exc, FleetError) or not isinstance(exc, Exception):
                raise
            raise StageError('copying the release to the node failed: %s' % exc)
        self._publish(work, release.manifest_digest, files)
        return record, total

    def _prepare(self, needed_kib, total):
        script = '''set -e
store=%(store)s
mkdir -p "$store"
chmod 755 "$store"
avail=$(df -Pk "$store" | awk 'NR == 2 { print $4 }')
case "$avail" in ''|*[!0-9]*) echo "%(marker)scannot read the free space of $store with df" >&2; exit 5 ;; esac
if [ "$avail" -lt %(needed)d ]; then echo "space=$avail"; exit 0; fi
printf 'work=%%s\\n' "$(mktemp -d "$store/tmp-XXXXXX")"
''' % {'store': _sh_quote(self.store), 'needed': needed_kib, 'marker': ERROR_MARKER}
        output = self.run(script, 'preparing %s' % self.store)
        values = dict(line.partition('=')[::2] for line in output.splitlines() if '=' in line)
        if 'space' in values:
            raise StageError('not enough space on the node for %s: %s KiB free, %d KiB needed (the '
                             'release is %d bytes, plus %d%% margin); nothing was transferred'
                             % (self.dest, values['space'], needed_kib, total, SPACE_MARGIN * 100))
        work = values.get('work', '')
        if not work.startswith(self.store + '/tmp-'):
            raise NodeCommandError('the node did not create a staging directory in %s' % self.store)
        return work

    def _publish(self, work, manifest_digest, files):
        name = release_dir_name(manifest_digest)
        link_target = '%s/%s' % (os.path.basename(self.store), name)
        checks = '\n'.join('check %s %s' % (_sh_quote(entry['sha256']), _sh_quote(file_name))
                           for file_name, entry in sorted(files.items()))
        names = ' '.join(_sh_quote(file_name) for file_name in sorted(files))
        script = '''work=%(work)s; store=%(store)s; dest=%(dest)s; final="$store/%(name)s"
fail() { rm -rf "$work"; echo "%(marker)s$1" >&2; exit 3; }
# All files are hashed at once, one core each; the sums wait in $work/.sha256-<name>.
for f in %(names)s; do { sha256sum < "$work/$f" | cut -d' ' -f1 > "$work/.sha256-$f"; } & done
wait
check() {
  got=$(cat "$work/.sha256-$2" 2>/dev/null); rm -f "$work/.sha256-$2"
  [ -n "$got" ] || fail "cannot hash $2"
  [ "$got" = "$1" ] || fail "$2 arrived with sha256 $got, expected $1; the previous release is kept"
}
%(checks)s
chmod 755 "$work" && chmod 644 "$work"/* || fail "cannot set modes in $work"
# On disk before anything points at them: a power loss must not leave dest at unwritten files.
sync
prev=$(readlink "$dest" 2>/dev/null || true)
if [ -e "$final" ]; then
  trash=$(mktemp -d "$store/trash-XXXXXX") && mv "$final" "$trash/old" && rm -rf "$trash" \\
    || fail "cannot clear $final"
fi
mv "$work" "$final" || fail "cannot move the release into place"
link="$store/link-$$"
rm -f "$link"
if ! { ln -s %(target)s "$link" && { [ ! -d "$dest" ] || [ -L "$dest" ] || rmdir "$dest"; } \\
       && mv -fT "$link" "$dest"; }; then
  rm -f "$link"
  [ "$prev" = %(target)s ] || rm -rf "$final"
  echo "%(marker)scannot point $dest at the new release" >&2
  exit 3
fi
sync
# Only ever remove a release directory of our own store, whatever dest pointed at.
case "$prev" in
  */*/*|*..*) ;;
  %(storebase)s/sha256-*|%(storebase)s/sha512-*) [ "$prev" = %(target)s ] || rm -rf "$(dirname "$dest")/$prev" ;;
esac
''' % {'work': _sh_quote(work), 'store': _sh_quote(self.store), 'dest': _sh_quote(self.dest),
            'name': name, 'checks': checks, 'names': names, 'target': _sh_quote(link_target),
            'storebase': _sh_quote(os.path.basename(self.store)), 'marker': ERROR_MARKER}
        self.run(script, 'publishing the release at %s' % self.dest, error=StageError)
