"""FACEGATE_API_KEYS: scopes and the collections a key is bound to."""

from __future__ import annotations

import pytest

from facegate.api.auth import KeyRing, Refused, Scope, admit


def test_a_key_without_collections_opens_every_collection() -> None:
    ring = KeyRing.parse("admin-key", "door:recognize:k1,all:recognize:k2:*")
    for presented in ("admin-key", "k1", "k2"):
        key = ring.identify(presented)
        assert key is not None and key.collections is None and key.opens("anything")


def test_a_bound_key_opens_only_its_collections() -> None:
    ring = KeyRing.parse("admin-key", "site-a:recognize:k1:site-a, site-b:admin:k2:site-b|lobby")
    a, b = ring.identify("k1"), ring.identify("k2")
    assert a is not None and b is not None
    assert (a.scope, a.collections) == (Scope.RECOGNIZE, frozenset({"site-a"}))
    assert b.opens("site-b") and b.opens("lobby") and not b.opens("site-a") and not b.opens("default")
    admit(a, "site-a")
    with pytest.raises(Refused) as refused:
        admit(a, "site-b")
    assert (
        refused.value.status == 403 and "site-b" in refused.value.detail and refused.value.holder == "site-a"
    )
    assert ring.named("site-b") is b and ring.named("nobody") is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("a:detect:k:x||y", "empty collection name"),
        ("a:detect:k:|", "empty collection name"),
        ("a:detect:k1,a:recognize:k2", "its own name"),
        ("admin:detect:k1", "its own name"),
        ("door:admin:k1:", "empty binding"),  # an unset template variable must not open everything
        ("door:admin:k1: ", "empty binding"),
        ("door:recognize:k1:site-a,ops:admin:k1", "same key value twice"),
        ("door:detect:admin-key", "equal to APP_TOKEN"),
        ("door:detect:k 1", "whitespace"),
        ("door:detect: k1", "whitespace"),
        ("door:detect:k1:site a", "invalid collection name"),
    ],
)
def test_malformed_bindings_are_refused_at_start_up(extra: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing.parse("admin-key", extra)
