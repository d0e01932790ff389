"""What a reload (SIGHUP) changes in the running master (``reload_plan``),
and the queue manager's CPU priority (``delivery_nice``)."""

from __future__ import annotations

import errno
import io
import os
import threading
from dataclasses import replace

import pytest

from mxgate.app import master_settings
from mxgate.config import load_config
from mxgate.maillog import MailLog
from mxgate.master import (
    RESTART_ONLY,
    MasterSettings,
    lower_delivery_priority,
    lower_thread_priority,
    reload_plan,
)

DSN = "postgresql://127.0.0.1:5432/mail"


def settings(**environ: str) -> MasterSettings:
    variables = {f"MXGATE_{name.upper()}": value for name, value in environ.items()}
    return master_settings(load_config(None, environ=variables).config, DSN)


def test_queue_and_delivery_settings_apply_at_once() -> None:
    changes = {
        "relayhost": "[192.0.2.7]:2525",
        "default_destination_recipient_limit": "1",
        "maximal_backoff_time": "1h",
        "myhostname": "mx2.example.net",
        "dns_nameservers": "127.0.0.1:5353",
        "delay_logging_resolution_limit": "3",
    }
    assert reload_plan(settings(), settings(**changes), srs_keys=True) == (settings(**changes), [])
    assert settings(**changes).scheduler.delay_decimals == 3


def test_where_the_master_keeps_its_state_and_logs_waits_for_a_restart() -> None:
    current = settings()
    new = settings(
        spool_dir="/var/spool/elsewhere",
        state_dir="/var/lib/elsewhere",
        metrics_listen="127.0.0.1:9199",
        change_log_retention="1d",
        relayhost="[192.0.2.7]",
    )
    applied, waiting = reload_plan(current, new, srs_keys=True)
    assert waiting == ["change_log_retention", "metrics_listen", "spool_dir", "state_dir"]
    for field in RESTART_ONLY:
        assert getattr(applied, field) == getattr(current, field), field
    assert applied.policy.relayhost == "[192.0.2.7]"  # the rest is taken up


def test_srs_turned_on_needs_the_keys_the_master_follows_from_its_start() -> None:
    off = settings(srs_enabled="false")
    on = settings(srs_enabled="true")
    assert off.srs is None and on.srs is not None
    applied, waiting = reload_plan(off, on, srs_keys=False)
    assert applied.srs is None and waiting == ["srs_enabled"]
    applied, waiting = reload_plan(off, on, srs_keys=True)
    assert applied.srs == on.srs and waiting == []
    applied, waiting = reload_plan(on, off, srs_keys=True)  # turning it off always works
    assert applied.srs is None and waiting == []


def test_delivery_nice_can_only_grow_while_running() -> None:
    current = replace(settings(), delivery_nice=10)
    applied, waiting = reload_plan(current, replace(current, delivery_nice=15), srs_keys=True)
    assert applied.delivery_nice == 15 and waiting == []
    applied, waiting = reload_plan(current, replace(current, delivery_nice=5), srs_keys=True)
    assert applied.delivery_nice == 10 and waiting == ["delivery_nice"]


def test_a_refused_priority_change_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sandbox whose seccomp filter refuses setpriority (EPERM): the master
    goes on at the workers' priority and says so."""
    stream = io.StringIO()

    def refuse(_which: int, _who: int, _value: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    lower_delivery_priority(10, MailLog("mx.example.net", stream))
    assert "warning: cannot lower the queue manager's priority: [Errno 1]" in stream.getvalue()


def test_the_priority_is_lowered_for_the_calling_thread_alone() -> None:
    """Run in a thread of its own so that the test process keeps its nice."""
    seen: dict[str, int] = {}

    def lower() -> None:
        before = os.getpriority(os.PRIO_PROCESS, 0)
        seen["expected"] = min(19, before + 3)
        seen["returned"] = lower_thread_priority(3)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, 0)

    main_before = os.getpriority(os.PRIO_PROCESS, 0)
    thread = threading.Thread(target=lower)
    thread.start()
    thread.join()
    assert seen["returned"] == seen["after"] == seen["expected"]
    assert os.getpriority(os.PRIO_PROCESS, 0) == main_before
