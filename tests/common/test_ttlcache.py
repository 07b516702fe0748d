"""common.ttlcache.TTLCache: expiry on an injected clock, per-entry lifetimes, cached None, the size bound."""

from __future__ import annotations

import threading

import pytest

from common.ttlcache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("ttl", "elapsed", "hit"), [
    (10.0, 0.0, True),
    (10.0, 9.99, True),
    (10.0, 10.0, False),
    (10.0, 60.0, False),
    (0.0, 0.0, False),  # a lifetime of 0 caches nothing
])
def test_an_entry_lives_for_its_ttl(ttl: float, elapsed: float, hit: bool) -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(ttl, clock=clock)
    cache.put("k", 1)
    clock.now += elapsed
    assert cache.lookup("k") == ((True, 1) if hit else (False, None))


def test_an_entry_may_carry_its_own_lifetime() -> None:
    clock = Clock()
    cache: TTLCache[str, str] = TTLCache(30.0, clock=clock)
    cache.put("short", "a", ttl=2.0)
    cache.put("default", "b")
    clock.now += 5
    assert cache.get("short") is None
    assert cache.get("default") == "b"


def test_get_or_load_loads_once_per_lifetime_and_caches_none() -> None:
    clock = Clock()
    cache: TTLCache[int, int | None] = TTLCache(5.0, clock=clock)
    loads: list[int] = []

    def load() -> None:
        loads.append(1)

    assert cache.get_or_load(7, load) is None
    assert cache.get_or_load(7, load) is None
    assert len(loads) == 1, "a cached None is a hit"
    clock.now += 5
    cache.get_or_load(7, load)
    assert len(loads) == 2


def test_clear_and_discard_forget() -> None:
    cache: TTLCache[str, int] = TTLCache(60.0)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.discard("a")
    assert (cache.get("a"), cache.get("b")) == (None, 2)
    cache.clear()
    assert len(cache) == 0


def test_a_full_cache_drops_expired_entries_first_then_the_oldest() -> None:
    clock = Clock()
    cache: TTLCache[int, int] = TTLCache(100.0, max_entries=10, clock=clock)
    for key in range(9):
        cache.put(key, key)
    cache.put(100, 100, ttl=1.0)
    clock.now += 2
    cache.put(10, 10)  # full: the expired entry makes room, nothing live is lost
    assert [k for k in range(11) if cache.get(k) is not None] == [*range(9), 10]
    cache.put(11, 11)  # full of live entries: the oldest tenth (key 0) goes
    assert cache.get(0) is None
    assert all(cache.get(k) == k for k in (*range(1, 9), 10, 11))
    assert len(cache) <= 10


def test_storing_again_refreshes_the_age() -> None:
    cache: TTLCache[int, int] = TTLCache(100.0, max_entries=3, clock=Clock())
    for key in range(3):
        cache.put(key, key)
    cache.put(0, 0)  # now the youngest
    cache.put(3, 3)
    assert cache.get(0) == 0 and cache.get(1) is None


@pytest.mark.parametrize(("ttl", "max_entries"), [(-1.0, 10), (1.0, 0)])
def test_refuses_nonsense_bounds(ttl: float, max_entries: int) -> None:
    with pytest.raises(ValueError):
        TTLCache(ttl, max_entries=max_entries)


def test_threads_share_one_cache() -> None:
    cache: TTLCache[int, int] = TTLCache(60.0, max_entries=50)

    def work(offset: int) -> None:
        for key in range(200):
            cache.put((key + offset) % 80, key)
            cache.get(key % 80)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 0 < len(cache) <= 50
