"""Composition root: builds the parts from the settings and wires them together.

Owns the decisions that need the whole configuration at once: which database
to use (the configured one, or the embedded one under ``state_dir``), and the
small per-subsystem settings objects. Subsystems never see ``MxgateConfig``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mxgate.config import MxgateConfig, split_endpoint
from mxgate.core.retry import RetryPolicy
from mxgate.core.routing import IPAddress, RoutingPolicy
from mxgate.core.snapshot import RoutingData
from mxgate.core.srs_keys import SrsKeyRing, SrsSettings
from mxgate.core.transport import Endpoint, own_endpoint
from mxgate.delivery import CourierConfig, PoolConfig
from mxgate.delivery.bounce import BounceSettings
from mxgate.delivery.scheduler import SchedulerSettings
from mxgate.embedded import EmbeddedPostgres, EmbeddedPostgresError
from mxgate.master import MasterSettings
from mxgate.server.tls import server_context
from mxgate.server.transaction import SessionSettings, UpstreamProxy
from mxgate.syslog_socket import facility_code
from mxgate.worker import WorkerSettings

EMBEDDED_DATABASE = "mail"


def embedded_server(config: MxgateConfig) -> EmbeddedPostgres:
    return EmbeddedPostgres(Path(config.state_dir) / "pgdata")


async def _ensure_database(admin_dsn: str, name: str) -> bool:
    """Create ``name`` on the server if missing; True when it was created."""
    from mxgate.directory.admin import ensure_database

    return await ensure_database(admin_dsn, name)


@contextmanager
def database(config: MxgateConfig, *, prepare: bool = False) -> Iterator[str]:
    """The DSN to use: ``database_url``, else the embedded server.

    The embedded server is started when needed and stopped afterwards only if
    this call started it (a running ``serve`` keeps its server). With
    ``prepare`` a new embedded database gets the schema and the tutorial's
    example data, so the README's first command has something to route.
    """
    if config.database_url:
        yield config.database_url
        return
    server = embedded_server(config)
    if not prepare and not server.initialised():
        # Only serve makes the embedded cluster: any other command run from
        # another directory (state_dir defaults to ./var) would make a new,
        # empty one there, then fail on its missing tables.
        raise EmbeddedPostgresError(
            f"no database_url set, and no embedded database in {server.datadir}:"
            " set database_url, or run this where mxgate serve runs (its state_dir)"
        )
    started_here = server.running_pid() is None
    if started_here:
        print(f"mxgate: starting the embedded PostgreSQL in {server.datadir}", file=sys.stderr)
    server.start()
    try:
        dsn = server.dsn(EMBEDDED_DATABASE)
        created = asyncio.run(_ensure_database(server.dsn(), EMBEDDED_DATABASE))
        if prepare and created:
            from mxgate.directory.admin import prepare_example_database

            asyncio.run(prepare_example_database(dsn))
            print(
                "mxgate: created database 'mail' with the tutorial's example data",
                file=sys.stderr,
            )
        yield dsn
    finally:
        if started_here:
            server.stop()


def cache_path(config: MxgateConfig) -> Path:
    """Where the last good routing snapshot is kept on disk."""
    return Path(config.state_dir) / "snapshot.cache"


def own_endpoints(config: MxgateConfig) -> frozenset[Endpoint]:
    """Where this gateway takes mail, for mail-loop detection: every listen
    endpoint (an unspecified address stands for each interface address of
    its family: ``[::]`` sockets are IPv6-only, sockets.py), and port 25 of
    each proxy_interfaces address (Postfix's proxy_interfaces)."""
    found: set[Endpoint] = set()
    for endpoint in config.listen:
        host, port = split_endpoint(endpoint)
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified:
            found.update(
                own_endpoint(str(other), port)
                for other in _interface_addresses()
                if other.version == ip.version
            )
        else:
            found.add(own_endpoint(str(ip), port))
    found.update(own_endpoint(str(ip), 25) for ip in config.proxy_interfaces)
    return frozenset(found)


def local_addresses(config: MxgateConfig) -> tuple[IPAddress, ...]:
    """The addresses we listen on ("our own address" for postmaster@[ip])."""
    found: list[IPAddress] = []
    for endpoint in config.listen:
        host, _port = split_endpoint(endpoint)
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified:
            found.extend(_interface_addresses())
        else:
            found.append(ip)
    return tuple(dict.fromkeys(found))


def _interface_addresses() -> list[IPAddress]:
    import psutil

    result: list[IPAddress] = []
    for addresses in psutil.net_if_addrs().values():
        for item in addresses:
            try:
                result.append(ipaddress.ip_address(item.address.split("%", 1)[0]))
            except ValueError:
                continue  # MAC addresses and the like
    return result


def routing_policy(config: MxgateConfig) -> RoutingPolicy:
    return RoutingPolicy(
        myhostname=config.hostname,
        mynetworks=config.mynetworks,
        local_addresses=local_addresses(config),
        postmaster=config.postmaster,
        recipient_delimiter=config.recipient_delimiter,
        default_transport=config.default_transport,
        relayhost=config.relayhost,
        node_name=config.node_name,
        node_fallback_to_gateway=config.node_fallback_to_gateway,
        virtual_alias_recursion_limit=config.virtual_alias_recursion_limit,
        virtual_alias_expansion_limit=config.virtual_alias_expansion_limit,
        smtpd_recipient_limit=config.smtpd_recipient_limit,
    )


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    data: RoutingData | None
    source: str  # "database", "disk cache (database unreachable: ...)", "none"


def load_routing(config: MxgateConfig) -> LoadedSnapshot:
    """The routing data for one-shot commands: the database, else the disk copy."""
    from mxgate.directory import DirectoryError, load_snapshot
    from mxgate.directory.cache import CacheFile

    try:
        with database(config) as dsn:
            return LoadedSnapshot(asyncio.run(load_snapshot(dsn)), "database")
    except (DirectoryError, EmbeddedPostgresError) as exc:
        problem = str(exc).splitlines()[0]
    cached = CacheFile(cache_path(config)).read()
    if cached is not None:
        return LoadedSnapshot(cached[0], f"disk cache (database unreachable: {problem})")
    return LoadedSnapshot(None, f"none (database unreachable: {problem}; no disk cache)")


def srs_settings(config: MxgateConfig) -> SrsSettings | None:
    """The SRS settings; None when ``srs_enabled`` is off."""
    if not config.srs_enabled:
        return None
    return SrsSettings(
        domain=(config.srs_domain or config.hostname).lower(),
        overrides=config.srs_alias_domains,
        max_age_days=config.srs_max_age // 86400,
        hash_length=config.srs_hash_length,
        key_grace=float(config.srs_key_grace),
    )


def srs_cache_path(config: MxgateConfig) -> Path:
    """Where the last SRS keys read from the database are kept (mode 0600)."""
    return Path(config.state_dir) / "srs-keys.cache"


@dataclass(frozen=True, slots=True)
class LoadedKeys:
    ring: SrsKeyRing
    source: str  # "database", "disk cache (database unreachable: ...)", "none (...)"


def load_srs_keys(config: MxgateConfig) -> LoadedKeys:
    """The SRS keys for one-shot commands: the database, else the disk copy."""
    from mxgate.directory import DirectoryError, SrsKeyCache, load_keys

    try:
        with database(config) as dsn:
            return LoadedKeys(asyncio.run(load_keys(dsn)), "database")
    except (DirectoryError, EmbeddedPostgresError) as exc:
        problem = str(exc).splitlines()[0]
    cached = SrsKeyCache(srs_cache_path(config)).read()
    if cached is not None:
        return LoadedKeys(cached, f"disk cache (database unreachable: {problem})")
    return LoadedKeys(SrsKeyRing(), f"none (database unreachable: {problem}; no disk cache)")


def session_settings(config: MxgateConfig) -> SessionSettings:
    tls = None
    if config.smtpd_tls_cert_file:
        tls = server_context(config.smtpd_tls_cert_file, config.smtpd_tls_key_file)
    hostname = config.hostname
    return SessionSettings(
        hostname=hostname,
        banner=config.smtpd_banner.replace("$myhostname ", "").replace("$myhostname", hostname),
        message_size_limit=config.message_size_limit,
        smtpd_timeout=float(config.smtpd_timeout),
        hard_error_limit=config.smtpd_hard_error_limit,
        soft_error_limit=config.smtpd_soft_error_limit,
        error_sleep_time=float(config.smtpd_error_sleep_time),
        hopcount_limit=config.hopcount_limit,
        policy=routing_policy(config),
        tls=tls,
        proxy=upstream_proxy(config),
        xclient_hosts=config.smtpd_authorized_xclient_hosts,
    )


def upstream_proxy(config: MxgateConfig) -> UpstreamProxy | None:
    if config.smtpd_upstream_proxy_protocol != "haproxy":
        return None
    return UpstreamProxy(
        timeout=float(config.smtpd_upstream_proxy_timeout),
        hosts=config.smtpd_upstream_proxy_hosts,
    )


def syslog_facility(config: MxgateConfig) -> int | None:
    """The facility code of ``syslog_facility``; None when syslog is off."""
    return facility_code(config.syslog_facility) if config.syslog_facility else None


def worker_settings(config: MxgateConfig, dsn: str) -> WorkerSettings:
    """Everything one SMTP worker needs. Raises OSError/ssl.SSLError on bad TLS files."""
    return WorkerSettings(
        session=session_settings(config),
        endpoints=[split_endpoint(item) for item in config.listen],
        per_client_limit=config.smtpd_client_connection_count_limit,
        dsn=dsn,
        cache_path=cache_path(config),
        reload_interval=float(config.snapshot_reload_interval),
        spool_dir=Path(config.spool_dir),
        srs=srs_settings(config),
        srs_cache_path=srs_cache_path(config),
        maillog_file=config.maillog_file,
        syslog_facility=syslog_facility(config),
        syslog_socket=config.syslog_socket,
        busy_poll=config.smtpd_busy_poll / 1_000_000,
    )


def master_settings(config: MxgateConfig, dsn: str) -> MasterSettings:
    """What the master's queue manager needs."""
    hostname = config.hostname
    nameservers: list[str] = []
    dns_port = 53
    for endpoint in config.dns_nameservers:
        host, dns_port = split_endpoint(endpoint)
        nameservers.append(host)
    return MasterSettings(
        hostname=hostname,
        dsn=dsn,
        cache_path=Path(config.state_dir) / "qmgr-snapshot.cache",
        reload_interval=float(config.snapshot_reload_interval),
        spool_dir=Path(config.spool_dir),
        pid_file=Path(config.state_dir) / "mxgate.pid",
        policy=routing_policy(config),
        courier=CourierConfig(
            helo_name=hostname,
            smtp_tls_security_level=config.smtp_tls_security_level,  # type: ignore[arg-type]
            recipient_limit=config.default_destination_recipient_limit,
            myself=own_endpoints(config),
            pool=PoolConfig(destination_concurrency=config.default_destination_concurrency_limit),
        ),
        nameservers=tuple(nameservers),
        dns_port=dns_port,
        scheduler=SchedulerSettings(
            bounce=BounceSettings(hostname=hostname, postmaster=config.postmaster),
            retry=RetryPolicy(
                minimal_backoff_time=float(config.minimal_backoff_time),
                maximal_backoff_time=float(config.maximal_backoff_time),
                maximal_queue_lifetime=float(config.maximal_queue_lifetime),
                bounce_queue_lifetime=float(config.bounce_queue_lifetime),
                delay_warning_time=float(config.delay_warning_time),
            ),
            queue_run_delay=float(config.queue_run_delay),
            delay_decimals=config.delay_logging_resolution_limit,
        ),
        srs=srs_settings(config),
        srs_cache_path=srs_cache_path(config),
        change_log_retention=config.change_log_retention,
        metrics_listen=split_endpoint(config.metrics_listen) if config.metrics_listen else None,
        maillog_file=config.maillog_file,
        syslog_facility=syslog_facility(config),
        syslog_socket=config.syslog_socket,
        delivery_nice=config.delivery_nice,
    )
