"""The codec replicas' dynamic batching: a batch is formed when the codec is free."""

from __future__ import annotations

import asyncio

import pytest

from trimodal.service.batcher import Batcher, QueueFull


def test_batches_fill_while_the_codec_is_busy():
    calls: list[list[int]] = []

    async def codec(items):
        calls.append(list(items))
        await asyncio.sleep(0.05)  # a slow codec call
        return [i * 10 for i in items]

    async def main():
        b = Batcher(codec, max_batch_size=4, wait_s=0.0)
        first = asyncio.ensure_future(b.submit(0))
        await asyncio.sleep(0.01)  # the first call is running...
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(1, 10)]  # ...while 9 more arrive
        return await first, await asyncio.gather(*rest), b

    first, rest, b = asyncio.run(main())
    assert first == 0 and rest == [i * 10 for i in range(1, 10)]
    # one lone call, then full calls of everything that queued meanwhile, in order
    assert calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert (b.batches, b.items) == (4, 10)


def test_wait_gathers_a_burst_and_is_bounded():
    calls = []

    async def codec(items):
        calls.append(list(items))
        return items

    async def main():
        b = Batcher(codec, max_batch_size=8, wait_s=0.05)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        futs = [asyncio.ensure_future(b.submit(0))]
        await asyncio.sleep(0.01)
        futs += [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.gather(*futs)
        return loop.time() - t0

    dt = asyncio.run(main())
    assert calls == [[0, 1, 2]]  # the burst shared one call...
    assert 0.04 <= dt < 1.0  # ...after waiting about wait_s, not forever


def test_cancelled_requests_are_dropped_and_errors_stay_in_their_batch():
    calls = []

    async def codec(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("codec failed")
        await asyncio.sleep(0.02)
        return items

    async def main():
        b = Batcher(codec, max_batch_size=2, wait_s=0.0)
        a = asyncio.ensure_future(b.submit("a"))
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(b.submit("gone"))
        bad = asyncio.ensure_future(b.submit("bad"))
        c = asyncio.ensure_future(b.submit("c"))
        await asyncio.sleep(0)
        gone.cancel()
        results = await asyncio.gather(a, bad, c, return_exceptions=True)
        after = await b.submit("after")  # the batcher outlives a failed call
        return results + [after]

    a, bad, c, after = asyncio.run(main())
    # "gone" never reached the codec; "bad" failed its whole batch ("c" with it), nothing else
    assert calls == [["a"], ["bad", "c"], ["after"]]
    assert a == "a" and after == "after"
    assert isinstance(bad, ValueError) and isinstance(c, ValueError)


def test_concurrent_calls_and_a_bounded_queue():
    """The ingress's use: up to `max_concurrent` calls in flight, what arrives meanwhile waits
    and goes in the next call, and beyond `max_queued` waiting items submit refuses at once."""
    calls: list[list[int]] = []
    running = [0, 0]  # now, most at once

    async def codec(items):
        calls.append(list(items))
        running[0] += 1
        running[1] = max(running[1], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        return [i * 10 for i in items]

    async def main():
        b = Batcher(codec, max_batch_size=3, wait_s=0.0, max_concurrent=2, max_queued=4)
        first = [asyncio.ensure_future(b.submit(i)) for i in (0, 1)]
        await asyncio.sleep(0.01)  # one call of [0, 1] is running, a second slot is free
        more = [asyncio.ensure_future(b.submit(i)) for i in (2, 3, 4)]
        await asyncio.sleep(0.01)  # [2, 3, 4] went as the second call; both slots busy
        waiting = [asyncio.ensure_future(b.submit(i)) for i in (5, 6, 7, 8)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await b.submit(9)  # 4 already wait
        return await asyncio.gather(*first, *more, *waiting)

    results = asyncio.run(main())
    assert results == [i * 10 for i in range(9)]
    assert calls == [[0, 1], [2, 3, 4], [5, 6, 7], [8]]
    assert running[1] == 2


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        Batcher(lambda items: items, 0, 0.0)
    with pytest.raises(ValueError):
        Batcher(lambda items: items, 1, 0.0, max_concurrent=0)
