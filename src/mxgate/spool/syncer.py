"""The journal's fdatasync helper process (started by ``sync_helper.SyncHelper``).

Run as a script with nothing but the standard library (``python -I -S
syncer.py FD``): FD is one end of a SOCK_SEQPACKET socket pair. Each request
is one packet, carrying the segment's file descriptor whenever it changed
(SCM_RIGHTS); the reply is ``0`` once ``fdatasync`` returned, or the errno in
decimal. Ends when the worker closes its end (or dies).
"""

from __future__ import annotations

import os
import signal
import socket
import sys


def serve(sock: socket.socket) -> None:
    fd = -1
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, 16, 4)
        except OSError:
            return
        if not message:
            return
        for extra in fds[1:]:
            os.close(extra)
        if fds:
            if fd >= 0:
                os.close(fd)
            fd = fds[0]
        try:
            os.fdatasync(fd)
            reply = b"0"
        except OSError as err:
            reply = str(err.errno or 5).encode("ascii")
        try:
            sock.send(reply)
        except OSError:
            return


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the worker may still commit
    # while it finishes its sessions, and ends us by closing its end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])))
