"""The processes of ``mxgate serve``: kill -9 during a burst, SIGHUP reloads,
SIGTERM with a session in the middle of a transaction."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest

from mxgate.cpus import available_cpus
from mxgate.spool import Spool
from tests.e2e.conftest import GatewayFactory
from tests.e2e.gateway import (
    HOSTNAME,
    INSIDE,
    OUTSIDE,
    Gateway,
    StallingProxy,
    new_messages,
    split_received,
    wait_gone,
)

QUEUED = re.compile(r"2\.0\.0 Ok: queued as (\w+)")


def ehlo_size(gateway: Gateway) -> int:
    with gateway.smtp() as client:
        client.ehlo("client.test")
        return int(client.esmtp_features["size"])


# -- kill -9 ------------------------------------------------------------------------


class Burst:
    """Clients sending messages in a loop; records every message acknowledged."""

    def __init__(self, gateway: Gateway, clients: int) -> None:
        self.gateway = gateway
        self.acked: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Burst:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def _client(self, number: int) -> None:
        sent = 0
        while not self.stop.is_set():
            try:
                with self.gateway.smtp(OUTSIDE, timeout=10) as client:
                    client.ehlo("burst.test")
                    for _ in range(5):  # a few messages per connection
                        sent += 1
                        message = (
                            f"Subject: burst {number}.{sent}\r\n\r\n".encode()
                            + f"client {number} message {sent}\r\n".encode() * (sent % 40 + 1)
                        )
                        client.mail(f"burst{number}@example.org")
                        client.rcpt("james@server1.example.com")
                        code, text = client.data(message)
                        match = QUEUED.fullmatch(text.decode())
                        if code == 250 and match:
                            with self.lock:
                                self.acked[match[1]] = message
            except (smtplib.SMTPException, OSError):
                if self.stop.is_set():
                    return
                time.sleep(0.01)  # killed: connections are refused until we stop


def test_kill_9_during_a_burst_loses_nothing_acknowledged(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(workers=2)
    workers = gateway.worker_processes()
    assert len(workers) == 2
    with Burst(gateway, clients=4) as burst:
        deadline = time.monotonic() + 30
        while burst.count() < 60:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.01)
        gateway.kill()  # the master, then its workers, all with SIGKILL
        killed_at = burst.count()
    assert wait_gone(workers, 5) == []
    assert len(burst.acked) >= killed_at >= 60

    with Spool(gateway.spool_dir) as spool:
        report = spool.recover(verify_bodies=True)
        assert report.corrupt == []
        assert report.messages >= len(burst.acked)
        spool.adopt_journal()  # what the queue manager does at start
        for queue_id, message in burst.acked.items():
            queued = spool.load(queue_id)
            assert [r.address for r in queued.envelope.recipients] == ["james@server1.example.com"]
            with spool.open_body(queue_id) as body:
                received, rest = split_received(body.read())
            assert rest == message, queue_id
            assert received["id"].decode() == queue_id

    mark = gateway.log_size()
    gateway.start()
    # The same messages; those still in the journal count as returned again (the
    # queue manager, not recovery, takes the journal over).
    gateway.wait_for_log(rf"spool \S+: {report.messages} message\(s\) queued, ", mark)
    before = gateway.messages()
    assert set(burst.acked) <= set(before)
    with gateway.smtp(OUTSIDE) as client:
        client.sendmail("after@example.org", ["james@server1.example.com"], b"Subject: x\r\n\r\n")
    assert len(new_messages(before, gateway)) == 1


def test_workers_stop_when_the_master_is_killed(start_gateway: GatewayFactory) -> None:
    """Orphaned workers would go on accepting beside the workers of the next
    master (SO_REUSEPORT), with old settings: they notice and stop."""
    gateway = start_gateway(workers=2)
    workers = gateway.worker_processes()
    helpers = gateway.helper_processes()  # the remover: it stops at EOF from the master
    assert len(helpers) == 1
    mark = gateway.log_size()
    assert gateway.process is not None
    gateway.process.kill()
    gateway.process.wait(10)
    workers += helpers
    try:
        assert wait_gone(workers, 15) == [], gateway.log(mark)
    finally:
        for orphan in wait_gone(workers, 0):  # leave nothing behind if they did not stop
            orphan.kill()
    assert gateway.log(mark).count("warning: the master process is gone; stopping") == 2
    with pytest.raises(ConnectionRefusedError):
        gateway.raw(INSIDE, timeout=5).close()


def test_ctrl_c_stops_every_process_without_a_traceback(start_gateway: GatewayFactory) -> None:
    """Ctrl-C on a terminal sends SIGINT to the whole process group: the
    master, the workers and their helpers at once. The helpers end when their
    parent closes their pipe; SIGINT made them print a KeyboardInterrupt."""
    gateway = start_gateway()
    with gateway.smtp(OUTSIDE) as client:  # a commit, so the worker's helpers run
        client.sendmail("a@example.org", ["james@server1.example.com"], b"Subject: x\r\n\r\n")
    mark = gateway.log_size()
    master = psutil.Process(gateway.pid)
    everyone = [master, *master.children(recursive=True)]
    assert len(everyone) >= 3  # the master, a worker, the remover (and maybe the syncer)
    for process in everyone:
        process.send_signal(signal.SIGINT)
    assert gateway.process is not None and gateway.process.wait(30) == 0
    assert wait_gone(everyone[1:], 15) == []
    text = gateway.log(mark)
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text


def test_workers_0_starts_one_per_usable_core_less_one(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway(workers=0)
    cores = available_cpus()
    expected = max(1, cores - 1)
    deadline = time.monotonic() + 30
    while len(gateway.worker_processes()) < expected:
        assert time.monotonic() < deadline, gateway.log()
        time.sleep(0.05)
    assert len(gateway.worker_processes()) == expected
    said = f"with {expected} worker(s) (workers = 0: {cores} usable core(s) less one)"
    assert said in gateway.log()


def test_the_queue_manager_runs_at_a_lower_priority_than_the_workers(
    start_gateway: GatewayFactory,
) -> None:
    """delivery_nice lowers the master's loop (the queue manager) alone: the
    workers, those started first and one restarted after a crash, keep the
    priority the gateway was started with."""
    started_with = os.getpriority(os.PRIO_PROCESS, 0)  # the gateway inherits ours
    gateway = start_gateway(workers=2, delivery_nice=7)
    assert psutil.Process(gateway.pid).nice() == min(19, started_with + 7)
    workers = gateway.worker_processes()
    assert [worker.nice() for worker in workers] == [started_with, started_with]
    mark = gateway.log_size()
    workers[0].kill()
    gateway.wait_for_log(r"warning: worker \d+ exited with status -9; restarting it", mark)
    deadline = time.monotonic() + 30
    while len(gateway.worker_pids() - {workers[0].pid}) < 2:
        assert time.monotonic() < deadline, gateway.log(mark)
        time.sleep(0.05)
    again = gateway.worker_processes()
    assert workers[0].pid not in {worker.pid for worker in again}
    assert [worker.nice() for worker in again] == [started_with, started_with]
    # Mail still goes through both sides.
    before = gateway.messages()
    with gateway.smtp(OUTSIDE) as client:
        client.sendmail("a@example.org", ["james@server1.example.com"], b"Subject: x\r\n\r\n")
    assert len(new_messages(before, gateway)) == 1


# -- SIGHUP -------------------------------------------------------------------------


class Prober:
    """Connects over and over, each time waiting for the greeting and saying
    QUIT; counts the attempts and records every failure."""

    def __init__(self, gateway: Gateway, threads: int = 2) -> None:
        self.gateway = gateway
        self.attempts = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Prober:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with self.gateway.raw(INSIDE, timeout=10) as client:
                    greeting = client.reply()
                    bye = client.command("QUIT")
                # An old worker may end an idle session with 421 4.3.2 as it
                # stops: the connection was taken and answered all the same.
                closed = bye.code == 221 or str(bye).startswith("421 4.3.2 ")
                problem = None if greeting.code == 220 and closed else f"{greeting} {bye}"
            except (OSError, AssertionError) as exc:
                problem = repr(exc)
            with self.lock:
                self.attempts += 1
                if problem is not None:
                    self.failures.append(problem)
            time.sleep(0.005)


def test_sighup_applies_new_settings_without_refusing_a_connection(
    start_gateway: GatewayFactory,
) -> None:
    gateway = start_gateway(workers=2, message_size_limit=200_000)
    assert ehlo_size(gateway) == 200_000
    old_workers = gateway.worker_processes()
    old = {worker.pid for worker in old_workers}
    mark = gateway.log_size()
    with Prober(gateway) as prober:
        time.sleep(0.3)
        gateway.write_config(message_size_limit=123_456)
        gateway.reload()
        gateway.wait_for_log(r"reload: new worker\(s\)", mark, timeout=30)
        assert wait_gone(old_workers, 30) == [], "the old workers did not exit"
        time.sleep(0.3)
    assert prober.failures == [], gateway.log(mark)
    assert prober.attempts > 20
    new = gateway.worker_pids()
    assert len(new) == 2 and not new & old
    assert ehlo_size(gateway) == 123_456

    # A bad edit: the running workers stay, with a warning.
    mark = gateway.log_size()
    gateway.write_config(message_size_limit="a lot")
    gateway.reload()
    gateway.wait_for_log(
        r"warning: reload refused, keeping the running workers: .*message_size_limit", mark
    )
    assert gateway.worker_pids() == new
    assert ehlo_size(gateway) == 123_456
    gateway.write_config(message_size_limit=123_456)


def test_sighup_while_the_database_hangs(start_gateway: GatewayFactory, e2e_database: str) -> None:
    """A reload when PostgreSQL stops answering: the new worker waits for the
    database (connect timeout), then serves from the disk copy; meanwhile the
    old one goes on serving, and no connection is refused."""
    parts = urlsplit(e2e_database)
    assert parts.hostname is not None and parts.port is not None
    proxy = StallingProxy((parts.hostname, parts.port))
    try:
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
        gateway = start_gateway(database_url=urlunsplit(parts._replace(netloc=netloc)))
        cache = gateway.state_dir / "snapshot.cache"
        deadline = time.monotonic() + 15
        while not cache.exists():
            assert time.monotonic() < deadline, "no disk cache written"
            time.sleep(0.05)
        old_workers = gateway.worker_processes()
        old = {worker.pid for worker in old_workers}
        proxy.stall()
        mark = gateway.log_size()
        with Prober(gateway) as prober:
            gateway.reload()
            gateway.wait_for_log(r"reload: new worker\(s\)", mark, timeout=30)
            assert wait_gone(old_workers, 30) == [], "the old worker did not exit"
            time.sleep(0.3)
        assert prober.failures == [], gateway.log(mark)
        assert gateway.worker_pids() and not gateway.worker_pids() & old
        gateway.wait_for_log(r"routing data from disk-cache", mark)
        with gateway.raw(OUTSIDE) as client:
            assert client.reply().code == 220
            assert client.command("EHLO client.test").code == 250
            assert client.command("MAIL FROM:<a@example.org>").code == 250
            assert str(client.command("RCPT TO:<james@server1.example.com>")) == "250 2.1.5 Ok"
    finally:
        proxy.close()


def test_sighup_refuses_a_change_of_listen_and_keeps_the_workers(
    start_gateway: GatewayFactory,
) -> None:
    """The listening sockets are the master's, opened at start: a reload that
    would listen elsewhere is refused, and the running workers stay."""
    gateway = start_gateway()
    old = gateway.worker_pids()
    with socket.create_server((INSIDE, 0)) as other:
        port = other.getsockname()[1]
    gateway.write_config(listen=[f"{INSIDE}:{gateway.port}", f"{INSIDE}:{port}"])
    mark = gateway.log_size()
    gateway.reload()
    gateway.wait_for_log(
        r"warning: reload refused, keeping the running workers: "
        r"listen changed: restart mxgate serve to listen elsewhere",
        mark,
    )
    assert gateway.worker_pids() == old
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((INSIDE, port), timeout=5).close()
    gateway.write_config(listen=[f"{INSIDE}:{gateway.port}"])


def test_serve_fails_when_it_cannot_listen(tmp_path: Path, e2e_database: str) -> None:
    gateway = Gateway(tmp_path / "gw", e2e_database, workers=2)
    with (
        socket.create_server((INSIDE, gateway.port)),
        pytest.raises(AssertionError, match="mxgate serve exited with 1"),
    ):
        gateway.start()
    log = gateway.log()
    assert re.search(rf"mxgate: fatal: cannot listen: .*{gateway.port}.*already in use", log), log
    assert "Traceback" not in log


# -- SIGTERM --------------------------------------------------------------------------


def test_sigterm_lets_a_transaction_finish(start_gateway: GatewayFactory) -> None:
    gateway = start_gateway()
    workers = gateway.worker_processes()
    before = gateway.messages()
    message = b"Subject: slow\r\n\r\n" + b"first half\r\n" * 100 + b"second half\r\n" * 100
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        assert client.command("MAIL FROM:<slow@example.org>").code == 250
        assert client.command("RCPT TO:<james@server1.example.com>").code == 250
        assert client.command("DATA").code == 354
        half = len(message) // 2
        client.send(message[:half])
        mark = gateway.log_size()
        gateway.terminate()
        gateway.wait_for_log("terminating on signal", mark)
        # The listener is closed: no new session starts...
        with pytest.raises(ConnectionRefusedError):
            gateway.raw(INSIDE, timeout=5).close()
        # ... but ours goes on.
        assert gateway.process is not None and gateway.process.poll() is None
        client.send(message[half:] + b".\r\nQUIT\r\n")
        reply, bye = client.replies_until_close()
        assert reply.code == 250, reply
        match = QUEUED.fullmatch(reply.text)
        assert match is not None
        assert str(bye) == "221 2.0.0 Bye"
    gateway.wait_exit(workers)
    [(queue_id, _queued)] = new_messages(before, gateway).items()
    assert queue_id == match[1]
    assert split_received(gateway.body(queue_id))[1] == message


def test_sigterm_ends_idle_sessions_at_once(start_gateway: GatewayFactory) -> None:
    """Sessions between transactions get 421 4.3.2 and the gateway exits
    promptly, instead of waiting for idle clients (RFC 5321 3.8)."""
    gateway = start_gateway()
    workers = gateway.worker_processes()
    shutting_down = f"421 4.3.2 {HOSTNAME} Service shutting down, try again later"
    greeted = gateway.raw(OUTSIDE)
    assert greeted.reply().code == 220
    after_mail = gateway.raw(OUTSIDE)
    assert after_mail.reply().code == 220
    assert after_mail.command("EHLO client.test").code == 250
    assert after_mail.command("MAIL FROM:<a@example.org>").code == 250
    assert after_mail.command("RCPT TO:<james@server1.example.com>").code == 250
    assert after_mail.command("DATA").code == 354
    assert after_mail.command(b"Subject: x\r\n\r\nbody\r\n.").code == 250
    started = time.monotonic()
    gateway.terminate()
    for client in (greeted, after_mail):
        with client:
            assert [str(reply) for reply in client.replies_until_close()] == [shutting_down]
    gateway.wait_exit(workers)
    assert time.monotonic() - started < 5


def test_sigterm_while_replies_wait_out_the_error_sleep(start_gateway: GatewayFactory) -> None:
    """A session slowed down by smtpd_error_sleep_time gets its late reply,
    then 421, and the gateway exits cleanly."""
    gateway = start_gateway(smtpd_soft_error_limit=1, smtpd_error_sleep_time=2)
    workers = gateway.worker_processes()
    need_mail = "503 5.5.1 Error: need MAIL command"
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        assert str(client.command("RCPT TO:<james@server1.example.com>")) == need_mail
        client.send(b"RCPT TO:<james@server1.example.com>\r\n")  # its reply waits 2 s
        time.sleep(0.5)
        gateway.terminate()
        replies = [str(reply) for reply in client.replies_until_close()]
    assert replies == [
        need_mail,
        f"421 4.3.2 {HOSTNAME} Service shutting down, try again later",
    ]
    gateway.wait_exit(workers)


def test_sighup_lets_sessions_of_the_old_workers_run_to_their_quit(
    start_gateway: GatewayFactory,
) -> None:
    """A reload is not a stop: the new workers serve, so a session on an old
    worker, even one between transactions, is not told 421 but goes on with
    its mail; the old worker exits when its last session ends."""
    gateway = start_gateway(workers=1)
    old_workers = gateway.worker_processes()
    before = gateway.messages()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        mark = gateway.log_size()
        gateway.reload()
        gateway.wait_for_log(r"reload: new worker\(s\)", mark, timeout=30)
        gateway.wait_for_log(r"replaced by new workers: closing the listeners", mark)
        assert all(worker.is_running() for worker in old_workers)  # ours is still served
        with gateway.raw(OUTSIDE) as newcomer:  # new connections go to the new worker
            assert newcomer.reply().code == 220
        assert client.command("MAIL FROM:<a@example.org>").code == 250
        assert client.command("RCPT TO:<james@server1.example.com>").code == 250
        assert client.command("DATA").code == 354
        reply = client.command(b"Subject: across a reload\r\n\r\nbody\r\n.")
        assert reply.code == 250, reply
        assert str(client.command("QUIT")) == "221 2.0.0 Bye"
    assert wait_gone(old_workers, 15) == [], gateway.log(mark)
    assert len(new_messages(before, gateway)) == 1
