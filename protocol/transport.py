"""Frame layout of the control socket (ROUTER), shared by the daemon and tests.

A REQ client's message reaches the ROUTER as ``[identity, b"", payload]``; a DEALER
client must send the empty delimiter itself to look the same. The reply goes back
with the same routing prefix. Endpoint names are the daemon's business, not this
module's.
"""

from collections.abc import Sequence

from .codec import Buffer
from .errors import DecodeError


def split_request_frames(frames: Sequence[Buffer]) -> tuple[list[bytes], bytes]:
    """Split ``[routing..., b"", payload]`` into the routing prefix and the payload.

    Raises ``DecodeError`` when there is no routing prefix, no empty delimiter, or
    not exactly one payload frame. Such a message cannot be answered in a form its
    sender reads, so the daemon drops it (and may log it).
    """
    parts = [bytes(f) for f in frames]
    try:
        delimiter = parts.index(b"", 1)  # frame 0 is the identity the ROUTER added
    except ValueError:
        raise DecodeError("no empty delimiter frame after the routing id") from None
    payload = parts[delimiter + 1 :]
    if len(payload) != 1:
        raise DecodeError(f"expected exactly 1 payload frame, got {len(payload)}")
    return parts[:delimiter], payload[0]


def reply_frames(routing: Sequence[bytes], payload: bytes) -> list[bytes]:
    """The frames to send on the ROUTER to answer the message routed by ``routing``."""
    return [*routing, b"", payload]
