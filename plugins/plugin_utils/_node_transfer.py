# -*- coding: utf-8 -*-
# Copyright (c) kubesolo.fleet contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# PRIVATE to kubesolo.fleet: not a public API, it may change in any release.
# Other collections and standalone plugins must not import it.
"""How controller delivery moves a layer from the controller's cache into a node's work directory.

Two methods, chosen by update_stage's ``node_transfer`` option:

* ``shell`` (ShellStream): the layer goes through the connection's command
  channel in chunks, one command each, that the node appends to
  ``<name>.part`` with ``tee`` while ``sha256sum`` hashes the same bytes.
  The controller hashes each chunk as it reads it from its cache, and the
  whole layer with the manifest's algorithm; a chunk whose node hash differs
  is cut off and sent again, and the layer is renamed to ``<name>`` only when
  every chunk matched and the controller's hash is the manifest's digest.
  So the node reads each byte once, and nothing it keeps was taken on trust
  from the cache. A broken link costs the chunk in flight: the next try cuts
  the part back to the last chunk that matched. A part left by an earlier run
  is hashed on the node once and kept only if it is the start of the layer.
* ``put_file`` (PutFile): the connection's own file transfer (sftp or scp,
  never Ansible's ``piped`` fallback, which holds the whole file in memory);
  the node hashes the file afterwards, when the release is published.

Both count what they did in a TransferStats and honour a rate limit.
"""

from __future__ import annotations

import hashlib
import time

from ansible_collections.kubesolo.fleet.plugins.module_utils._errors import (
    DigestMismatchError,
    FleetError,
    StageError,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._options import (
    DEFAULT_TRANSFER_CHUNK_SIZE,
    MIN_TRANSFER_CHUNK_SIZE,
)
from ansible_collections.kubesolo.fleet.plugins.module_utils._reference import parse_digest

MIN_CHUNK_SIZE = MIN_TRANSFER_CHUNK_SIZE
_READ_SIZE = 1024 * 1024
# Progress is reported at most this often per layer (and when a layer is done).
PROGRESS_INTERVAL = 5.0


class NodeLinkError(FleetError):
    """The connection to the node broke (reset, timeout, refused): worth another try."""

    code = "node_unreachable"


class TransferUnavailableError(FleetError):
    """The connection's file transfer does not work with this node (no sftp or scp there)."""

    code = "node_transfer_unavailable"


class TransferStats:
    """What the transfers of one staging did; ``summary()`` goes into the result's ``transfer``."""

    def __init__(self, method):
        self.method = method  # "shell" or "put_file", the one that moved the bytes
        self.sent_bytes = 0  # layer bytes that went to the node, including those sent again
        self.resumed_bytes = 0  # bytes the node already held and kept
        self.interruptions = 0  # broken tries that were tried again

    def summary(self):
        return {
            "method": self.method,
            "sent_bytes": self.sent_bytes,
            "resumed_bytes": self.resumed_bytes,
            "interruptions": self.interruptions,
        }


class Progress:
    """One layer's transfer so far, as the progress callback sees it."""

    def __init__(self, name, size, clock):
        self.name = name
        self.size = size
        self.held = 0  # bytes the node holds of the layer
        self.sent = 0
        self.resumed = 0
        self.interruptions = 0
        self.started = clock()
        self.done = False

    def line(self, now):
        elapsed = max(now - self.started, 1e-6)
        mib = 1024 * 1024
        return "{}: {:.1f} of {:.1f} MiB on the node, {:.1f} MiB sent at {:.1f} MiB/s, {} resumed, {} interruptions{}".format(
            self.name,
            self.held / mib,
            self.size / mib,
            self.sent / mib,
            self.sent / mib / elapsed,
            f"{self.resumed / mib:.1f} MiB" if self.resumed else "nothing",
            self.interruptions,
            ", done" if self.done else "",
        )


class ProgressReport:
    """Calls ``emit(line)`` with a layer's progress at most every ``interval`` seconds, and when it is done."""

    def __init__(self, emit, interval=PROGRESS_INTERVAL, clock=time.monotonic):
        self.emit = emit
        self.interval = interval
        self.clock = clock
        self._last = {}

    def __call__(self, progress):
        now = self.clock()
        if progress.done or now - self._last.get(progress.name, progress.started) >= self.interval:
            self._last[progress.name] = now
            self.emit("node transfer of " + progress.line(now))


class RateLimit:
    """Paces the bytes sent to ``rate`` bytes per second on average (0: no limit)."""

    def __init__(self, rate, clock=time.monotonic, sleep=time.sleep):
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._started = None
        self._sent = 0

    def chunk_size(self, chunk_size):
        """A chunk of at most about a second of the rate, so that the pace is even."""
        if not self.rate:
            return chunk_size
        return max(MIN_CHUNK_SIZE, min(chunk_size, self.rate))

    def sending(self):
        """A chunk is about to go: the pace counts from the first one."""
        if self._started is None:
            self._started = self._clock()

    def sent(self, count):
        """Account for ``count`` bytes sent, sleeping until they are within the rate."""
        if not self.rate:
            return
        now = self._clock()
        self._sent += count
        ahead = self._started + self._sent / self.rate - now
        if ahead > 0:
            self._sleep(ahead)


class _Attempts:
    """Tries of the current step: a broken one is tried again, with the retry policy's backoff,
    until a try makes progress (then the count starts over) or the policy says no more."""

    def __init__(self, policy, stats, progress):
        self.policy = policy
        self.stats = stats
        self.progress = progress
        self.failed = 0

    def broken(self, error):
        self.failed += 1
        message = str(error)
        if not self.policy.wait(self.failed, message):
            raise NodeLinkError(
                f"the connection to the node broke {self.failed} times in a row without progress "
                f"(retries and retry_budget); last: {message}"
            )
        self.stats.interruptions += 1
        self.progress.interruptions += 1

    def progressed(self):
        self.failed = 0


class ShellStream:
    """Streams layers through the node's shell (see the module docstring).

    ``node`` is a _node_store.NodeStore (its ``append``, ``layer_state``,
    ``remove`` and ``complete_layer``); ``policy`` a RetryPolicy for the
    link; ``report(progress)`` is called after each chunk.
    """

    method = "shell"
    verified_on_arrival = True  # publish need not hash the files again

    def __init__(
        self,
        node,
        policy,
        chunk_size=DEFAULT_TRANSFER_CHUNK_SIZE,
        rate_limit=0,
        report=None,
        clock=time.monotonic,
        sleep=time.sleep,
    ):
        self.node = node
        self.policy = policy
        self.rate = RateLimit(rate_limit, clock, sleep)
        self.chunk_size = self.rate.chunk_size(max(MIN_CHUNK_SIZE, chunk_size))
        self.report = report or (lambda progress: None)
        self.clock = clock

    def send(self, blob_path, layer, work, name, stats):
        """Leave the layer (a manifest descriptor) at ``work/name``, verified; its sha256 hex."""
        size = layer["size"]
        algorithm, expected = parse_digest(layer["digest"])
        progress = Progress(name, size, self.clock)
        attempts = _Attempts(self.policy, stats, progress)
        with open(blob_path, "rb") as blob:
            hashes = _LayerHashes(algorithm)
            offset = self._resume_point(blob, hashes, work, name, size, attempts)
            progress.held = progress.resumed = offset
            stats.resumed_bytes += offset
            while offset < size:
                blob.seek(offset)
                chunk = blob.read(min(self.chunk_size, size - offset))
                if len(chunk) != min(self.chunk_size, size - offset):
                    raise StageError(
                        f"the controller cache's copy of {layer['digest']} is shorter than the manifest says"
                    )
                chunk_sha256 = hashlib.sha256(chunk).hexdigest()
                self.rate.sending()
                link_error = None
                try:
                    held, node_sha256 = self.node.append(work, name, offset, chunk)
                except NodeLinkError as exc:
                    link_error = exc
                stats.sent_bytes += len(chunk)
                progress.sent += len(chunk)
                if link_error is not None:
                    attempts.broken(link_error)
                    continue
                self.rate.sent(len(chunk))
                if held == offset + len(chunk) and node_sha256 == chunk_sha256:
                    hashes.update(chunk)
                    offset = held
                    progress.held = offset
                    attempts.progressed()
                elif held == offset + len(chunk):
                    attempts.broken(
                        DigestMismatchError(
                            f"chunk at {offset} of {name} arrived with sha256 {node_sha256}, sent {chunk_sha256}"
                        )
                    )
                elif held < offset:
                    offset = self._resume_point(blob, hashes.restart(), work, name, size, attempts)
                else:
                    attempts.broken(
                        StageError(f"{name}.part holds {held} bytes after a chunk ending at {offset + len(chunk)}")
                    )
                self.report(progress)
        if hashes.layer_hexdigest() != expected:
            self.node.remove(work, name + ".part")
            self.node.remove(work, name)
            raise DigestMismatchError(
                f"the controller cache's copy of {layer['digest']} has {algorithm} {hashes.layer_hexdigest()}, "
                "not the manifest's digest; nothing was published and the previous release is kept"
            )
        self.node.complete_layer(work, name, size)
        progress.done = True
        self.report(progress)
        return hashes.sha256_hexdigest()

    def _resume_point(self, blob, hashes, work, name, size, attempts):
        """How much of the layer the node already holds (hashed into ``hashes``); removes what is wrong.

        What a node holds from an earlier try is hashed there once, and the same stretch of the
        cache here: the whole layer (``done``, renamed by a run that did not get to publish) or
        its start (``part``).
        """
        while True:
            try:
                state = self.node.layer_state(work, name, size)
                break
            except NodeLinkError as exc:
                attempts.broken(exc)
        for kind, file_name in (("done", name), ("part", name + ".part")):
            if kind not in state:
                continue
            held, node_sha256 = state[kind]
            trial = _LayerHashes(hashes.algorithm)
            blob.seek(0)
            fits = held == size if kind == "done" else held <= size
            if fits and _hash_prefix(blob, held, trial) == held and trial.sha256_hexdigest() == node_sha256:
                hashes.adopt(trial)
                if kind == "done" and "part" in state:
                    self.node.remove(work, name + ".part")
                return held
            self.node.remove(work, file_name)
        return 0


class PutFile:
    """The connection's own file transfer: ``put_file(local, remote)`` copies the layer to
    ``<name>.part`` (a rate limit is the caller's put_file's to apply); the node checks the
    file's sha256 when the release is published. A broken copy starts again from its start.
    """

    method = "put_file"
    verified_on_arrival = False

    def __init__(self, node, put_file, policy, retry=True):
        self.node = node
        self.put_file = put_file
        self.policy = policy
        self.retry = retry

    def send(self, blob_path, layer, work, name, stats):
        progress = Progress(name, layer["size"], time.monotonic)
        attempts = _Attempts(self.policy, stats, progress)
        while True:
            try:
                self.put_file(blob_path, f"{work}/{name}.part")
            except NodeLinkError as exc:
                # How far a broken copy got is not known: counted whole. (A copy the connection
                # refused, TransferUnavailableError, sent nothing.)
                stats.sent_bytes += layer["size"]
                if not self.retry:
                    raise
                attempts.broken(exc)
                continue
            stats.sent_bytes += layer["size"]
            break
        self.node.complete_layer(work, name, layer["size"])
        return None


class AutoTransfer:
    """``node_transfer: auto``: the connection's file transfer while it works; the shell stream
    from the first layer it cannot copy (no sftp or scp on the node: TransferUnavailableError)
    or whose copy breaks (the stream resumes what the copy left)."""

    def __init__(self, put_file, shell_stream):
        self.put_file = put_file
        self.shell_stream = shell_stream
        self.current = put_file

    @property
    def method(self):
        return self.current.method

    @property
    def verified_on_arrival(self):
        return self.current.verified_on_arrival

    def send(self, blob_path, layer, work, name, stats):
        if self.current is self.put_file:
            try:
                return self.put_file.send(blob_path, layer, work, name, stats)
            except TransferUnavailableError:
                pass
            except NodeLinkError:
                stats.interruptions += 1
            self.current = self.shell_stream
        return self.shell_stream.send(blob_path, layer, work, name, stats)


class _LayerHashes:
    """The running hashes of a layer's bytes in order: its manifest algorithm's, and sha256
    (the same object for a sha256 layer)."""

    def __init__(self, algorithm):
        self.algorithm = algorithm
        self._sha256 = hashlib.sha256()
        self._layer = self._sha256 if algorithm == "sha256" else hashlib.new(algorithm)

    def update(self, data):
        self._sha256.update(data)
        if self._layer is not self._sha256:
            self._layer.update(data)

    def adopt(self, other):
        self._sha256, self._layer = other._sha256, other._layer

    def restart(self):
        self.adopt(_LayerHashes(self.algorithm))
        return self

    def sha256_hexdigest(self):
        return self._sha256.hexdigest()

    def layer_hexdigest(self):
        return self._layer.hexdigest()


def _hash_prefix(blob, count, hashes):
    """Hash the first ``count`` bytes of ``blob`` into ``hashes``; how many there were."""
    done = 0
    while done < count:
        data = blob.read(min(_READ_SIZE, count - done))
        if not data:
            break
        hashes.update(data)
        done += len(data)
    return done
