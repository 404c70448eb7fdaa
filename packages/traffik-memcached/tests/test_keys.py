"""Any identifier becomes a valid memcached key: readable when it can be, hashed when it cannot."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiomcache
import pytest

from traffik.backends.memcached import MemcachedBackend
from traffik.backends.memcached._keys import (
    CACHED_KEYS,
    MAX_KEY_BYTES,
    GenerationKeys,
    KeySpace,
    safe_key,
)
from traffik.rates import Rate
from traffik.strategies import FixedWindow, SlidingWindowLog, TokenBucket
from traffik.throttle_keys import KEY_CACHE_SIZE

HOSTILE = [
    "plain",
    "with space",
    "tab\there",
    "new\nline",
    "a\r\nflush_all\r\n",
    "a\r\nset x 0 0 1\r\nX\r\n",
    "\x00nul",
    "del\x7f",
    "c1\x85control",
    "émoji 🚦 日本語",
    "x" * 10_000,
    "x" * 10_001,
    "y" * 249,
    "#",
    "a#b",
    "\ud800lone-surrogate",
    "",
    " ",
    "\r\n",
]
_VALID = re.compile(rb"^[\x21-\x7e]{1,250}$")


def test_readable_keys_stay_readable() -> None:
    assert safe_key("app:user:42:fw") == b"app:user:42:fw"
    assert safe_key("app:192.168.0.1:/items/{id}") == b"app:192.168.0.1:/items/{id}"


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_every_text_gives_a_valid_key(text: str) -> None:
    key = safe_key("ns:" + text)
    assert _VALID.match(key), key
    assert len(key) <= MAX_KEY_BYTES


def test_unsafe_keys_keep_a_readable_prefix_and_a_hash() -> None:
    key = safe_key("app:new\nline")
    assert key.startswith(b"app:new_line#")
    assert len(key.split(b"#")[1]) == 64


def test_distinct_texts_give_distinct_keys() -> None:
    texts = ["ns:" + t for t in HOSTILE] + ["ns:new_line", "ns:with_space", "ns:" + "x" * 150 + "z"]
    hashed_lookalike = safe_key("ns:new\nline").decode()
    texts.append(hashed_lookalike)  # a readable-looking text equal to another's hashed key
    keys = [safe_key(t) for t in texts]
    assert len(set(keys)) == len(set(texts))


def test_generation_and_namespace_are_part_of_the_key() -> None:
    space = KeySpace("app")
    assert space.key("app:user:1", 7) == b"app:7:user:1"
    assert space.key("raw", 7) == b"app:7~raw"
    assert space.key("app:user:1", 8) != space.key("app:user:1", 7)
    assert space.key("app:x", 7) != space.key("x", 7)
    assert space.key("7~x", 1) != space.key("x", 17)
    assert space.generation_key == b"app:__gen__"
    assert KeySpace("my app").key("my app:k", 1).startswith(b"my_app:1:k#")


@pytest.mark.parametrize("namespace", ["app", "my app", "a#b", "n" * 200, "ünï"])
def test_the_fast_mapping_is_the_same_as_the_reference(namespace: str) -> None:
    space = KeySpace(namespace)
    texts = [f"{namespace}:{text}" for text in HOSTILE] + HOSTILE
    # lengths on both sides of the 250-byte limit, with and without the namespace
    texts += [f"{namespace}:" + "k" * n for n in range(200, 260)] + [
        "k" * n for n in range(200, 260)
    ]
    texts += [f"{namespace}:", f"{namespace}x:k", f"{namespace}"]
    for generation in (1, 7, 1_712_345_678_901, 10**40):
        keys = space.of(generation)
        for text in texts:
            assert keys(text) == space.key(text, generation), (text, generation)
            assert keys(text) == space.key(text, generation), "cached"


def test_the_mapping_cache_is_bounded() -> None:
    keys = KeySpace("app").of(1)
    for i in range(CACHED_KEYS * 3):
        assert keys(f"app:client-{i}") == b"app:1:client-%d" % i
    assert len(keys._cache) <= CACHED_KEYS


def test_every_key_a_throttle_remembers_stays_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    # A throttle remembers the keys of up to `KEY_CACHE_SIZE` clients (peer and route); the
    # memcached mapping must hold as many, or a working set between the two sizes (10,000
    # clients, say) is mapped again on every hit: the cache starts over before any key
    # comes back.
    assert CACHED_KEYS >= KEY_CACHE_SIZE
    keys = KeySpace("app").of(1)
    clients = [f"app:http:client-{i}:fw" for i in range(10_000)]
    for text in clients:
        keys(text)
    mapped = []
    real_map = GenerationKeys._map
    monkeypatch.setattr(
        GenerationKeys, "_map", lambda self, key: mapped.append(key) or real_map(self, key)
    )
    for text in clients:
        assert keys(text) == KeySpace("app").key(text, 1)
    assert mapped == []


@pytest.fixture
async def backend(memcached_url: str) -> AsyncIterator[MemcachedBackend]:
    backend = MemcachedBackend(memcached_url, namespace="hostile")
    yield backend
    await backend.reset()
    await backend.close()


@pytest.mark.memcached
@pytest.mark.anyio
async def test_hostile_identifiers_get_their_own_buckets(
    memcached_url: str, backend: MemcachedBackend
) -> None:
    canary = aiomcache.Client("127.0.0.1", int(memcached_url.rsplit(":", 1)[1]))
    await canary.set(b"traffik-canary", b"alive")
    rate = Rate.parse("2/hour")
    try:
        for strategy in (FixedWindow(), TokenBucket(), SlidingWindowLog()):
            for text in HOSTILE:
                assert (await strategy.decide(text, rate, backend, 1)).allowed, text
            for text in HOSTILE:
                # one hit each so far: a shared bucket would have run out
                assert (await strategy.decide(text, rate, backend, 1)).allowed, text
                assert not (await strategy.decide(text, rate, backend, 1)).allowed, text
        for i, text in enumerate(HOSTILE):
            await backend.set(text, f"value {i}")
        assert await backend.multi_get(*HOSTILE) == [f"value {i}" for i in range(len(HOSTILE))]
        assert await canary.get(b"traffik-canary") == b"alive", "an identifier reached the protocol"
    finally:
        await canary.close()
