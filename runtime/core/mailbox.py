"""A bounded asyncio mailbox with two priority classes served by weighted share.

Why not ``asyncio.PriorityQueue``: strict priority starves background work (pub/sub events,
tasks) whenever interactive traffic is steady. Here, when both classes wait, the mailbox serves
interactive items until they have had ``interactive_share`` of recent contested dispatches, then
a background item, so with a 0.7 share a saturated mailbox serves roughly 7 interactive : 3
background. When only one class waits it gets every slot (work-conserving).

The capacity bounds both classes together. ``put_nowait`` raises :class:`MailboxFull` (the
runtime turns it into ``Backpressure`` for the caller); ``put`` waits for space (for internal
producers such as task dispatchers that must not drop what they already accepted).

Example:
    >>> import asyncio
    >>> async def demo():
    ...     box = Mailbox(capacity=4, interactive_share=0.5)
    ...     box.put_nowait("bg", "background"); box.put_nowait("fg", "interactive")
    ...     return [await box.get(), await box.get()]
    >>> asyncio.run(demo())
    ['fg', 'bg']
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

from agents.runtime_api import Priority

__all__ = ["Mailbox", "MailboxFull", "WeightedShare"]

T = TypeVar("T")

# Window over which the share is enforced: long enough to smooth, short enough that a burst of
# one class long ago does not starve the other now.
_WINDOW = 64


class WeightedShare:
    """Which of two waiting classes goes next, so that the first gets ``share`` of contested
    picks over the last :data:`_WINDOW` of them. Shared by the mailbox and by a model's
    admission gate (``runtime.models.admission``), so "70/30" means the same in both.

    Only contested picks (both classes waiting) are counted: a quiet spell of one class does
    not bias the next burst. A share of 1.0 is strict priority.
    """

    def __init__(self, share: float) -> None:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"the share must be in (0, 1], got {share}")
        self.share = share
        self._recent: collections.deque[bool] = collections.deque(maxlen=_WINDOW)
        self._first_recent = 0

    def first(self) -> bool:
        """Both classes wait: True when the first class should go now (and count the pick)."""
        is_first = self._first_recent < self.share * (len(self._recent) + 1)
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._first_recent -= 1
        self._recent.append(is_first)
        self._first_recent += is_first
        return is_first


class MailboxFull(Exception):
    """The mailbox holds ``capacity`` items. Internal: the runtime raises ``Backpressure``."""


class Mailbox(Generic[T]):
    """Bounded two-class mailbox. Single event loop; not thread-safe.

    Args:
        capacity: most items held (both classes together), >= 1.
        interactive_share: fraction of dispatches that go to interactive items while both
            classes are waiting, in (0, 1).
    """

    def __init__(self, capacity: int, interactive_share: float = 0.7) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not 0.0 < interactive_share < 1.0:
            raise ValueError(f"interactive_share must be in (0, 1), got {interactive_share}")
        self.capacity = capacity
        self.interactive_share = interactive_share
        self._queues: dict[Priority, collections.deque[T]] = {
            "interactive": collections.deque(),
            "background": collections.deque(),
        }
        self._share = WeightedShare(interactive_share)
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._taken = asyncio.Event()  # set by every get(): room may have opened

    def __len__(self) -> int:
        return len(self._queues["interactive"]) + len(self._queues["background"])

    def depth(self, priority: Priority) -> int:
        """Items waiting in one class."""
        return len(self._queues[priority])

    def full(self) -> bool:
        return len(self) >= self.capacity

    def free(self) -> int:
        return self.capacity - len(self)

    def put_nowait(self, item: T, priority: Priority = "interactive") -> None:
        """Add an item, or raise :class:`MailboxFull` at once."""
        if self.full():
            raise MailboxFull(self.capacity)
        self._queues[priority].append(item)
        self._not_empty.set()
        if self.full():
            self._not_full.clear()

    async def put(self, item: T, priority: Priority = "background") -> None:
        """Add an item, waiting for space."""
        while self.full():
            await self._not_full.wait()
        self.put_nowait(item, priority)

    async def get(self) -> T:
        """Take the next item by weighted share, waiting if empty."""
        while not len(self):
            self._not_empty.clear()
            await self._not_empty.wait()
        item = self._queues[self._pick()].popleft()
        if not len(self):
            self._not_empty.clear()
        self._not_full.set()
        self._taken.set()
        return item

    async def room_for(self, priority: Priority, at_most: int) -> None:
        """Wait until fewer than ``at_most`` items of ``priority`` wait and there is room.

        For producers that *pull* work they could leave where it is (task claimers): a claimer
        that filled the mailbox with tasks would refuse every interactive send (the mailbox is
        full) and keep tasks from other replicas that are idle -- the share could never hold,
        and a new replica would find nothing to claim. Pulling only up to the workers' count
        leaves the rest in the queue, where any replica can take it."""
        while self.depth(priority) >= at_most or self.full():
            self._taken.clear()
            await self._taken.wait()

    def drain(self) -> list[T]:
        """Remove and return everything waiting (for shutdown)."""
        items = [*self._queues["interactive"], *self._queues["background"]]
        for q in self._queues.values():
            q.clear()
        self._not_empty.clear()
        self._not_full.set()
        self._taken.set()
        return items

    def _pick(self) -> Priority:
        fg, bg = self._queues["interactive"], self._queues["background"]
        if not bg:
            return "interactive"
        if not fg:
            return "background"
        # Contested: serve whichever class is behind its share of recent contested dispatches.
        return "interactive" if self._share.first() else "background"
