"""Settings: file + environment, clear errors, ``config show`` like postconf."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mxgate.app import own_endpoints, session_settings
from mxgate.cli import app
from mxgate.config import ConfigError, MxgateConfig, load_config, parse_duration
from mxgate.server.transaction import UpstreamProxy

runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mxgate.toml"
    path.write_text(text)
    return path


def test_defaults_are_postfix_defaults() -> None:
    config = load_config(None, environ={}).config
    assert config.message_size_limit == 30720000
    assert config.smtpd_recipient_limit == 1000
    assert config.maximal_queue_lifetime == 5 * 86400
    assert config.minimal_backoff_time == 300
    assert config.maximal_backoff_time == 4000
    assert config.default_transport == "smtp:"
    assert config.hopcount_limit == 50


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'myhostname = "mx1.example.net"\n'
        'mynetworks = ["192.0.2.0/24", "[2001:db8::]/32"]\n'
        'maximal_queue_lifetime = "2d"\n'
        "message_size_limit = 1000\n",
    )
    loaded = load_config(path, environ={"MXGATE_MESSAGE_SIZE_LIMIT": "2000"})
    config = loaded.config
    assert config.myhostname == "mx1.example.net"
    assert config.mynetworks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.maximal_queue_lifetime == 2 * 86400
    assert config.message_size_limit == 2000
    assert loaded.sources["message_size_limit"] == "MXGATE_MESSAGE_SIZE_LIMIT"
    assert loaded.sources["myhostname"] == str(path)


def test_database_url_from_environment() -> None:
    url = "postgresql://mx@db1,db2/mail"
    assert load_config(None, environ={"MXGATE_DATABASE_URL": url}).config.database_url == url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1\n", "unknown setting 'bogus'"),
        ('message_size_limit = "big"\n', "bad value for 'message_size_limit'"),
        ('mynetworks = ["10.0.0.0/33"]\n', "bad value for 'mynetworks'"),
        ('maximal_queue_lifetime = "5 days"\n', "bad value for 'maximal_queue_lifetime'"),
        ('listen = ["nohost"]\n', "bad value for 'listen'"),
        ('syslog_facility = "mial"\n', "'mial' is not a syslog facility (kern, user, mail,"),
        ("[smtpd]\ntimeout = 3\n", "unknown section [smtpd]"),
        ("myhostname = \n", "not valid TOML"),
        ('database_url = "postgresql://127.0.0.1:abc/mail"\n', "port 'abc' is not a number"),
        ('database_url = "postgresql://h:99999/mail"\n', "port '99999' is not a number"),
        ('database_url = "postgresql://[bad/mail"\n', "not a URL"),
        ('database_url = "postgresql://[::1]x/mail"\n', "bracketed IPv6 host"),
        ('database_url = "mysql://h/mail"\n', "must start with postgresql://"),
        ('myhostname = "mx\\r\\n250 fake"\n', "is not a host name"),
        ('myhostname = "mx_1.example"\n', "is not a host name"),
        ('smtpd_banner = "$myhostname\\n250 fake"\n', "contains a control character"),
        ("listen = []\n", "give at least one host:port"),
        ('listen = ["127.0.0.1:\uff12\uff15"]\n', "bad value for 'listen'"),  # fullwidth 25
        ('message_size_limit = "١٢٣"\n', "bad value for 'message_size_limit'"),
        ('maximal_queue_lifetime = "99999999999999d"\n', "longer than 100 years"),
        ('srs_key_grace = "٣d"\n', "bad value for 'srs_key_grace'"),
        ('smtpd_upstream_proxy_protocol = "nginx"\n', "'nginx' is not haproxy"),
        ('smtpd_upstream_proxy_timeout = "0s"\n', "must be at least 1s"),
        ('smtpd_upstream_proxy_hosts = ["proxy"]\n', "'proxy' is not an address or CIDR"),
        ('smtpd_authorized_xclient_hosts = "10.0.0.0/33"\n', "bad value for 'smtpd_authorized_x"),
        ("delivery_nice = 20\n", "must be at most 19"),
        ("delivery_nice = -5\n", "must not be negative"),
        ("delay_logging_resolution_limit = 7\n", "must be 0 to 6"),
        ("smtpd_busy_poll = 10001\n", "must be at most 10000"),
        ("smtpd_busy_poll = -1\n", "must not be negative"),
    ],
)
def test_bad_files_name_file_key_and_reason(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, environ={})
    assert str(path) in str(excinfo.value)
    assert expected in str(excinfo.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://mx:pw@db1.example.net:5432,db2.example.net/mail?sslmode=require",
        "postgres://[2001:db8::1]:5433/mail",
        "postgresql:///mail?host=/run/postgresql",
        "postgresql://%2Frun%2Fpostgresql/mail",
    ],
)
def test_database_urls_postgresql_takes(url: str) -> None:
    assert load_config(None, environ={"MXGATE_DATABASE_URL": url}).config.database_url == url


def test_a_bad_database_url_is_named_without_its_password() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, environ={"MXGATE_DATABASE_URL": "postgresql://u:hunter2@h:x/m"})
    assert "MXGATE_DATABASE_URL" in str(excinfo.value) and "hunter2" not in str(excinfo.value)


def test_a_settings_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'myhostname = "caf\xe9"\n')
    result = runner.invoke(app, ["config", "check", "--config", str(path)], env={})
    assert result.exit_code == 2, result.output
    assert f"{path}: not UTF-8 text (byte 17), so not TOML" in result.output


def test_the_build_switch_is_not_a_setting() -> None:
    """MXGATE_PURE=1 (plain Python, scripts/build-native) is in the
    environment of every command it starts: not an unknown setting."""
    assert load_config(None, environ={"MXGATE_PURE": "1"}).sources == {}


def test_bad_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"MXGATE_SMTPD_TIMEOUT.*bad value"):
        load_config(None, environ={"MXGATE_SMTPD_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match=r"MXGATE_NO_SUCH.*unknown setting"):
        load_config(None, environ={"MXGATE_NO_SUCH": "1"})


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("300s", 300), ("5m", 300), ("1h", 3600), ("5d", 432000)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


def test_cli_show_marks_non_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'relayhost = "[192.0.2.1]:587"\n')
    result = runner.invoke(app, ["config", "show", "--config", str(path)], env={})
    assert result.exit_code == 0, result.output
    assert f'relayhost = "[192.0.2.1]:587"    # set by {path}' in result.output
    assert "message_size_limit = 30720000\n" in result.output
    changed = runner.invoke(app, ["config", "show", "-n", "--config", str(path)], env={})
    assert changed.output.strip().splitlines() == [
        f'relayhost = "[192.0.2.1]:587"    # set by {path}'
    ]


def test_cli_bad_file_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "smtpd_timeout = -5\n")
    result = runner.invoke(app, ["config", "check", "--config", str(path)], env={})
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "smtpd_timeout" in result.output


def test_every_setting_has_a_default() -> None:
    MxgateConfig()


def test_output_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """stdout on a full disk (/dev/full): click ends quietly on a closed
    pipe, but other write errors came out as a traceback."""
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [sys.executable, "-m", "mxgate", "config", "show"],
            stdout=full,
            stderr=subprocess.PIPE,
            env={**os.environ, "MXGATE_CONFIG": str(write(tmp_path, ""))},
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.decode() == "mxgate: cannot write the output: No space left on device\n"


@pytest.mark.parametrize(
    "command",
    [
        ["domain", "list"],
        ["db", "status"],
        ["db", "migrate"],
        ["srs", "rotate"],
        ["forward", "add", "a@server1.example.com", "b@example.org"],
    ],
)
def test_commands_other_than_serve_never_make_an_embedded_database(
    tmp_path: Path, command: list[str]
) -> None:
    """No database_url and no embedded cluster in state_dir (the command run
    from another directory than serve): it made a new empty cluster there,
    taking seconds, then failed on the missing tables."""
    state = tmp_path / "var"
    result = runner.invoke(app, command, env={"MXGATE_STATE_DIR": str(state)})
    assert result.exit_code == 1, result.output
    assert f"no database_url set, and no embedded database in {state / 'pgdata'}" in (result.output)
    assert not (state / "pgdata").exists()


def test_print_grants_needs_a_role_name() -> None:
    """An empty role printed GRANTs ``TO ""``, which PostgreSQL refuses."""
    result = runner.invoke(app, ["db", "migrate", "--print-grants", " "], env={})
    assert result.exit_code == 2 and "--print-grants: give the role's name" in result.output
    result = runner.invoke(app, ["db", "migrate", "--print-grants", "mxro"], env={})
    assert result.exit_code == 0 and 'TO "mxro"' in result.output


def test_where_the_gateway_takes_mail_for_loop_detection(tmp_path: Path) -> None:
    """Every listen endpoint, a wildcard standing for each interface address
    of its own family only, and port 25 of each proxy_interfaces address."""
    (tmp_path / "m.toml").write_text(
        'listen = ["127.0.0.1:2525", "[::1]:2526", "0.0.0.0:25", "[::]:26"]\n'
        'proxy_interfaces = ["192.0.2.1", "[2001:DB8::1]"]\n'
    )
    config = load_config(tmp_path / "m.toml", environ={}).config
    assert config.proxy_interfaces == (
        ipaddress.ip_address("192.0.2.1"),
        ipaddress.ip_address("2001:db8::1"),
    )
    mine = own_endpoints(config)
    assert {("127.0.0.1", 2525), ("::1", 2526), ("192.0.2.1", 25), ("2001:db8::1", 25)} <= mine
    assert ("127.0.0.1", 25) in mine  # loopback is one of the interfaces of 0.0.0.0
    assert not any(port == 25 and ":" in ip and ip != "2001:db8::1" for ip, port in mine)
    # [::] sockets are IPv6-only (sockets.py): no IPv4 address on port 26.
    assert not any(port == 26 and "." in ip for ip, port in mine)
    with pytest.raises(ConfigError, match=r"'mx\.example' is not an IP address"):
        (tmp_path / "bad.toml").write_text('proxy_interfaces = ["mx.example"]\n')
        load_config(tmp_path / "bad.toml", environ={})


def test_upstream_proxy_settings_reach_the_sessions(tmp_path: Path) -> None:
    off = session_settings(load_config(None, environ={}).config)
    assert off.proxy is None
    path = write(
        tmp_path,
        'smtpd_upstream_proxy_protocol = "haproxy"\n'
        'smtpd_upstream_proxy_hosts = ["10.0.0.0/24", "[2001:db8::5]"]\n',
    )
    proxy = session_settings(load_config(path, environ={}).config).proxy
    assert proxy is not None
    assert proxy.timeout == 5.0  # Postfix's smtpd_upstream_proxy_timeout
    assert proxy.expects_header("10.0.0.9")
    assert proxy.expects_header("::ffff:10.0.0.9")  # a dual-stack socket's form
    assert proxy.expects_header("2001:db8::5")
    assert not proxy.expects_header("10.0.1.9")
    assert not proxy.expects_header("unknown")
    # No hosts: every connection opens with the header, as with Postfix.
    assert UpstreamProxy(timeout=5.0).expects_header("192.0.2.7")


def test_xclient_hosts_reach_the_sessions(tmp_path: Path) -> None:
    assert not session_settings(load_config(None, environ={}).config).may_xclient("127.0.0.1")
    path = write(tmp_path, 'smtpd_authorized_xclient_hosts = ["127.0.0.1/32"]\n')
    settings = session_settings(load_config(path, environ={}).config)
    assert settings.may_xclient("127.0.0.1")
    assert settings.may_xclient("::ffff:127.0.0.1")
    assert not settings.may_xclient("127.0.0.2")
