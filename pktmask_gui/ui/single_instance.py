"""One window per user: a second launch hands its captures to the window already open, then exits.

Without this, opening a second capture from the file manager would start a second window, whose start-up
sweep of stale temp folders could take the first window's running jobs for leftovers. The first launch
holds a lock file (``QLockFile``: a lock whose process died is taken over) and listens on a local socket
(``QLocalServer``, this user only); a later launch that finds the lock taken connects (``QLocalSocket``),
sends its paths — made absolute, as one JSON line — and waits for the window's "ok". The names derive from
the settings folder, so a test or a second profile (``PKTMASK_CONFIG_DIR``) has a window of its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Qt, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from .. import settings as settings_mod

CONNECT_TIMEOUT_MS = 1500
HAND_OFF_WAIT_S = 6.0       # a first window still starting up gets this long to start listening
ANSWER_WAIT_S = 30.0        # a window that accepted the connection (it listens before it builds its widgets)
                            # gets this long to answer: its event loop may not run yet on a loaded machine


def _names() -> tuple[str, str]:
    """(server name, lock file path) for this user and settings folder."""
    digest = hashlib.sha256(str(settings_mod.config_dir().resolve()).encode("utf-8")).hexdigest()[:12]
    base = f"pktmask-gui-{digest}"
    if sys.platform == "win32":
        user = os.environ.get("USERNAME", "user")
        return f"{base}-{user}", str(Path(tempfile.gettempdir()) / f"{base}-{user}.lock")
    # The session's runtime folder (private, emptied at logout), else the settings folder (private too):
    # never a shared temp folder, where a killed window's socket and lock would stay for everyone to see.
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not (runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK)):
        folder = settings_mod.config_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            runtime = str(folder)
        except OSError:
            runtime = tempfile.gettempdir()
        if len(os.path.join(runtime, base + ".sock")) > 100:    # a socket path holds at most 107 bytes
            runtime = tempfile.gettempdir()
            base += f"-{os.getuid()}"
    return os.path.join(runtime, base + ".sock"), os.path.join(runtime, base + ".lock")


def send(paths: list[str], name: str | None = None, timeout_ms: int = CONNECT_TIMEOUT_MS) -> bool:
    """Hand ``paths`` to the running window; True once it said it took them."""
    socket = QLocalSocket()
    socket.connectToServer(name or _names()[0])
    if not socket.waitForConnected(timeout_ms):
        return False
    message = json.dumps({"paths": [os.path.abspath(p) for p in paths]}).encode("utf-8") + b"\n"
    socket.write(message)
    socket.flush()
    answer = b""
    deadline = time.monotonic() + ANSWER_WAIT_S
    while not answer.endswith(b"\n") and time.monotonic() < deadline:
        if socket.bytesAvailable() or socket.waitForReadyRead(100):
            answer += bytes(socket.readAll().data())
        elif socket.state() != QLocalSocket.ConnectedState:
            break
    socket.disconnectFromServer()
    return answer.strip() == b"ok"


class Instance(QObject):
    """The first window's side: the lock, the server, and ``paths_received`` for each later launch."""

    paths_received = Signal(list)

    def __init__(self, lock: QLockFile, name: str):
        super().__init__()
        self.lock = lock
        self.name = name
        self.server: QLocalServer | None = None
        self._buffers: dict = {}

    def listen(self) -> bool:
        QLocalServer.removeServer(self.name)          # a socket file left by a window that crashed
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.UserAccessOption)
        if not server.listen(self.name):
            return False
        server.newConnection.connect(self._accept)
        self.server = server
        return True

    def _accept(self) -> None:
        while self.server is not None and self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            self._buffers[socket] = b""
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(lambda s=socket: self._forget(s))

    def _read(self, socket) -> None:
        data = self._buffers.get(socket, b"") + bytes(socket.readAll().data())
        self._buffers[socket] = data
        if not data.endswith(b"\n") and len(data) < 1 << 20:
            return
        try:
            paths = [str(p) for p in json.loads(data.decode("utf-8")).get("paths", [])]
        except (ValueError, AttributeError):
            socket.write(b"error\n")
            socket.flush()
            return
        socket.write(b"ok\n")
        socket.flush()
        self.paths_received.emit(paths)

    def _forget(self, socket) -> None:
        self._buffers.pop(socket, None)
        socket.deleteLater()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        self.lock.unlock()


def claim(paths: list[str]) -> Instance | None:
    """Become the one window (an ``Instance``, not yet listening), or hand ``paths`` to it (None)."""
    name, lock_path = _names()
    lock = QLockFile(lock_path)
    lock.setStaleLockTime(0)         # stale only when its process is gone, however long it ran
    deadline = time.monotonic() + HAND_OFF_WAIT_S
    while True:
        if lock.tryLock(0):
            return Instance(lock, name)
        if send(paths, name):
            return None
        if time.monotonic() > deadline:
            # The lock's owner neither listens nor died (hung?): open a window of our own rather than none.
            sys.stderr.write("pktmask-gui: another PktMask GUI window holds the lock but does not answer; "
                             "opening a second window.\n")
            return Instance(lock, name + f"-{os.getpid()}")
        time.sleep(0.1)


def bring_to_front(window) -> None:
    if window.isMinimized():
        window.setWindowState(window.windowState() & ~Qt.WindowMinimized)
    window.show()
    window.raise_()
    window.activateWindow()
