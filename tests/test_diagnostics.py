"""The diagnostic log: the log_level setting decides what reaches stderr, in
the mail log's shape."""

from __future__ import annotations

import io
import logging
import re

from mxgate.maillog import configure_diagnostics


def test_log_level_filters_and_lines_look_like_the_mail_log() -> None:
    out = io.StringIO()
    configure_diagnostics("warning", "mx1.example.com", out)
    try:
        log = logging.getLogger("mxgate.directory.follower")
        log.info("routing database reachable again")
        log.warning("snapshot cache unreadable: %s", "bad magic")
        lines = out.getvalue().splitlines()
        assert len(lines) == 1  # info is below warning
        assert re.fullmatch(
            r"\w{3} [ \d]\d \d\d:\d\d:\d\d mx1 mxgate/follower\[\d+\]: "
            r"warning: snapshot cache unreadable: bad magic",
            lines[0],
        ), lines[0]
        configure_diagnostics("debug", "mx1.example.com", out)
        log.debug("applied %d change(s)", 3)
        assert out.getvalue().splitlines()[-1].endswith("debug: applied 3 change(s)")
    finally:
        configure_diagnostics("warning", "localhost", io.StringIO())
        logging.getLogger("mxgate").handlers.clear()
        logging.getLogger("mxgate").propagate = True
        logging.getLogger("mxgate").setLevel(logging.NOTSET)
