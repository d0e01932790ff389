"""Instructions per unit of work, counted by callgrind (bench/session_cost.py,
bench/delivery_cost.py): counts that the machine's noise does not move.

The script runs itself under ``valgrind --tool=callgrind`` for n and 2n units
(``-n``), counting only inside uvloop's run, and the difference divided by n
is the cost of one unit: start-up, set-up and whatever runs outside that loop
cancel out.
"""

from __future__ import annotations

import re
import subprocess
import sys

LOOP_RUN = "__pyx_pf_6uvloop_4loop_4Loop_44run_until_complete"


def per_unit(script: str, count: int) -> float:
    """Instructions per unit of ``script`` (run as ``script -n N``)."""
    instructions = []
    for n in (count, 2 * count):
        out = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                f"--toggle-collect={LOOP_RUN}",
                sys.executable,
                script,
                "-n",
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from callgrind:\n{out.stderr[-2000:]}")
        instructions.append(int(found.group(1).replace(",", "")))
    return (instructions[1] - instructions[0]) / count
