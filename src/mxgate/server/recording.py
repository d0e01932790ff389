"""An asyncio transport that keeps what is written: for driving a ``Session``
without a socket (the profile-guided build's training run, scripts/pgo_train.py,
and bench/session_cost.py). Not used by the gateway itself."""

from __future__ import annotations

from typing import Any


class RecordingTransport:
    """Enough of an asyncio transport for a session: writes are kept."""

    def __init__(self, peer: tuple[str, int] = ("203.0.113.7", 40000)) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
