"""Mailbox: bounded, two classes, weighted share, no starvation."""

from __future__ import annotations

import asyncio

import pytest

from runtime.core.mailbox import Mailbox, MailboxFull, WeightedShare


async def test_capacity_bounds_both_classes_together():
    box: Mailbox[int] = Mailbox(capacity=3)
    box.put_nowait(1, "interactive")
    box.put_nowait(2, "background")
    box.put_nowait(3, "interactive")
    with pytest.raises(MailboxFull):
        box.put_nowait(4, "background")
    assert len(box) == 3 and box.depth("interactive") == 2


async def test_saturated_mailbox_serves_by_share_and_never_starves_background():
    box: Mailbox[str] = Mailbox(capacity=200, interactive_share=0.7)
    for i in range(100):
        box.put_nowait(f"i{i}", "interactive")
        box.put_nowait(f"b{i}", "background")
    first_100 = [await box.get() for _ in range(100)]
    fg = sum(x.startswith("i") for x in first_100)
    assert 68 <= fg <= 72, fg
    # FIFO within a class
    assert [x for x in first_100 if x.startswith("b")] == [f"b{i}" for i in range(100 - fg)]


async def test_a_single_class_gets_every_slot():
    box: Mailbox[str] = Mailbox(capacity=10, interactive_share=0.9)
    for i in range(5):
        box.put_nowait(f"b{i}", "background")
    assert [await box.get() for _ in range(5)] == [f"b{i}" for i in range(5)]


async def test_get_waits_for_put_and_put_waits_for_space():
    box: Mailbox[int] = Mailbox(capacity=1)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not getter.done()
    box.put_nowait(1)
    assert await getter == 1
    box.put_nowait(2)
    putter = asyncio.create_task(box.put(3))
    await asyncio.sleep(0)
    assert not putter.done()
    assert await box.get() == 2
    await putter
    assert await box.get() == 3


def test_invalid_settings():
    with pytest.raises(ValueError, match="capacity"):
        Mailbox(0)
    with pytest.raises(ValueError, match="interactive_share"):
        Mailbox(1, interactive_share=1.0)


async def test_room_for_waits_until_a_class_is_below_its_bound():
    box: Mailbox[str] = Mailbox(capacity=8)
    box.put_nowait("b0", "background")
    box.put_nowait("b1", "background")
    await asyncio.wait_for(box.room_for("background", 3), 1)  # 2 < 3: at once
    waiter = asyncio.create_task(box.room_for("background", 2))
    box.put_nowait("i0", "interactive")  # the other class does not count
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert await box.get() == "i0"  # a get of the other class does not open the bound
    await asyncio.sleep(0.01)
    assert not waiter.done()
    assert await box.get() == "b0"
    await asyncio.wait_for(waiter, 1)


async def test_room_for_also_waits_for_space():
    box: Mailbox[str] = Mailbox(capacity=1)
    box.put_nowait("i0", "interactive")
    waiter = asyncio.create_task(box.room_for("background", 5))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    await box.get()
    await asyncio.wait_for(waiter, 1)


def test_weighted_share_picks_by_share_and_one_is_strict():
    share = WeightedShare(0.7)
    picks = [share.first() for _ in range(100)]
    assert 68 <= sum(picks) <= 72
    assert all(WeightedShare(1.0).first() for _ in range(100))
    with pytest.raises(ValueError, match="share"):
        WeightedShare(0.0)
