"""The cached password check a front end makes on its event loop (Directory.verify_cached):
it answers only for a password verified before against the hash stored now."""

from __future__ import annotations

from pathlib import Path

from server.directory import Directory
from server.settings import store
from tests.e2e.frontend_support import PASSWORD, add_mailboxes, make_home


def test_cached_check_answers_only_after_a_verification_of_that_password(tmp_path: Path) -> None:
    home = make_home(tmp_path / "home")
    add_mailboxes(home)
    settings = store.load(home).settings
    directory = Directory(home)
    assert directory.verify_cached(settings, "bob", PASSWORD) is None  # never verified
    assert directory.verify(settings, "bob", PASSWORD) is not None
    found = directory.verify_cached(settings, "bob", PASSWORD)
    assert found is not None and found.name == "bob"
    assert directory.verify_cached(settings, "bob", PASSWORD + "x") is None
    assert directory.verify_cached(settings, "nobody", PASSWORD) is None
    directory.set_password("bob", "a new one")  # the stored hash changed
    assert directory.verify_cached(settings, "bob", PASSWORD) is None
    assert directory.verify_cached(settings, "bob", "a new one") is None
