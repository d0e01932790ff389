"""Settings: one TOML file plus ``MXGATE_*`` environment variables.

Owns the list of every setting (name, kind, default, meaning), reading and
validating them, and telling where each effective value came from (for
``mxgate config show``). Names are Postfix's where Postfix has the parameter,
so an administrator's habits carry over; values use Postfix's syntax too
(``5d``, ``300s``; ``[::1]/128`` in mynetworks).

Precedence: default < file < environment. Errors name the file (or variable),
the key and the reason; nothing here exits, the CLI turns ``ConfigError`` into
a message and a non-zero status. Only ``app.py`` and ``cli`` import this module.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mxgate import config_srs as srs_values
from mxgate.syslog_socket import facility_code

DEFAULT_CONFIG_FILE = Path("/etc/mxgate/mxgate.toml")
ENV_PREFIX = "MXGATE_"
# MXGATE_ variables that are not settings: where the file is, and the build's
# switch to plain Python (scripts/build-native).
TOOLING_VARIABLES = frozenset({"MXGATE_CONFIG", "MXGATE_PURE"})


class ConfigError(Exception):
    """A setting is unknown or has a value we cannot use."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Postfix time units (postconf(5) "time units"): s, m, h, d, w; bare number = seconds.
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME_RE = re.compile(r"^\s*([0-9]+)\s*([smhdw]?)\s*$")  # ASCII digits, not any Unicode Nd
# Longer than any queue lifetime or key grace means a typo; far longer would
# overflow the C time functions later (a traceback instead of this error).
MAX_DURATION = 100 * 365 * 86400


def parse_duration(value: object) -> int:
    """Seconds from ``300``, ``"300s"``, ``"5d"``... (Postfix syntax)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 300s or 5d")
    seconds: int | None = None
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        seconds = value
    elif isinstance(value, str):
        match = _TIME_RE.match(value)
        if match:
            seconds = int(match.group(1)) * _TIME_UNITS[match.group(2) or "s"]
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration (a number with unit s, m, h, d or w)")
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than 100 years")
    return seconds


def parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    if isinstance(value, int):
        result = value
    elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        result = int(value)
    else:
        raise ValueError(f"{value!r} is not a whole number")
    if result < 0:
        raise ValueError("must not be negative")
    return result


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "on", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"{value!r} is not yes/no")


def parse_str(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    raise ValueError(f"{value!r} is not a string")


def parse_database_url(value: object) -> str:
    """A ``postgresql://`` URL (hosts separated by commas, each with an
    optional port), or empty for the embedded database. Checked here so that
    a typo is one settings error, not a traceback from every database command.
    The URL itself is never repeated in the message: it may hold a password."""
    url = parse_str(value)
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must start with postgresql://")
    for host in parts.netloc.rpartition("@")[2].split(","):
        if host.startswith("["):
            _, bracket, port = host.partition("]")
            if not bracket or (port and not port.startswith(":")):
                raise ValueError("a bracketed IPv6 host must be [address] or [address]:port")
            port = port[1:]
        else:
            port = host.partition(":")[2]
        if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 0 < int(port) < 65536):
            raise ValueError(f"port {port!r} is not a number from 1 to 65535")
    return url


def _as_list(value: object) -> list[str]:
    # TOML arrays, or Postfix-style "a, b c" strings (the form env vars use).
    if isinstance(value, str):
        return [item for item in re.split(r"[\s,]+", value) if item]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    raise ValueError(f"{value!r} is not a list of strings")


def parse_line(value: object) -> str:
    """A string that goes into an SMTP reply or a header: one line, no
    control characters (a newline in the banner would end the greeting early
    and make the rest look like another reply)."""
    text = parse_str(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{text!r} contains a control character")
    return text


def parse_hostname(value: object) -> str:
    """``myhostname``: a host name in ASCII (IDNA A-labels), as it goes into
    the greeting, HELO and Received:; '' means the machine's name."""
    text = parse_str(value)
    if text and not _HOSTNAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a host name (letters, digits, '-' and dots)")
    return text


_HOSTNAME = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


def parse_str_list(value: object) -> tuple[str, ...]:
    return tuple(_as_list(value))


def parse_networks(value: object) -> tuple[Network, ...]:
    """CIDR list; Postfix's ``[::1]/128`` bracket form is accepted."""
    networks: list[Network] = []
    for item in _as_list(value):
        text = re.sub(r"^\[([^\]]*)\]", r"\1", item)
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or CIDR network") from None
    return tuple(networks)


def parse_addresses(value: object) -> tuple[IPAddress, ...]:
    """IP address list; ``[::1]`` brackets are accepted."""
    addresses: list[IPAddress] = []
    for item in _as_list(value):
        text = re.sub(r"^\[([^\]]*)\]$", r"\1", item)
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address") from None
    return tuple(addresses)


def parse_endpoints(value: object) -> tuple[str, ...]:
    """``host:port`` list; IPv6 hosts in brackets (``[::1]:25``)."""
    endpoints = _as_list(value)
    for item in endpoints:
        split_endpoint(item)
    return tuple(endpoints)


def parse_listen(value: object) -> tuple[str, ...]:
    """``listen``: at least one endpoint (none would be a gateway that runs,
    says it started, and takes no mail)."""
    endpoints = parse_endpoints(value)
    if not endpoints:
        raise ValueError("give at least one host:port")
    return endpoints


def split_endpoint(text: str) -> tuple[str, int]:
    match = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^\[\]:]*)):([0-9]{1,5})$", text)
    if not match or not 0 < int(match.group(3)) < 65536:
        raise ValueError(f"{text!r} is not host:port (IPv6 as [addr]:port)")
    host = match.group(1) or match.group(2) or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if match.group(1) or host != "localhost":
            raise ValueError(f"{text!r}: the host must be an IP address") from None
        host = "127.0.0.1"
    return host, int(match.group(3))


def parse_optional_endpoint(value: object) -> str:
    """``host:port``, or empty for none."""
    text = parse_str(value)
    if text:
        split_endpoint(text)
    return text


def parse_log_level(value: object) -> str:
    text = parse_str(value).lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{text!r} is not one of debug, info, warning, error")
    return text


@dataclass(frozen=True, slots=True)
class Setting:
    parse: Callable[[object], Any]
    help: str


def _default_hostname() -> str:
    name = socket.getfqdn()
    return name if "." in name else "localhost.localdomain"


@dataclass(frozen=True, slots=True)
class MxgateConfig:
    """Every effective setting. Subsystems get only the fields they need (app.py)."""

    # Identity and policy (Postfix names).
    myhostname: str = ""
    mynetworks: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    postmaster: str = ""
    recipient_delimiter: str = "+"
    node_name: str = ""
    node_fallback_to_gateway: bool = False
    # Routing.
    default_transport: str = "smtp:"
    relayhost: str = ""
    virtual_alias_recursion_limit: int = 1000
    virtual_alias_expansion_limit: int = 1000
    # SMTP server.
    listen: tuple[str, ...] = ("127.0.0.1:2525",)
    proxy_interfaces: tuple[IPAddress, ...] = ()
    smtpd_banner: str = "$myhostname ESMTP mxgate"
    message_size_limit: int = 30720000
    smtpd_recipient_limit: int = 1000
    smtpd_timeout: int = 300
    smtpd_hard_error_limit: int = 20
    smtpd_soft_error_limit: int = 10
    smtpd_error_sleep_time: int = 1
    smtpd_client_connection_count_limit: int = 50
    smtpd_tls_cert_file: str = ""
    smtpd_tls_key_file: str = ""
    smtpd_upstream_proxy_protocol: str = ""
    smtpd_upstream_proxy_timeout: int = 5
    smtpd_upstream_proxy_hosts: tuple[Network, ...] = ()
    smtpd_authorized_xclient_hosts: tuple[Network, ...] = ()
    hopcount_limit: int = 50
    workers: int = 0
    delivery_nice: int = 10
    smtpd_busy_poll: int = 200
    # Queue and delivery.
    spool_dir: str = "var/spool"
    maximal_queue_lifetime: int = 5 * 86400
    bounce_queue_lifetime: int = 5 * 86400
    minimal_backoff_time: int = 300
    maximal_backoff_time: int = 4000
    queue_run_delay: int = 300
    delay_warning_time: int = 0
    default_destination_concurrency_limit: int = 20
    default_destination_recipient_limit: int = 50
    smtp_tls_security_level: str = "may"
    dns_nameservers: tuple[str, ...] = ()
    # Sender Rewriting Scheme (issue 8).
    srs_enabled: bool = True
    srs_domain: str = ""
    srs_domain_overrides: tuple[str, ...] = ()
    srs_max_age: int = 21 * 86400
    srs_hash_length: int = 4
    srs_key_grace: int = 30 * 86400
    # Database and state.
    database_url: str = ""
    state_dir: str = "var"
    snapshot_reload_interval: int = 60
    change_log_retention: int = 7 * 86400
    # Logs: the mail log (always on) and the diagnostics.
    maillog_file: str = ""
    syslog_facility: str = ""
    delay_logging_resolution_limit: int = 2
    syslog_socket: str = "/dev/log"
    log_level: str = "info"
    metrics_listen: str = ""

    @property
    def hostname(self) -> str:
        """``myhostname``, or the machine's name when it is not set."""
        return self.myhostname or _default_hostname()

    @property
    def srs_alias_domains(self) -> tuple[tuple[str, str], ...]:
        """``srs_domain_overrides`` as (alias domain, SRS domain) pairs."""
        return tuple(srs_values.split_override(item) for item in self.srs_domain_overrides)


def _tls_level(value: object) -> str:
    text = parse_str(value)
    if text not in ("none", "may", "encrypt"):
        raise ValueError(f"{text!r} is not one of none, may, encrypt")
    return text


def _proxy_protocol(value: object) -> str:
    text = parse_str(value)
    if text not in ("", "haproxy"):
        raise ValueError(f"{text!r} is not haproxy (or empty: no proxy)")
    return text


def _proxy_timeout(value: object) -> int:
    seconds = parse_duration(value)
    if seconds < 1:
        raise ValueError("must be at least 1s")
    return seconds


def _nice(value: object) -> int:
    increment = parse_int(value)
    if increment > 19:
        raise ValueError("must be at most 19 (the range of nice values)")
    return increment


def _busy_poll(value: object) -> int:
    micros = parse_int(value)
    if micros > 10_000:
        raise ValueError("must be at most 10000 (microseconds)")
    return micros


def _decimals(value: object) -> int:
    digits = parse_int(value)
    if digits > 6:
        raise ValueError("must be 0 to 6 (Postfix's range: microseconds at most)")
    return digits


def _facility(value: object) -> str:
    text = parse_str(value).lower()
    if text:
        facility_code(text)  # ValueError names the facilities
    return text


def _delimiter(value: object) -> str:
    text = parse_str(value)
    if len(text) > 1 or text in ("@", ".", '"'):
        raise ValueError('must be one character other than @ . " (or empty to disable)')
    return text


SETTINGS: dict[str, Setting] = {
    "myhostname": Setting(parse_hostname, "name in the banner, HELO and Received: (default: FQDN)"),
    "mynetworks": Setting(parse_networks, "clients that may relay anywhere (CIDR list)"),
    "postmaster": Setting(parse_str, "where mail to postmaster goes (RFC 5321 4.5.1)"),
    "recipient_delimiter": Setting(_delimiter, "separates an address extension: user+ext"),
    "node_name": Setting(parse_str, "empty: gateway role; else the node whose transports apply"),
    "node_fallback_to_gateway": Setting(parse_bool, "node role: use gateway transport rows too"),
    "default_transport": Setting(parse_str, "transport for domains that are not ours"),
    "relayhost": Setting(parse_str, "next hop for domains that are not ours (beats default)"),
    "virtual_alias_recursion_limit": Setting(parse_int, "forward expansion depth limit"),
    "virtual_alias_expansion_limit": Setting(parse_int, "forward expansion fan-out limit"),
    "listen": Setting(parse_listen, "addresses the SMTP server listens on (host:port)"),
    "proxy_interfaces": Setting(
        parse_addresses,
        "addresses where a proxy or NAT passes port 25 to this gateway (mail loop detection)",
    ),
    "smtpd_banner": Setting(parse_line, "text after 220 in the greeting"),
    "message_size_limit": Setting(parse_int, "largest message in bytes (SIZE)"),
    "smtpd_recipient_limit": Setting(parse_int, "recipients per message"),
    "smtpd_timeout": Setting(parse_duration, "idle time before a client is dropped (421)"),
    "smtpd_hard_error_limit": Setting(parse_int, "errors before a client is disconnected"),
    "smtpd_soft_error_limit": Setting(parse_int, "errors before replies are delayed"),
    "smtpd_error_sleep_time": Setting(
        parse_duration, "reply delay past smtpd_soft_error_limit errors (0: none)"
    ),
    "smtpd_client_connection_count_limit": Setting(
        parse_int, "connections per client IP, over all SMTP workers (0: no limit)"
    ),
    "smtpd_tls_cert_file": Setting(parse_str, "PEM certificate chain; enables STARTTLS"),
    "smtpd_tls_key_file": Setting(parse_str, "PEM private key for STARTTLS"),
    "smtpd_upstream_proxy_protocol": Setting(
        _proxy_protocol, "haproxy: connections open with a PROXY header (v1 or v2)"
    ),
    "smtpd_upstream_proxy_timeout": Setting(_proxy_timeout, "time allowed for the PROXY header"),
    "smtpd_upstream_proxy_hosts": Setting(
        parse_networks, "proxies whose PROXY header is awaited (empty: every client's)"
    ),
    "smtpd_authorized_xclient_hosts": Setting(
        parse_networks, "clients that may say who the client is with XCLIENT (CIDR list)"
    ),
    "hopcount_limit": Setting(parse_int, "Received: headers before a message is a loop"),
    "workers": Setting(parse_int, "SMTP worker processes (0: one per core less one, at least one)"),
    "smtpd_busy_poll": Setting(
        _busy_poll, "longest poll (µs) of a worker's loop for the next command, adaptive (0: off)"
    ),
    "delivery_nice": Setting(
        _nice, "how much lower the queue manager's CPU priority is than the workers' (0-19)"
    ),
    "spool_dir": Setting(parse_str, "queue directory"),
    "maximal_queue_lifetime": Setting(parse_duration, "time in queue before a bounce"),
    "bounce_queue_lifetime": Setting(parse_duration, "time in queue for a bounce"),
    "minimal_backoff_time": Setting(parse_duration, "least time between delivery attempts"),
    "maximal_backoff_time": Setting(parse_duration, "most time between delivery attempts"),
    "queue_run_delay": Setting(parse_duration, "how often the deferred queue is scanned"),
    "delay_warning_time": Setting(parse_duration, "send a delay warning after (0: never)"),
    "default_destination_concurrency_limit": Setting(parse_int, "connections per next hop"),
    "default_destination_recipient_limit": Setting(parse_int, "recipients per transaction"),
    "smtp_tls_security_level": Setting(_tls_level, "outbound TLS: none, may or encrypt"),
    "dns_nameservers": Setting(parse_endpoints, "DNS servers for MX lookups (host:port)"),
    "srs_enabled": Setting(parse_bool, "rewrite forwarded senders with SRS, accept SRS bounces"),
    "srs_domain": Setting(
        lambda v: srs_values.domain_name(parse_str(v)),
        "domain of SRS addresses (default: myhostname)",
    ),
    "srs_domain_overrides": Setting(
        lambda v: srs_values.overrides(_as_list(v)),
        "ALIAS=SRS-DOMAIN: forwards for ALIAS use that SRS domain",
    ),
    "srs_max_age": Setting(
        lambda v: srs_values.max_age(parse_duration(v)), "how long an SRS address stays valid"
    ),
    "srs_hash_length": Setting(
        lambda v: srs_values.hash_length(parse_int(v)), "characters of the SRS hash (4-27)"
    ),
    "srs_key_grace": Setting(parse_duration, "how long a retired SRS key still verifies"),
    "database_url": Setting(parse_database_url, "PostgreSQL URL (empty: embedded database)"),
    "state_dir": Setting(parse_str, "embedded database and snapshot cache directory"),
    "snapshot_reload_interval": Setting(
        parse_duration, "full reload period when the database has no change log"
    ),
    "change_log_retention": Setting(
        parse_duration, "age after which the gateway deletes change-log entries (0: never)"
    ),
    "maillog_file": Setting(
        parse_str, "file the mail log is appended to (empty: stderr, with the diagnostics)"
    ),
    "syslog_facility": Setting(
        _facility, "send the mail log to syslog with this facility, e.g. mail (empty: do not)"
    ),
    "syslog_socket": Setting(parse_str, "the local syslog daemon's socket"),
    "delay_logging_resolution_limit": Setting(
        _decimals, "most digits after the point in logged delays (0-6, as Postfix)"
    ),
    "log_level": Setting(parse_log_level, "diagnostic log on stderr: debug, info, warning, error"),
    "metrics_listen": Setting(
        parse_optional_endpoint, "host:port for /metrics, /healthz, /readyz (empty: none)"
    ),
}

_FIELD_NAMES = {f.name for f in fields(MxgateConfig)}
assert set(SETTINGS) == _FIELD_NAMES, "every setting needs a field and a description"


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The effective settings and where each non-default came from."""

    config: MxgateConfig
    sources: Mapping[str, str]
    file: Path | None


def _parse_all(raw: Mapping[str, object], origin: Callable[[str], str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        setting = SETTINGS.get(key)
        if setting is None:
            raise ConfigError(f"{origin(key)}: unknown setting {key!r}")
        try:
            values[key] = setting.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{origin(key)}: bad value for {key!r}: {exc}") from None
    return values


def _read_file(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}), so not TOML") from None
    for key, value in data.items():
        if isinstance(value, dict):
            raise ConfigError(f"{path}: unknown section [{key}] (settings are top-level keys)")
    return data


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Defaults, then the file (``path``, or the default file when present), then env.

    An explicitly named file must exist; the default one is optional.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("MXGATE_CONFIG"):
        path = Path(env["MXGATE_CONFIG"])
    if path is None and DEFAULT_CONFIG_FILE.exists():
        path = DEFAULT_CONFIG_FILE
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    if path is not None:
        file_values = _parse_all(_read_file(path), lambda _key: str(path))
        values.update(file_values)
        sources.update({key: str(path) for key in file_values})
    env_raw = {
        name[len(ENV_PREFIX) :].lower(): value
        for name, value in env.items()
        if name.startswith(ENV_PREFIX)
        and name not in TOOLING_VARIABLES
        # MXGATE_TEST_* belong to the test suite, not to the gateway.
        and not name.startswith("MXGATE_TEST_")
    }
    env_values = _parse_all(env_raw, lambda key: f"environment {ENV_PREFIX}{key.upper()}")
    values.update(env_values)
    sources.update({key: f"{ENV_PREFIX}{key.upper()}" for key in env_values})
    return LoadedConfig(config=MxgateConfig(**values), sources=sources, file=path)


def format_value(value: object) -> str:
    """A value as it would be written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_value(str(item)) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def show_lines(loaded: LoadedConfig, only_changed: bool = False) -> list[str]:
    """``name = value`` lines, non-defaults marked with where they were set."""
    defaults = MxgateConfig()
    lines = []
    for name in SETTINGS:
        value = getattr(loaded.config, name)
        changed = name in loaded.sources and value != getattr(defaults, name)
        if only_changed and not changed:
            continue
        line = f"{name} = {format_value(value)}"
        if changed:
            line += f"    # set by {loaded.sources[name]}"
        lines.append(line)
    return lines
