"""Linux network namespaces for tests: each service on its own address, as on separate hosts.

A :class:`Network` is a Linux bridge in the root namespace holding the
address ``198.18.N.1/24``; every :meth:`Network.add` makes a namespace joined
to the bridge by a veth pair, with its own address ``198.18.N.k`` and its own
loopback. A process started with :meth:`Namespace.popen` sees only that
namespace: it binds its own address, reaches its peers by theirs, and cannot
reach anything else (there is no default route). The test itself stays in
the root namespace and reaches every namespace through the bridge.

Why 198.18.0.0/15: RFC 2544 sets it aside for benchmarking networks, so it
clashes with no real network. ``N`` is the first /24 in it that no interface
on the machine uses, chosen under a file lock so that test runs at the same
time (other checkouts on the same machine) take different ones.

Names carry the creating process's id (``mc<pid>-catalog``, bridge
``mcb<pid>``); a namespace or bridge left behind by a test run that was
killed is swept away by the next run, whose check finds its process gone.
:meth:`Network.close` (the ``with`` exit) stops every process in the
namespaces, deletes them (their veth pairs go with them) and the bridge,
whatever the test did.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SUBNETS = ipaddress.ip_network("198.18.0.0/15")
LOCK = Path("/tmp/microcall-netns.lock")
# Where `ip netns exec` finds per-namespace files to mount over /etc.
NETNS_ETC = Path("/etc/netns")
# A namespace of this harness: mc<pid>-<label>; a bridge: mcb<pid>; veths: mcv<pid>x<k>.
OWNED = re.compile(r"^mc(?:b|v)?(\d+)(?:-|x|$)")


class NetnsError(RuntimeError):
    """An ``ip`` command failed: its command line and what it printed."""


def ip(*arguments: str, check: bool = True) -> str:
    """Run ``ip ARGUMENTS`` and return its output; raise :class:`NetnsError` on failure."""
    command = [_ip_binary(), *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _ip_binary() -> str:
    found = shutil.which("ip") or ("/usr/sbin/ip" if os.access("/usr/sbin/ip", os.X_OK) else None)
    if found is None:
        raise NetnsError("no `ip` command (Debian package iproute2)")
    return found


def unavailable_reason() -> str | None:
    """Why this machine cannot run namespace tests, or None when it can.

    Tries what the tests do: create a namespace, give it a veth pair, delete it.
    """
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "creating network namespaces needs root (the tests run unprivileged here)"
    try:
        _ip_binary()
    except NetnsError as error:
        return str(error)
    probe = f"mc{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        try:
            ip(
                "link",
                "add",
                f"mcv{os.getpid()}x0",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                probe,
            )
        finally:
            ip("netns", "delete", probe, check=False)
    except NetnsError as error:
        return f"this machine does not allow network namespaces with veth pairs ({error})"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Delete the namespaces and links of earlier runs whose process is gone."""
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        owner = OWNED.match(name)
        if owner and not _alive(int(owner.group(1))):
            _kill_processes(name)
            ip("netns", "delete", name, check=False)
            shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
    for line in ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        owner = OWNED.match(name)
        if owner and name.startswith(("mcb", "mcv")) and not _alive(int(owner.group(1))):
            ip("link", "delete", name, check=False)


def _kill_processes(namespace: str) -> None:
    for _ in range(3):
        pids = [int(p) for p in ip("netns", "pids", namespace, check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _free_subnet() -> ipaddress.IPv4Network:
    used = {
        ipaddress.ip_interface(match).network
        for match in re.findall(r"inet (\S+)", ip("-o", "-4", "addr", "show"))
    }
    for subnet in SUBNETS.subnets(new_prefix=24):
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise NetnsError(f"every /24 of {SUBNETS} is in use")


@dataclass(slots=True)
class Namespace:
    """One namespace: its name, its own address, and the processes started in it."""

    name: str
    label: str
    address: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def popen(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this namespace, its output (both streams) going to ``log``."""
        handle: IO[Any] = log.open("wb")
        try:
            process = subprocess.Popen(
                [_ip_binary(), "netns", "exec", self.name, *argv],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            handle.close()
        self.processes.append(process)
        self.logs.append(log)
        return process

    def run(self, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion inside this namespace and return what it printed."""
        return subprocess.run(
            [_ip_binary(), "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def resolve(self, names: dict[str, list[str]]) -> None:
        """Let processes started here resolve ``names`` to the given addresses (before popen).

        ``ip netns exec`` mounts ``/etc/netns/<namespace>/hosts`` over
        ``/etc/hosts`` for the command it starts, so a name listed with
        several addresses resolves to all of them, as a Kubernetes headless
        Service or a scaled compose service does through DNS.
        """
        folder = NETNS_ETC / self.name
        folder.mkdir(parents=True, exist_ok=True)
        lines = ["127.0.0.1 localhost"]
        lines += [f"{address} {name}" for name, addresses in names.items() for address in addresses]
        (folder / "hosts").write_text("\n".join(lines) + "\n")

    def output(self) -> str:
        """What this namespace's processes printed so far (for failure messages)."""
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}"
            for log in self.logs
            if log.exists()
        )

    def stop(self) -> None:
        """Stop every process started here: SIGTERM, then SIGKILL after a grace period."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5.0)
        # Anything the processes forked into their own sessions (workers) goes too.
        _kill_processes(self.name)


class Network:
    """A bridge and the namespaces joined to it; use as a context manager.

    >>> with Network() as network:                     # doctest: +SKIP
    ...     catalog = network.add("catalog")           # its own address: catalog.address
    ...     catalog.popen([...], log=tmp / "catalog.log")
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self.bridge = f"mcb{self._pid}"
        self.namespaces: dict[str, Namespace] = {}
        self._subnet: ipaddress.IPv4Network | None = None
        self._hosts: Iterator[ipaddress.IPv4Address] | None = None
        self.gateway = ""

    def __enter__(self) -> Network:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the bridge in the root namespace with the first free 198.18.N.1/24."""
        sweep_stale()
        LOCK.touch(exist_ok=True)
        with LOCK.open("r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._subnet = _free_subnet()
            hosts = self._subnet.hosts()
            self.gateway = str(next(hosts))
            self._hosts = hosts
            # Bridged frames skip iptables: a host firewall's FORWARD policy is not ours to meet.
            created = subprocess.run(
                [
                    _ip_binary(),
                    "link",
                    "add",
                    self.bridge,
                    "type",
                    "bridge",
                    "nf_call_iptables",
                    "0",
                ],
                capture_output=True,
                check=False,
            )
            if created.returncode != 0:
                ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway}/{self._subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")

    def add(self, label: str) -> Namespace:
        """A new namespace named after ``label``, joined to the bridge, with its own address."""
        if self._hosts is None or self._subnet is None:
            raise NetnsError("the network is not open")
        if not re.fullmatch(r"[a-z0-9]{1,20}", label) or label in self.namespaces:
            raise NetnsError(f"bad or repeated namespace label {label!r}")
        name = f"mc{self._pid}-{label}"
        outside = f"mcv{self._pid}x{len(self.namespaces)}"
        address = str(next(self._hosts))
        ip("netns", "add", name)
        namespace = Namespace(name, label, address)
        self.namespaces[label] = namespace
        ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("link", "set", outside, "master", self.bridge, "up")
        inside = ("-n", name)
        ip(*inside, "addr", "add", f"{address}/{self._subnet.prefixlen}", "dev", "eth0")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "link", "set", "lo", "up")
        return namespace

    def output(self) -> str:
        """What every namespace's processes printed (for failure messages)."""
        return "\n".join(namespace.output() for namespace in self.namespaces.values())

    def close(self) -> None:
        """Stop the processes, delete the namespaces and the bridge; safe to call twice."""
        errors: list[str] = []
        for namespace in self.namespaces.values():
            try:
                namespace.stop()
            except Exception as error:  # one stuck process must not leave the rest behind
                errors.append(f"{namespace.name}: {error}")
            ip("netns", "delete", namespace.name, check=False)
            shutil.rmtree(NETNS_ETC / namespace.name, ignore_errors=True)
        self.namespaces.clear()
        ip("link", "delete", self.bridge, check=False)
        if errors:
            raise NetnsError("; ".join(errors))


def wait_for_port(address: str, port: int, *, timeout: float = 30.0, process: Any = None) -> None:
    """Wait until ``address:port`` accepts a TCP connection (from the caller's namespace).

    ``process``: a :class:`subprocess.Popen` whose early exit ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return
        except OSError as error:
            if process is not None and process.poll() is not None:
                raise NetnsError(f"the server exited with {process.returncode}") from error
            if time.monotonic() > deadline:
                raise NetnsError(f"{address}:{port} did not accept in {timeout} s") from error
            time.sleep(0.05)
