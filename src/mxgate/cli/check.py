"""``mxgate check``: the consistency report of the routing rows.

Reads the five tables as stored (original case) and prints the findings of
``mxgate.core.check`` grouped by severity, or one JSON document. Exits 1
when any finding is an error, so that a deployment step can run it as a
guard; warnings and infos alone exit 0.
"""

from __future__ import annotations

import typer
from rich.text import Text

from mxgate.app import own_endpoints
from mxgate.cli.common import ConfigOption, settings
from mxgate.cli.manage.output import JsonOpt, console, echo_json, on_database, refusals
from mxgate.core.check import SEVERITY_ORDER, CheckSettings, Severity, check, summary
from mxgate.core.rules import ExpansionSettings
from mxgate.directory.manage import load_raw


def check_cmd(config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """Forward loops and dead ends, domains without routes, dead and ambiguous rows."""
    loaded = settings(config)
    options = CheckSettings(
        expansion=ExpansionSettings(
            delimiter=loaded.config.recipient_delimiter,
            postmaster=loaded.config.postmaster,
            recursion_limit=loaded.config.virtual_alias_recursion_limit,
            expansion_limit=loaded.config.virtual_alias_expansion_limit,
        ),
        node_name=loaded.config.node_name,
        node_fallback_to_gateway=loaded.config.node_fallback_to_gateway,
        myself=own_endpoints(loaded.config),
        default_transport=loaded.config.default_transport,
        relayhost=loaded.config.relayhost,
    )
    with refusals():
        rows = on_database(config, load_raw)
    findings = check(rows, options)
    counts = summary(findings)
    if as_json:
        echo_json(
            {
                "role": f"node {options.node_name}" if options.node_name else "gateway",
                "summary": counts,
                "findings": [
                    {
                        "severity": f.severity.value,
                        "kind": f.kind,
                        "table": f.table,
                        "key": f.key,
                        "message": f.message,
                    }
                    for f in findings
                ],
            }
        )
    else:
        out = console()
        for severity in SEVERITY_ORDER:
            group = [f for f in findings if f.severity is severity]
            if not group:
                continue
            out.print(Text(f"{severity.value.upper()}S ({len(group)})", style="bold"))
            for finding in group:
                out.print(Text(f"  [{finding.kind}] {finding.message}"))
            out.print()
        rows_checked = sum(
            len(t)
            for t in (rows.domains, rows.mailboxes, rows.relays, rows.forwards, rows.transports)
        )
        out.print(
            Text(
                f"{rows_checked} rows checked: {counts['error']} error(s),"
                f" {counts['warning']} warning(s), {counts['info']} info"
            )
        )
    if any(f.severity is Severity.ERROR for f in findings):
        raise typer.Exit(1)
