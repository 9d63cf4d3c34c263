"""The verdict every transport gives on one attempt: delivered, retry later, or give up."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """What an attempt's answer means for the delivery."""

    DELIVERED = "delivered"  # the peer holds the message: stop
    RETRY = "retry"  # nothing was refused for good: try again after a backoff
    PERMANENT = "permanent"  # the peer refused it; sending it again would be refused again
