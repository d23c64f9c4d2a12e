"""Collect sd_notify(3) datagrams on a Unix socket, one assignment per line, for the systemd tests.

Usage: notify-listen.py SOCKET LOGFILE. Ends on SIGTERM, when its parent goes away, or after 10 minutes.
"""
import os
import signal
import socket
import sys
import time

path, log_path = sys.argv[1], sys.argv[2]
parent = os.getppid()
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(0.5)
deadline = time.monotonic() + 600
try:
    with open(log_path, "a", encoding="utf-8") as log:
        while time.monotonic() < deadline and os.getppid() == parent:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            for line in data.decode("utf-8", "replace").split("\n"):
                if line:
                    log.write(line + "\n")
            log.flush()
finally:
    sock.close()
    try:
        os.unlink(path)
    except OSError:
        pass
