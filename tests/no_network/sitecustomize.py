"""No network for any Python process started with this folder on PYTHONPATH.

tests/test_pipeline.py puts it there for every `dvc` and `medtune` command it runs, so the whole pipeline (the stages
run in processes DVC starts) and the CLI work with the network refused: a socket may connect, bind or send only to
this machine (loopback addresses, Unix sockets), and a name lookup only for `localhost`. Why not pytest-socket: it
guards the pytest process only. Each attempt is also appended to $MEDTUNE_NETWORK_LOG with its stack, because a
library may catch the error and carry on (telemetry does); the test fails on any line in that file.
"""

import ipaddress
import os
import socket
import sys
import traceback

LOCAL_NAMES = {None, "", "localhost"}


def _refuse(what: str) -> None:
    with open(os.environ.get("MEDTUNE_NETWORK_LOG", os.devnull), "a", encoding="utf-8") as log:
        log.write(f"{what} in {' '.join(sys.argv)}\n{''.join(traceback.format_stack(limit=8))}\n")
    raise OSError(f"network access blocked by tests/no_network: {what}")


def _is_local(address) -> bool:
    if not isinstance(address, tuple):  # a Unix socket path
        return True
    host = address[0]
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a name, not an address
        return False


class _GuardedSocket(socket.socket):
    def _check(self, action: str, address) -> None:
        if not _is_local(address):
            _refuse(f"{action}({address!r})")

    def connect(self, address):
        self._check("connect", address)
        return super().connect(address)

    def connect_ex(self, address):
        self._check("connect", address)
        return super().connect_ex(address)

    def bind(self, address):
        self._check("bind", address)
        return super().bind(address)

    def sendto(self, data, *args):
        self._check("sendto", args[-1])
        return super().sendto(data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):  # a DNS lookup already leaves the machine
    name = host.decode() if isinstance(host, bytes) else host
    if not _is_local((name,)):
        _refuse(f"getaddrinfo({name!r})")
    return _getaddrinfo(host, *args, **kwargs)


_getaddrinfo = socket.getaddrinfo
socket.socket = _GuardedSocket
socket.getaddrinfo = _guarded_getaddrinfo
