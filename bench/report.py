"""BENCHMARKS.md, the comparison chart and the console table, from results.json.

``python bench/report.py [bench/results.json]`` redraws both from a results file
without running anything.
"""

# ruff: noqa: RUF001  (the report uses typographic signs on purpose)
from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

ACCEPT_TARGET = 6.0
REJECT_TARGET = 100.0
E2E_TARGET = 4.0
E2E_CONCURRENCY = (10, 50)
RCPT_P99_TARGET_MS = 1.0
QUICK_NOTE = "quick mode: a tenth of the mailboxes, fewer and shorter runs"
SYSTEMS = {
    "postfix": "Postfix (tutorial)",
    "mxgate": "mxgate",
    "limit": "loopback limit (smtp-source → smtp-sink)",
}


def num(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return "–"
    if digits is None:
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def mib(value: float | None) -> str:
    return "–" if not value else f"{value / 1024 / 1024:,.0f} MiB"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def workload(row: dict[str, Any]) -> str:
    return f"c={row['concurrency']}, {row['rcpts']} rcpt"


# -- console -----------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    s = results["summary"]
    out = [
        "medians, messages/s   accept: Postfix  mxgate   limit  mx/pf mx/lim |"
        "   e2e: Postfix  mxgate   limit  mx/pf mx/lim",
    ]
    for row in s["throughput"]:
        pf, mx, lim = row["postfix"], row["mxgate"], row["limit"]
        out.append(
            f"{workload(row):<22}{num(pf['accept_rate']):>14}{num(mx['accept_rate']):>8}"
            f"{num(lim['accept_rate']):>8}{times(row['accept_mx_over_pf']):>7}"
            f"{times(row['accept_mx_over_limit']):>7} |{num(pf['e2e_rate']):>14}"
            f"{num(mx['e2e_rate']):>8}{num(lim['e2e_rate']):>8}"
            f"{times(row['e2e_mx_over_pf']):>7}{times(row['e2e_mx_over_limit']):>7}"
        )
    r = s["reject"]
    out.append(
        f"unknown-recipient rejections/s: Postfix {num(r['postfix']['reject_rate'])}, "
        f"mxgate {num(r['mxgate']['reject_rate'])} ({times(r['mx_over_pf'])})"
    )
    e = s["edits"]
    out.append(
        f"edit in force (median): Postfix {ms(sec_ms(e['postfix']['median_s']))} ms, "
        f"mxgate {ms(sec_ms(e['mxgate']['median_s']))} ms"
    )
    o = s["outage"]
    out.append(
        "PostgreSQL stopped, valid recipients accepted: "
        + ", ".join(f"{k} {v['fraction_accepted']:.1%}" for k, v in o.items())
    )
    return "\n".join(out)


def sec_ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


# -- chart --------------------------------------------------------------------------


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["summary"]["throughput"]
    labels = [f"c={r['concurrency']}\n{r['rcpts']} rcpt" for r in rows]
    colours = {"postfix": "#c44e52", "mxgate": "#4c72b0", "limit": "#8c8c8c"}
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [3, 3, 1.3]})
    width = 0.27
    for ax, metric, title in (
        (axes[0], "accept_rate", "accept rate (250 after DATA)"),
        (axes[1], "e2e_rate", "end-to-end rate (all at the sinks)"),
    ):
        for i, system in enumerate(("postfix", "mxgate", "limit")):
            values = [r[system][metric] or 0 for r in rows]
            xs = [x + (i - 1) * width for x in range(len(rows))]
            bars = ax.bar(xs, values, width, label=SYSTEMS[system], color=colours[system])
            if system == "mxgate":
                for bar, r in zip(bars, rows, strict=True):
                    ratio = r["accept_mx_over_pf" if metric == "accept_rate" else "e2e_mx_over_pf"]
                    if ratio:
                        ax.annotate(
                            times(ratio),
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center",
                            va="bottom",
                            fontsize=8,
                        )
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylabel("messages/s (log scale; medians)")
        ax.set_title(title)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(
        handles,
        [*labels_[:2], labels_[2] + "   (labels: mxgate/Postfix)"],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.94),
        ncol=3,
        fontsize=9,
        frameon=False,
    )
    rej = results["summary"]["reject"]
    values = [rej["postfix"]["reject_rate"] or 0, rej["mxgate"]["reject_rate"] or 0]
    bars = axes[2].bar(["Postfix", "mxgate"], values, color=[colours["postfix"], colours["mxgate"]])
    for bar, v in zip(bars, values, strict=True):
        axes[2].annotate(
            num(v),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes[2].set_yscale("log")
    axes[2].set_title("unknown-recipient\nrejections/s")
    axes[2].grid(axis="y", which="both", alpha=0.3)
    meta = results["meta"]
    fig.suptitle(
        f"mxgate vs the tutorial's Postfix + PostgreSQL, {meta['scale']['mailboxes']:,} "
        f"mailboxes, 4 KiB messages, {meta['date']}" + (" (--quick)" if meta["quick"] else ""),
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- markdown ----------------------------------------------------------------------------


KEEP_MARKER = "<!-- sections below are kept when this file is regenerated -->"


def write_markdown(results: dict[str, Any], path: Path, chart: Path, results_file: Path) -> None:
    """Write the comparison; keep the hand-kept sections after KEEP_MARKER (the
    other benchmarks' results: routing, spool commit, import/export)."""
    base = path.resolve().parent
    kept = ""
    if path.exists():
        old = path.read_text()
        if KEEP_MARKER in old:
            kept = "\n" + KEEP_MARKER + old.split(KEEP_MARKER, 1)[1]
    path.write_text(
        markdown(
            results,
            Path(os.path.relpath(chart.resolve(), base)),
            Path(os.path.relpath(results_file.resolve(), base)),
        )
        + kept
    )


def cf_text(name: str) -> str:
    text = (BENCH_DIR / "postfix" / "pgsql" / name).read_text()
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(("query", "    ")) and not line.startswith("#")
    )


def markdown(results: dict[str, Any], chart: Path, results_file: Path) -> str:
    meta = results["meta"]
    m = meta["machine"]
    worker_count = m.get("mxgate_workers", 2)  # runs before it was recorded had two
    s = results["summary"]
    plan = meta["plan"]
    scale = meta["scale"]
    rows = s["throughput"]
    rej = s["reject"]
    edits = s["edits"]
    outage = s["outage"]
    memory = s["memory"]
    quick = meta["quick"]
    L: list[str] = []
    add = L.append

    add("# Benchmarks: mxgate against the tutorial's Postfix + PostgreSQL gateway")
    add("")
    add(
        f"Run of **{meta['date']}** with `{meta.get('command', 'bench/run.sh')}`"
        f" ({QUICK_NOTE if quick else 'full run'};"
        f" {meta['wall_s'] / 60:.0f} minutes). Every number below was printed by that run and"
        f" is in [`{results_file}`]({results_file}). **The machine is a shared 2-core VM:** other"
        " engineers' work may run on it at the same time, so single runs are noisy; the"
        " systems were run interleaved (Postfix, mxgate, limit, in an order that"
        f" rotates each round), {plan['reps']} rounds, and the tables give medians."
    )
    add("")
    add(f"![comparison]({chart})")
    add("")

    # -- targets
    add("## Against the targets")
    add("")
    add("| target | measured (medians, same run) | verdict |")
    add("|---|---|---|")
    acc = [r["accept_mx_over_pf"] for r in rows if r["accept_mx_over_pf"]]
    # Issue #5 sets its end-to-end target at 10 and 50 sessions; c=1 is shown apart.
    e2e = [
        r["e2e_mx_over_pf"]
        for r in rows
        if r["e2e_mx_over_pf"] and r["concurrency"] in E2E_CONCURRENCY
    ]
    e2e_c1 = [
        f"{times(r['e2e_mx_over_pf'])} ({r['rcpts']} rcpt)"
        for r in rows
        if r["e2e_mx_over_pf"] and r["concurrency"] not in E2E_CONCURRENCY
    ]
    add(
        f"| durable accept rate ≥ {ACCEPT_TARGET:g}× Postfix's | "
        f"{times(min(acc)) if acc else '–'} to {times(max(acc)) if acc else '–'} over the six "
        f"workloads{floor_apart_note(results, rows)} | "
        f"{verdict(bool(acc) and min(acc) >= ACCEPT_TARGET)}"
        f"{partial(acc, ACCEPT_TARGET)} |"
    )
    add(
        f"| end-to-end rate ≥ {E2E_TARGET:g}× Postfix's (at 10 and 50 sessions) | "
        f"{times(min(e2e)) if e2e else '–'} to {times(max(e2e)) if e2e else '–'} over the four "
        f"workloads (c=1, not part of this target: {', '.join(e2e_c1) or '–'}) | "
        f"{verdict(bool(e2e) and min(e2e) >= E2E_TARGET)}{partial(e2e, E2E_TARGET)} |"
    )
    add(
        f"| unknown-recipient rejections ≥ {REJECT_TARGET:g}× Postfix's | "
        f"{num(rej['mxgate']['reject_rate'])}/s vs {num(rej['postfix']['reject_rate'])}/s = "
        f"{times(rej['mx_over_pf'])} | "
        f"{verdict(rej['mx_over_pf'] is not None and rej['mx_over_pf'] >= REJECT_TARGET)} |"
    )
    p99 = {
        r["concurrency"]: r["mxgate"]["rcpt_p99_ms"]
        for r in rows
        if r["rcpts"] == 1 and r["mxgate"].get("rcpt_p99_ms") is not None
    }
    lat = s.get("latency", {})
    lat_mx = lat.get("mxgate", {})
    lat_p99 = lat_mx.get("rcpt_p99_ms")
    saturated = ", ".join(f"{ms(v)} ms at c={c}" for c, v in p99.items())
    all_saturated = verdict(bool(p99) and all(v < RCPT_P99_TARGET_MS for v in p99.values()))
    if lat_p99 is not None:
        measured = (
            f"{ms(lat_p99)} ms at {lat_mx['rate']:g} messages/s offered over"
            f" {lat_mx['concurrency']} sessions (Postfix:"
            f" {ms(lat.get('postfix', {}).get('rcpt_p99_ms'))} ms"
            + (
                f"; the floor, in the same minutes: {ms(lat['floor'].get('rcpt_p99_ms'))} ms"
                if "floor" in lat
                else ""
            )
            + ")"
            + (f"; saturated throughput runs: {saturated}" if p99 else "")
        )
        judged = f"{verdict(lat_p99 < RCPT_P99_TARGET_MS)} at that load" + (
            f", {all_saturated} at saturation" if p99 else ""
        )
    else:
        measured = saturated
        judged = (
            f"{verdict(p99.get(1) is not None and p99[1] < RCPT_P99_TARGET_MS)} at c=1,"
            f" {all_saturated} under load"
        )
    target = f"RCPT reply p99 < {RCPT_P99_TARGET_MS:g} ms (seen by the client)"
    add(f"| {target} | {measured} | {judged} |")
    cpu_pf = [r["postfix"]["cpu_s_per_1000"] for r in rows if r["rcpts"] == 1]
    cpu_mx = [r["mxgate"]["cpu_s_per_1000"] for r in rows if r["rcpts"] == 1]
    add(
        "| CPU s per 1000 messages, both recorded | Postfix + PostgreSQL "
        + "/".join(num(v) for v in cpu_pf)
        + " s, mxgate + PostgreSQL "
        + "/".join(num(v) for v in cpu_mx)
        + " s (1 rcpt, c=1/10/50) | recorded |"
    )
    add("")

    # -- main table
    add("## Throughput (4 KiB messages, client outside mynetworks, one message per connection)")
    add("")
    add(
        "Messages per second, medians. *accept*: messages answered 250 after DATA per second"
        " of load (both gateways fsync before that reply); *e2e*: messages accepted divided by"
        " the time from the first connection until the smtp-sink next hops had every one of"
        " them. The limit is `smtp-source` → `smtp-sink` directly (no gateway), where accept"
        " and e2e are the same thing. With 5 recipients, recipients/s are 5× the figures."
    )
    add("")
    add(
        "| workload | Postfix accept | mxgate accept | limit | mxgate/Postfix | mxgate/limit"
        " | Postfix e2e | mxgate e2e | mxgate/Postfix | mxgate/limit |"
    )
    add("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        pf, mx, lim = r["postfix"], r["mxgate"], r["limit"]
        add(
            f"| {workload(r)} | {num(pf['accept_rate'])} | {num(mx['accept_rate'])} | "
            f"{num(lim['accept_rate'])} | {times(r['accept_mx_over_pf'])} | "
            f"{times(r['accept_mx_over_limit'])} | {num(pf['e2e_rate'])}"
            f"{'' if pf['all_e2e_complete'] else ' †'} | {num(mx['e2e_rate'])}"
            f"{'' if mx['all_e2e_complete'] else ' †'} | {times(r['e2e_mx_over_pf'])} | "
            f"{times(r['e2e_mx_over_limit'])} |"
        )
    if any(not r[sy]["all_e2e_complete"] for r in rows for sy in ("postfix", "mxgate")):
        add("")
        add(
            "† in at least one round not every accepted message reached the sinks within the"
            " wait (the rate counts what arrived)."
        )
    add("")
    add(
        "Spread over the rounds (lowest – highest accept rate, messages/s). Runs at"
        " concurrency 1 are bound by round-trip latency, which on this VM depends on how"
        " quickly an idle virtual CPU wakes up, so they vary most, the loopback limit above all:"
    )
    add("")
    add("| workload | Postfix | mxgate | limit |")
    add("|---|--:|--:|--:|")
    for r in rows:
        cells = []
        for system in ("postfix", "mxgate", "limit"):
            rng = r[system].get("accept_range")
            cells.append(f"{num(rng[0])} – {num(rng[1])}" if rng else "–")
        add(f"| {workload(r)} | " + " | ".join(cells) + " |")
    add("")
    add(
        "Per workload, medians: CPU seconds per 1000 accepted messages (the gateway's processes"
        " plus PostgreSQL's, over the load and the drain; in brackets the gateway alone), the"
        " load client's own CPU while it drove each gateway (smtp-source, same units), and"
        " runs that ended in an error over all rounds (smtp-source stops at the first reply"
        " that is not the expected success)."
    )
    add("")
    add(
        "| workload | Postfix CPU s/1000 | mxgate CPU s/1000 | client CPU s/1000 (Postfix /"
        " mxgate) | errors Postfix / mxgate |"
    )
    add("|---|--:|--:|--:|--:|")
    for r in rows:
        pf, mx = r["postfix"], r["mxgate"]
        add(
            f"| {workload(r)} | {num(pf['cpu_s_per_1000'])} ({num(pf['cpu_own_s_per_1000'])}) | "
            f"{num(mx['cpu_s_per_1000'])} ({num(mx['cpu_own_s_per_1000'])}) | "
            f"{num(pf.get('client_cpu_s_per_1000'))} / {num(mx.get('client_cpu_s_per_1000'))} | "
            f"{pf['errors']} / {mx['errors']} |"
        )
    add("")

    if lat_p99 is not None:
        pf_l = lat.get("postfix", {})
        add(
            f"Latency at a fixed load: {lat_mx['rate']:g} messages/s offered (open loop) over"
            f" {lat_mx['concurrency']} sessions, 1 recipient, a rate both gateways carry, so the"
            " figures are service times rather than the queueing of a saturated two-core machine"
            " (medians over the rounds of each percentile, milliseconds). *End of DATA*: from"
            " sending the message to reading the 250, which both send only after an fsync."
        )
        add("")
        systems = [("Postfix", pf_l), ("mxgate", lat_mx)]
        if "floor" in lat:
            systems.append(("floor", lat["floor"]))
            add(
                "The floor is `bench/floor.py` (fixed replies and an fdatasync per message, no"
                " routing, logging or queue manager) under the same load, its rounds taken in"
                " turn with the gateways': what the machine allowed in those minutes. *stolen*:"
                " the machine's CPU time the hypervisor gave to other guests during the rounds"
                " (steal in /proc/stat, median over the rounds)."
            )
            add("")
        add("| reply | " + " | ".join(f"{n} p50 / p99 / p99.9" for n, _ in systems) + " |")
        add("|---|" + "--:|" * len(systems))
        for key, name in (("rcpt", "RCPT (accepted recipient)"), ("data", "end of DATA")):
            add(
                f"| {name} | "
                + " | ".join(
                    f"{ms(v.get(f'{key}_p50_ms'))} / {ms(v.get(f'{key}_p99_ms'))} / "
                    f"{ms(v.get(f'{key}_p999_ms'))}"
                    for _, v in systems
                )
                + " |"
            )
        if "floor" in lat:
            add(
                "| stolen | "
                + " | ".join(
                    f"{v['steal_pct']:.1f}%" if v.get("steal_pct") is not None else "–"
                    for _, v in systems
                )
                + " |"
            )
        add("")

    # -- other measures
    L.extend(placement_section(results, rows))
    add("## Rejections, memory, edits, outage")
    add("")
    add("| measure | Postfix (tutorial) | mxgate | mxgate/Postfix |")
    add("|---|--:|--:|--:|")
    add(
        f"| unknown-recipient rejections/s (c={rej_conc(results)}, 9 RCPTs per session) | "
        f"{num(rej['postfix']['reject_rate'])} | {num(rej['mxgate']['reject_rate'])} | "
        f"{times(rej['mx_over_pf'])} |"
    )
    add(
        f"| RCPT reply latency of those rejections, p50 / p99 ms | "
        f"{ms(rej['postfix']['p50_ms'])} / {ms(rej['postfix']['p99_ms'])} | "
        f"{ms(rej['mxgate']['p50_ms'])} / {ms(rej['mxgate']['p99_ms'])} | |"
    )
    add(
        f"| CPU s per 1000 rejections (with PostgreSQL) | "
        f"{num(rej['postfix']['cpu_s_per_1000'])} | {num(rej['mxgate']['cpu_s_per_1000'])} | |"
    )
    pf_mem = memory.get("postfix+postgresql", {})
    pf_alone = memory.get("postfix", {})
    mx_mem = memory.get("mxgate", {})
    mxpg_mem = memory.get("mxgate+postgresql", {})
    pg_mem = memory.get("postgresql", {})
    add(
        f"| peak memory, sum of RSS over the processes | {mib(pf_mem.get('rss'))} (Postfix"
        f" {mib(pf_alone.get('rss'))} + PostgreSQL; up to {pf_mem.get('processes', '–')}"
        f" processes) | {mib(mx_mem.get('rss'))} ({mx_mem.get('processes', '–')} processes);"
        f" {mib(mxpg_mem.get('rss'))} with PostgreSQL | |"
    )
    add(
        f"| peak memory, sum of PSS (shared pages divided among their users) |"
        f" {mib(pf_mem.get('pss'))} (Postfix {mib(pf_alone.get('pss'))} + PostgreSQL) |"
        f" {mib(mx_mem.get('pss'))}; {mib(mxpg_mem.get('pss'))} with PostgreSQL | |"
    )
    add(
        f"| whole PostgreSQL cluster at its peak, RSS / PSS | {mib(pg_mem.get('rss'))} / "
        f"{mib(pg_mem.get('pss'))} ({pg_mem.get('processes', '–')} processes) | (same cluster)"
        " | |"
    )
    add(
        f"| edit of the tables in force on the running gateway, median / max "
        f"({edits['postfix']['n']} INSERTs each) | {ms(sec_ms(edits['postfix']['median_s']))} / "
        f"{ms(sec_ms(edits['postfix']['max_s']))} ms | {ms(sec_ms(edits['mxgate']['median_s']))} /"
        f" {ms(sec_ms(edits['mxgate']['max_s']))} ms | |"
    )
    if outage:
        pf_o, mx_o = outage.get("postfix", {}), outage.get("mxgate", {})
        add(
            f"| PostgreSQL stopped: valid recipients accepted in {plan['outage']:g} s | "
            f"{pct(pf_o)} | {pct(mx_o)} | |"
        )
        add(
            f"| … messages accepted / delivered to the sinks meanwhile | "
            f"{pf_o.get('messages_accepted', '–')} / {pf_o.get('arrived_at_sinks', '–')} | "
            f"{mx_o.get('messages_accepted', '–')} / {mx_o.get('arrived_at_sinks', '–')} | |"
        )
    add(
        f"| mxgate start-up until it answers (snapshot of {scale['mailboxes']:,} mailboxes) | | "
        f"{results.get('mxgate_start_s', 0):.1f} s | |"
    )
    add("")
    idle = results.get("memory_idle", {})
    add(
        "Memory right after start-up, before any load (RSS / PSS): "
        + "; ".join(
            f"{label} {mib(idle[k]['rss'])} / {mib(idle[k]['pss'])}"
            f" ({idle[k]['processes']} processes)"
            for k, label in (
                ("postfix", "Postfix"),
                ("mxgate", "mxgate"),
                ("postgresql", "PostgreSQL"),
            )
            if k in idle
        )
        + ". PostgreSQL rows attribute the cluster's shared processes to both gateways and"
        " each database's backends to the gateway that reads it."
    )
    add("")

    # -- observations
    add("## Observations")
    add("")
    for line in observations(results):
        add(f"- {line}")
    add("")
    prof = results.get("profile") or {}
    add("### Where mxgate's time goes")
    add("")
    add(
        "CPU per 1000 accepted messages by process and mode (medians; the master runs the"
        " queue manager and delivers to the sinks, the workers run the SMTP server and write"
        " the spool; PostgreSQL is idle for mxgate):"
    )
    add("")
    add(
        "| workload | mxgate total s | workers s | master s | user s | system s |"
        " Postfix + PostgreSQL s | Postfix alone s |"
    )
    add("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        mx, pf = r["mxgate"], r["postfix"]
        own, master = mx.get("cpu_own_s_per_1000"), mx.get("cpu_master_s_per_1000")
        workers = own - master if own is not None and master is not None else None
        add(
            f"| {workload(r)} | {num(own)} | {num(workers)} | {num(master)} | "
            f"{num(mx.get('cpu_user_s_per_1000'))} | {num(mx.get('cpu_system_s_per_1000'))} | "
            f"{num(pf['cpu_s_per_1000'])} | {num(pf['cpu_own_s_per_1000'])} |"
        )
    add("")
    if prof:
        add(
            f"py-spy (`record --nonblocking -r 200`) on mxgate's master and one SMTP worker"
            f" during an extra {plan['profile']:g} s run at c=50, 1 recipient (not part of the"
            " tables). Share of the samples in which a thread was not idle in the event loop's"
            " poll (time blocked in a system call such as fsync or unlink counts), and with"
            " `--gil` of the samples holding the GIL (Python code on the CPU). Frames of the"
            " event loop, thread pool and entry points are left out of the inclusive lists."
        )
        add("")
        for line in profile_reading(prof, rows):
            add(f"- {line}")
        add("")
        for name, data in prof.items():
            if not data:
                continue
            add(f"**{name}** ({data['samples']} samples), functions by own time:")
            add("")
            add("| % own | function |")
            add("|--:|---|")
            for fn, pct_ in data["self"][:10]:
                add(f"| {pct_} | `{fn}` |")
            add("")
            add(f"**{name}**, by inclusive time (function and its callees):")
            add("")
            add("| % incl. | function |")
            add("|--:|---|")
            for fn, pct_ in data["inclusive"][:12]:
                add(f"| {pct_} | `{fn}` |")
            add("")

    # -- the reference
    add("## The reference: the tutorial's Postfix")
    add("")
    add(
        "Debian's `postfix` and `postfix-pgsql` packages (" + m["postfix"] + "), one private"
        " instance configured as the tutorial describes, its maps in PostgreSQL database `mail`"
        " with the tutorial's five tables exactly as its DDL creates them (varchar widths,"
        " `forward` keyed by source, `transport` UNIQUE (domain)). Files: `bench/postfix/main.cf`,"
        " `bench/postfix/master.cf.append`, `bench/postfix/pgsql/*.cf` (the `@...@`"
        " placeholders are filled in by `bench/lab.py`). The tutorial's settings:"
    )
    add("")
    add("```")
    add("relay_domains = pgsql:/…/pgsql/relay_domains.cf")
    add("relay_recipient_maps = pgsql:/…/pgsql/relay_recipients.cf")
    add(
        "virtual_alias_maps = pgsql:/…/pgsql/virtual_forward.cf,"
        " pgsql:/…/pgsql/virtual_email2email.cf"
    )
    add("transport_maps = pgsql:/…/pgsql/transport.cf")
    add("mynetworks = 127.0.0.1/32    # the lab's: only the host itself is trusted")
    add("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination")
    add("```")
    add("")
    add("and the queries, as the tutorial writes them, defects kept (SPEC section 9):")
    add("")
    add("| map | query |")
    add("|---|---|")
    for name in (
        "relay_domains.cf",
        "virtual_forward.cf",
        "virtual_email2email.cf",
        "transport.cf",
    ):
        add(f"| {name} | `{' '.join(cf_text(name).split()).removeprefix('query = ')}` |")
    add("")
    add(
        "**relay_recipients.cf is a reconstruction.** Its text is not in the specification;"
        " what is recorded is its effect: the query scans the whole mailbox table for"
        " unknown recipients (about 14 rejections/s with 1M mailboxes), while known recipients"
        " are answered quickly (the tutorial's Postfix was measured at about 280 messages/s"
        " end to end on this kind of machine). A query that scanned on every lookup would"
        " also hold known recipients to about 14/s, so the scan has to happen only on a miss."
        " We use:"
    )
    add("")
    add("```sql")
    add(cf_text("relay_recipients.cf").removeprefix("query = "))
    add("```")
    add("")
    add(
        "Branches 1 and 2 are served by the primary keys; branch 3 matches a mailbox by local"
        " part and domain through `split_part()`, which no index serves, so it is a sequential"
        " scan of `mailbox` (PostgreSQL plans a parallel sequential scan with two workers"
        " under Debian's defaults; 1M rows take tens of milliseconds of CPU per miss)."
        " `UNION ALL … LIMIT 1` stops at the first branch that returns a row, so only"
        " addresses that branches 1 and 2 do not know pay for the scan. For the `@domain`"
        " key Postfix suppresses the query (`%u` is empty, pgsql_table(5)); the relay"
        " catch-all is found by branch 2. The semantics are those of the plain union of"
        " mailbox and relay (branch 3 finds nothing that branch 1 does not); only the cost"
        " of a miss differs. On this run Postfix rejected"
        f" {num(rej['postfix']['reject_rate'])} unknown recipients/s with"
        f" {scale['mailboxes']:,} mailboxes."
    )
    add("")
    add("### Lab deviations from the tutorial (closed lab, no DNS, loopback only)")
    add("")
    for line in DEVIATIONS:
        add(f"- {line}")
    add("")

    # -- data set and mxgate
    add("## Data set and mxgate")
    add("")
    rows_ = results.get("rows", {})
    add(
        f"Rows (identical in both databases): {', '.join(f'{k} {v:,}' for k, v in rows_.items())}."
        f" Domain k is `d{{k}}.bench.example` (node `maila` when k is even, `mailb` when odd,"
        f" transport `smtp:[127.0.0.1]:{meta['ports']['sink_a']}` resp."
        f" `:{meta['ports']['sink_b']}`, one smtp-sink each); mailbox n is"
        f" `user{{n}}@d{{n mod {scale['domains']}}}.bench.example`; domains with k mod 100 = 99"
        " have a forward catch-all, k mod 100 = 98 a relay catch-all; exact forwards"
        " `alias{j}@…` point at mailboxes, exact relays are `relay{j}@…`. The domain count"
        " matters for Postfix: its relay_domains query returns the whole domain table on"
        " every lookup."
    )
    add("")
    add(
        "mxgate reads `mail_mxgate`, a copy of `mail` (`CREATE DATABASE mail_mxgate TEMPLATE"
        " mail`) upgraded in place by `mxgate db migrate` (wider columns, `forward` keyed by"
        " (source, destination), `transport` unique on (domain, node), change-capture"
        " triggers and lower() indexes). A copy, so that the reference reads the tutorial's"
        " schema untouched; the rows are the same (counted after set-up). mxgate runs as"
        f" `{meta['commands']['mxgate']}` with `workers = {worker_count}`"
        " (mxgate's default: one per core less one), `listen = 127.0.0.1:"
        f"{meta['ports']['mxgate']}`, `mynetworks = 127.0.0.1/32`, `relayhost` = sink A,"
        " `dns_nameservers` = a loopback UDP port that is bound but never answers, spool and"
        " state under the work directory (same file system as Postfix's queue). It logs every"
        " connection and delivery to a file, as Postfix does through postlogd. Durability is"
        " the same: both answer 250 only after the message is on stable storage; Postfix"
        " fsyncs one queue file per message, mxgate's workers append each message to their"
        " journal segment and share one fdatasync among the messages committed meanwhile"
        " (messages over 64 KiB get a queue file of their own, as do messages waiting for a"
        " retry)."
    )
    add("")

    # -- method
    add("## Method")
    add("")
    for line in method(results):
        add(f"- {line}")
    add("")

    # -- machine and commands
    add("## Machine")
    add("")
    add(
        f"- {m['nproc']} vCPUs ({m['cpu_model']}), {m['memory_gib']} GiB RAM, kernel"
        f" {m['kernel']}; shared with other engineers' test runs (load average"
        f" {', '.join(f'{x:.1f}' for x in m['load_average_at_start'])} at the start)"
    )
    add(
        f"- disk: `{m['disk']}` (work directory, Postfix queue, mxgate spool and PostgreSQL"
        " data all on it)"
    )
    add(
        f"- mxgate from {m.get('mxgate_source', 'the work tree')}; the work tree is shared with"
        " other engineers" + (f"; mxgate ran {m['mxgate_build']}" if "mxgate_build" in m else "")
    )
    add(
        f"- {m['python']}; mxgate {m['mxgate']}; Postfix {m['postfix']} (Debian 12 packages"
        f" postfix, postfix-pgsql); {m['postgresql']} (Debian 12)"
    )
    if "mxgate_python" in m:
        add(
            f"- mxgate served on {m['mxgate_python']} (the harness and tools on"
            f" {m['python']}; bench/run.sh, MXBENCH_SERVE_PYTHON)"
        )
    add("")
    add("## Commands")
    add("")
    add("```sh")
    add("bench/run.sh            # full run (under 30 minutes); --quick: under 5 minutes")
    add(
        "bench/run.sh --only latency --reps 5  # one workload after the warm-up (repeatable;"
        " figures in the log and /tmp/mxgate-bench/only.json, BENCHMARKS.md left alone)"
    )
    add("python bench/report.py  # redraw BENCHMARKS.md and the chart from bench/results.json")
    add("python bench/placement.py --mxgate 127.0.0.1:2525  # c=1 by placement, with reply times")
    add("python bench/session_cost.py --callgrind -n 200   # worker: instructions per c=1 session")
    add("python bench/delivery_cost.py --callgrind -n 200  # master: instructions per message")
    add("```")
    add("")
    add(
        "What the run executes (as root; work directory `/tmp/mxgate-bench`, override with"
        " `MXBENCH_DIR`; ports with `MXBENCH_PORT_POSTFIX` etc.):"
    )
    add("")
    add("```sh")
    for key in ("postfix_start", "mxgate", "sink", "limit", "loadgen", "reject"):
        add(meta["commands"][key])
    add("```")
    add("")
    add(
        "Files: `bench/run.sh` (entry point: installs postfix, postfix-pgsql and"
        " `.[bench]`, then runs `bench/compare.py`), `bench/compare.py` (the runs),"
        " `bench/lab.py` (PostgreSQL, data set, Postfix, mxgate, sinks, CPU and memory"
        " accounting), `bench/loadgen.py` (the load client), `bench/placement.py` and"
        " `bench/floor.py` (one session at a time, by CPU placement), `bench/report.py`"
        " (this file and the chart), `bench/postfix/` (the reference's configuration),"
        f" `{results_file}` (every run, raw); `bench/ab.py` compares values of one"
        " setting on mxgate alone (not part of the run)."
    )
    add("")
    return "\n".join(L)


def postfix_c1(rows: list[dict[str, Any]]) -> float | None:
    """Postfix's accept rate at c=1 with one recipient (the placement's reference)."""
    for r in rows:
        if r["concurrency"] == 1 and r["rcpts"] == 1:
            rate = r["postfix"]["accept_rate"]
            return float(rate) if rate is not None else None
    return None


def floor_apart_note(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """What the floor does at c=1 on two vCPUs, against Postfix: what a
    receiver that only answers and fsyncs gets, with its client on the other
    vCPU and where the scheduler puts it (as in the throughput runs)."""
    floor = results.get("placement", {}).get("floor", {})
    apart, free = floor.get("apart", []), floor.get("free", [])
    postfix = postfix_c1(rows)
    if not apart or not postfix:
        return ""
    unpinned = f" and {times(statistics.median(free) / postfix)} unpinned" if free else ""
    return (
        f"; at c=1, 1 rcpt, the floor (fixed replies and an fdatasync, nothing else) does"
        f" {times(statistics.median(apart) / postfix)} Postfix's rate with its client on the"
        f" other vCPU{unpinned} (see *One session at a time*)"
    )


def placement_section(results: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The c=1 rates of the floor and mxgate by where the client runs (placement.py)."""
    found = results.get("placement")
    if not found:
        return []
    postfix = postfix_c1(rows)
    out = [
        "## One session at a time: where the client and the server run",
        "",
        "c=1, 1 recipient, `smtp-source` against the floor (`bench/floor.py`: fixed replies"
        " and one fdatasync per message, nothing else) and against mxgate's SMTP worker,"
        " each pinned to one CPU with the client on the same CPU (*together*) or on the other"
        " (*apart*), or neither pinned (*free*: where the scheduler puts them, as in the"
        " throughput runs). Messages/s of each round, and the median over Postfix's c=1,"
        " 1 rcpt accept rate of this run"
        + (f" ({num(postfix)}/s)" if postfix else "")
        + ". Where idle vCPUs halt, a round trip between two vCPUs can pay two wake-ups"
        " that one inside a vCPU does not (session 7's machine did; compare *together* and"
        " *apart*; `bench/placement.py` also times each reply).",
        "",
        "| server | together | apart | free |",
        "|---|--:|--:|--:|",
    ]
    for system in ("floor", "mxgate"):
        cells = []
        for where in ("together", "apart", "free"):
            rates = found.get(system, {}).get(where, [])
            shown = ", ".join(num(r) for r in rates) or "–"
            median = statistics.median(rates) if rates else None
            if postfix and median is not None:
                shown += f" ({times(median / postfix)})"
            cells.append(shown)
        out.append(f"| {system} | {' | '.join(cells)} |")
    out.append("")
    return out


def share(prof: dict[str, Any], process: str, kind: str, *functions: str) -> float:
    """Summed share (%) of the functions whose names start with one of ``functions``."""
    entries = (prof.get(process) or {}).get(kind, [])
    return float(sum(p for name, p in entries if name.startswith(functions)))


def profile_reading(prof: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    out = []
    r50 = next((r for r in rows if r["concurrency"] == 50 and r["rcpts"] == 1), None)
    cpu = {
        "master": r50["mxgate"].get("cpu_master_s_per_1000") if r50 else None,
        "worker": None,
    }
    if r50 and r50["mxgate"].get("cpu_own_s_per_1000") is not None and cpu["master"] is not None:
        cpu["worker"] = r50["mxgate"]["cpu_own_s_per_1000"] - cpu["master"]
    roles = {
        "master": "queue manager and delivery",
        "worker": "SMTP server and spool commits; the figure is all workers' together",
    }
    for process in ("master", "worker"):
        data = prof.get(f"{process} --gil") or prof.get(process) or {}
        top = data.get("self", [])[:4]
        if not top:
            continue
        out.append(
            f"{process.capitalize()} ({roles[process]}, {num(cpu[process])} CPU s per 1000"
            " messages at c=50): of the samples holding the GIL, the functions with the most"
            " own time are " + ", ".join(f"`{name}` {pct_}%" for name, pct_ in top) + "."
        )
    return out


def pct(entry: dict[str, Any]) -> str:
    if not entry:
        return "–"
    return (
        f"{entry['fraction_accepted']:.1%} ({entry['rcpt_accepted']:,} of "
        f"{entry['rcpt_attempted']:,}; {entry['rcpt_tempfail']:,} × 4xx)"
    )


def partial(values: list[float], target: float) -> str:
    if not values:
        return ""
    met = sum(1 for v in values if v >= target)
    return f" (met in {met} of {len(values)} workloads)" if 0 < met < len(values) else ""


def rej_conc(results: dict[str, Any]) -> int:
    for r in results["runs"]:
        if r["kind"] == "reject":
            return int(r["concurrency"])
    return 10


DEVIATIONS = [
    "A private Postfix instance: its own `config_directory`, `queue_directory` and"
    " `data_directory` under the work directory (`postfix -c DIR start`), smtpd on"
    " 127.0.0.1:2625 instead of port 25 (`inet_interfaces = 127.0.0.1`,"
    " `inet_protocols = ipv4`); `meta_directory = /etc/postfix` (Debian's).",
    "chroot off for every service in master.cf (Debian ships chroot `y`; its service scripts"
    " prepare a chroot only for /var/spool/postfix). Everything else in master.cf is Debian's.",
    "No DNS: `smtp_dns_support_level = disabled` (and lmtp), `smtpd_peername_lookup = no`"
    " (Postfix would ask the resolver for the clients' PTR records; they log as `unknown`),"
    " an explicit `myhostname`, and `relayhost = [127.0.0.1]:<sink A>` so that nothing ever"
    " needs an MX lookup.",
    "The transport rows point at loopback smtp-sink instances (`smtp:[127.0.0.1]:2601` and"
    " `:2602`) instead of mailbox servers.",
    "Logging to a file through postlogd (`maillog_file`, `maillog_file_prefixes`) rather than"
    " syslog: the lab has no syslog daemon, and mxgate logs to a file too.",
    "`mydestination = localhost`, `alias_maps` empty: no local delivery in a gateway.",
    "PostgreSQL: a private cluster made with Debian's PostgreSQL 15 binaries (`initdb`,"
    " `pg_ctl`) on 127.0.0.1:25432 instead of the main cluster on 5432; Debian's defaults"
    " otherwise (shared_buffers 128MB, parallel query on), except `max_connections = 500`:"
    " the tutorial's Postfix opens one connection per map per process, about 250 at 50"
    " sessions, and the default 100 makes it answer 451 4.3.0. The maps connect as"
    " `postgres` with trust authentication on loopback and without SSL (Debian's cluster"
    " would use a password and SSL with libpq's `sslmode=prefer`, adding cost to each new"
    " connection and lookup, so this favours Postfix slightly).",
    "Both gateways have `mynetworks = 127.0.0.254/32`, an address no client of the lab"
    " uses, so every load (smtp-source from 127.0.0.1, loadgen.py from 127.0.0.2–127.0.0.6)"
    " comes from outside it, and `smtpd_client_connection_count_limit = 100` instead of 50"
    " (smtp-source connects from one address; at 50 sessions a new connection can arrive"
    " before the server has seen the previous one close). Postfix's other"
    " defaults are kept, including `in_flow_delay = 1s` (visible as one-second RCPT"
    " outliers when arrivals outrun deliveries) and `smtpd_soft_error_limit = 10` (hence 9"
    " unknown recipients per session in the rejection test, below the tarpit).",
]


def method(results: dict[str, Any]) -> list[str]:
    limit_messages = next(
        (int(r["messages_accepted"]) for r in results["runs"] if r.get("system") == "limit"), 0
    )
    meta = results["meta"]
    plan = meta["plan"]
    return [
        f"Throughput: each gateway run lasts {plan['duration']:g} s of load by `smtp-source`"
        " (Postfix's load client, in C, as the issue asks: one message per connection, a"
        " 3900-byte payload plus its headers), at concurrency 1, 10 and 50 with 1 and 5"
        " recipients numbered by `-N` (`1user@d0.bench.example`, `2user@...`: distinct for"
        " every recipient of the run, all mailboxes of the data set, all on one next hop so"
        " that each message reaches the sinks as one message). It runs with `-c` (a counter"
        " after each 250 to the end of DATA) and is stopped by the clock; without `-A` any"
        " other reply ends it with an error, counted in the table. The run then waits until"
        " the smtp-sink counters (`smtp-sink -c`) have grown by the number of accepted"
        " messages; that instant ends the end-to-end time. A warm-up run per gateway precedes"
        " the measured ones. Until 2026-12-02 these runs used `bench/loadgen.py` (Python), whose"
        " own CPU, 0.3-0.6 ms per message, took a fifth to a quarter of the two cores from the"
        " gateway it measured; it still drives the latency, rejection, edit and outage runs,"
        " which need its per-reply timing, source addresses and unknown recipients.",
        "Loopback limit: `smtp-source` into its own smtp-sink with the same concurrency and"
        " recipients (`-N` numbers them), 3900-byte payload plus its headers,"
        f" {limit_messages:,} messages per run (a few seconds): the same client command as"
        " the gateway runs, so the limit is also the client's own ceiling.",
        "CPU: utime+stime of every process of the gateway's process tree (Postfix's master and"
        " all its children; mxgate's master and workers), including children that exited"
        " during the run (reaped children's times move into the parent's), and of the"
        " PostgreSQL cluster's tree, from the start of the load until the sinks had everything,"
        " divided by the accepted messages. The load client's and sinks' CPU are not"
        " included.",
        "Memory: the process trees are sampled every second during the whole benchmark"
        f" (the sampler used {results.get('sampler_cpu_s', 0):.0f} CPU seconds in all); sum of"
        " RSS (shared pages such as PostgreSQL's shared buffers counted in every process that"
        " touched them) and sum of PSS (each shared page divided among its users), peak over"
        " the run. Postfix's figure includes PostgreSQL's (its shared processes and the"
        " backends of database `mail`), as the issue asks; mxgate's is given alone and with"
        " PostgreSQL (shared processes and the backends of `mail_mxgate`).",
        f"Rejections: `--mode unknown`, {rej_conc(results)} sessions, 9 unknown recipients per"
        " session (`nobody<random>@d<k>`, domains without catch-all), no DATA;"
        f" {plan['reject_duration']:g} s per run, {plan['reps']} rounds, interleaved.",
        f"Edits: {plan['edits']} INSERTs of a new mailbox per gateway (into `mail` for Postfix,"
        " `mail_mxgate` for mxgate), each timed from the commit until a fresh SMTP session"
        " from 127.0.0.2 gets 250 for it (probing every 5 ms, one connection per probe).",
        f"Outage: PostgreSQL stopped (`pg_ctl stop -m fast`), then {plan['outage']:g} s of"
        " valid single-recipient messages at c=10 against each gateway in turn; the fraction"
        " is RCPT 2xx over all RCPTs. PostgreSQL is started again afterwards.",
        "Latency: per RCPT, from writing the command to reading the complete reply, measured"
        " in the client, so it includes the client's own scheduling delay on a loaded 2-core"
        " machine; at c=1 it is close to the server's decision time plus loopback.",
    ]


def observations(results: dict[str, Any]) -> list[str]:
    s = results["summary"]
    rows = s["throughput"]
    out: list[str] = []
    by = {(r["concurrency"], r["rcpts"]): r for r in rows}
    best = max(rows, key=lambda r: r["mxgate"]["accept_rate"] or 0)
    client_cpu = best["mxgate"].get("client_cpu_s_per_1000")
    rate = best["mxgate"]["accept_rate"] or 0
    out.append(
        f"mxgate's best accept rate is {num(rate)} messages/s ({workload(best)}),"
        f" {times(best['accept_mx_over_pf'])} Postfix's and"
        f" {times(best['accept_mx_over_limit'])} the loopback limit. The load client"
        f" (smtp-source) used {num(client_cpu)} CPU s per 1000 messages while driving mxgate,"
        f" about {num((client_cpu or 0) * rate / 10, 0)}% of one of the two cores."
    )
    r10 = by.get((10, 1))
    if r10:
        pf_cpu, mx_cpu = r10["postfix"]["cpu_s_per_1000"], r10["mxgate"]["cpu_s_per_1000"]
        if pf_cpu and mx_cpu:
            out.append(
                f"CPU per 1000 messages at c=10, 1 rcpt: Postfix + PostgreSQL {num(pf_cpu)} s,"
                f" mxgate + PostgreSQL {num(mx_cpu)} s ({times(pf_cpu / mx_cpu)} less). Two"
                " cores give 2000 CPU-seconds per 1000 s, so at these costs the CPU alone caps"
                f" Postfix near {num(2000 / pf_cpu)} and mxgate near {num(2000 / mx_cpu)}"
                " messages/s before the load client takes its share."
            )
    r50 = by.get((50, 1))
    if r50 and r50["mxgate"]["accept_rate"] and r50["mxgate"]["e2e_rate"]:
        mx_keep = r50["mxgate"]["e2e_rate"] / r50["mxgate"]["accept_rate"]
        pf_keep = (r50["postfix"]["e2e_rate"] or 0) / (r50["postfix"]["accept_rate"] or 1)
        keeps_up = mx_keep >= 0.95
        out.append(
            f"Delivery at c=50, 1 rcpt: e2e/accept is {pf_keep:.0%} for Postfix and"
            f" {mx_keep:.0%} for mxgate ({num(r50['mxgate']['e2e_rate'])} of"
            f" {num(r50['mxgate']['accept_rate'])} messages/s): "
            + (
                "mxgate's queue manager keeps up with its SMTP workers."
                if keeps_up
                else "mxgate's single queue-manager process falls behind its SMTP workers"
                " and the backlog drains after the load stops (see the profile below)."
            )
        )
        pf10 = (by.get((10, 1)) or {}).get("postfix", {}).get("accept_rate")
        pf50 = r50["postfix"]["accept_rate"]
        if pf10 and pf50 and pf50 < 1.1 * pf10:
            out.append(
                f"Postfix does not gain from 10 to 50 sessions ({num(pf10)} and {num(pf50)}"
                " messages/s): its CPU per message (PostgreSQL's included) already fills the"
                " two cores at 10 sessions; at 50, smtpd processes with three PostgreSQL"
                " connections each share them, and `in_flow_delay` (one second) holds back"
                " clients whenever arrivals outrun deliveries."
            )
    rej = s["reject"]
    if rej["postfix"]["reject_rate"]:
        out.append(
            f"Unknown recipients: Postfix's reconstruction scans the mailbox table on every"
            f" miss ({ms(rej['postfix']['p50_ms'])} ms median per rejection, seen by the"
            f" client); mxgate answers from memory ({ms(rej['mxgate']['p50_ms'])} ms), so its"
            f" rejection rate ({num(rej['mxgate']['reject_rate'])}/s) is bounded by SMTP"
            " round trips and the load client, not by lookups."
        )
    e = s["edits"]
    if e["mxgate"]["median_s"] is not None:
        out.append(
            f"Edits: Postfix reads the database on every lookup, so an INSERT is in force"
            f" at once (first probe, {ms(sec_ms(e['postfix']['median_s']))} ms); mxgate"
            f" follows the change log and took {ms(sec_ms(e['mxgate']['median_s']))} ms"
            f" median, {ms(sec_ms(e['mxgate']['max_s']))} ms at most (target: within a"
            " second)."
        )
    o = s["outage"]
    if o:
        out.append(
            "PostgreSQL stopped: Postfix answers every RCPT with 451 4.3.0 (temporary lookup"
            f" failure; {pct(o.get('postfix', {}))}); mxgate keeps serving from its"
            f" snapshot ({pct(o.get('mxgate', {}))}) and delivers what it accepts."
        )
    return out


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH_DIR / "results.json"
    results = json.loads(path.read_text())
    # The summary is derived from the runs: recompute it with the current code.
    from compare import summarise

    results["summary"] = summarise(results["runs"], results)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    chart = BENCH_DIR / "comparison.png"
    write_chart(results, chart)
    write_markdown(results, REPO / "BENCHMARKS.md", chart, path.resolve())
    print(table(results))


if __name__ == "__main__":
    main()
