"""A real redis-server on 127.0.0.1 for tests: started, restarted and stopped by the test itself."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures import free_port


class RedisServer:
    def __init__(self, workdir: Path, password: str | None = None, appendonly: bool = False) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (.ci/run installs the Debian package)")
        self.workdir, self.password, self.appendonly = workdir, password, appendonly
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        args = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    if self.password:
                        s.sendall(f"AUTH {self.password}\r\n".encode())
                        s.recv(64)
                    s.sendall(b"PING\r\n")
                    if b"PONG" in s.recv(64):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _ping(port: int, password: str | None, timeout: float = 10, proc: subprocess.Popen | None = None,
          log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis on port {port} exited with {proc.returncode}: {log.read_text() if log else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                if password:
                    s.sendall(f"AUTH {password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                if b"PONG" in s.recv(64):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis on port {port} did not start: {log.read_text()[-2000:] if log else ''}")


def _cli(port: int, password: str | None, *args: str) -> str:
    auth = ["-a", password, "--no-auth-warning"] if password else []
    return subprocess.run(["redis-cli", "-p", str(port), *auth, *args], capture_output=True, text=True,
                          timeout=30, check=True).stdout


class RedisSentinelSet:
    """A master, a replica and one Sentinel watching them (quorum 1) on loopback; `kill_master()` forces a failover."""

    MASTER = "sam2master"

    def __init__(self, workdir: Path, password: str = "s3cret") -> None:
        self.workdir, self.password = workdir, password
        self.master = RedisServer(workdir / "master", password)
        self.replica = RedisServer(workdir / "replica", password)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://:{self.password}@127.0.0.1:{self.port}/{self.MASTER}/0"

    def start(self) -> "RedisSentinelSet":
        try:
            return self._start()
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise

    def _start(self) -> "RedisSentinelSet":
        for node in (self.master, self.replica):
            node.workdir.mkdir(parents=True, exist_ok=True)
        self.master.start()
        self.replica.start()
        _cli(self.replica.port, self.password, "CONFIG", "SET", "masterauth", self.password)
        _cli(self.replica.port, self.password, "REPLICAOF", "127.0.0.1", str(self.master.port))
        conf = self.workdir / "sentinel.conf"  # Sentinel rewrites its config file: a fresh one per set
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                        f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 1\n"
                        f"sentinel auth-pass {self.MASTER} {self.password}\n"
                        f"sentinel down-after-milliseconds {self.MASTER} 1000\n"
                        f"sentinel failover-timeout {self.MASTER} 5000\n")
        log = self.workdir / "sentinel.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=out,
                                         stderr=subprocess.STDOUT)
        _ping(self.port, None, proc=self.proc, log=log)
        deadline = time.time() + 20  # the replica has synced and Sentinel has found it
        while "state=online" not in _cli(self.master.port, self.password, "INFO", "replication") \
                or not _cli(self.port, None, "SENTINEL", "REPLICAS", self.MASTER).strip():
            if time.time() > deadline:
                raise RuntimeError("the Sentinel set did not come up")
            time.sleep(0.2)
        return self

    def master_port(self) -> int:
        return int(_cli(self.port, None, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER).split()[1])

    def _master_flags(self) -> str:
        fields = _cli(self.port, None, "SENTINEL", "MASTER", self.MASTER).split()
        return fields[fields.index("flags") + 1]

    def kill_master(self, timeout: float = 30) -> None:
        """Stop the master; return once Sentinel has promoted the replica and connected to it."""
        old = self.master.port
        self.master.stop()
        deadline = time.time() + timeout
        while self.master_port() == old or self._master_flags() != "master":
            if time.time() > deadline:
                raise RuntimeError("Sentinel did not fail over")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        self.replica.stop()
        self.master.stop()


class RedisClusterSet:
    """A 3-node Redis Cluster (masters only) on loopback."""

    def __init__(self, workdir: Path, password: str = "s3cret") -> None:
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            pytest.skip("redis-server / redis-cli are not installed (.ci/run installs the Debian package)")
        self.workdir, self.password = workdir, password
        self.ports = [free_port() for _ in range(3)]
        self.procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://:{self.password}@127.0.0.1:{self.ports[0]}"

    def start(self) -> "RedisClusterSet":
        try:
            return self._start()
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise

    def _start(self) -> "RedisClusterSet":
        for port in self.ports:
            d = self.workdir / str(port)
            d.mkdir(parents=True, exist_ok=True)
            with open(d / "redis.log", "wb") as out:
                self.procs.append(subprocess.Popen(
                    ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(d), "--save", "",
                     "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-port", str(free_port()),  # else port + 10000, which may be taken or > 65535
                     "--requirepass", self.password, "--masterauth", self.password],
                    stdout=out, stderr=subprocess.STDOUT))
        for port, proc in zip(self.ports, self.procs):
            _ping(port, self.password, proc=proc, log=self.workdir / str(port) / "redis.log")
        _cli(self.ports[0], self.password, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes")
        deadline = time.time() + 20
        while any("cluster_state:ok" not in _cli(p, self.password, "CLUSTER", "INFO") for p in self.ports):
            if time.time() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)
        self.procs = []
