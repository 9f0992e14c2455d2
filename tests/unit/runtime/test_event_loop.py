"""The services' event loop: uvloop when installed (and not turned off), asyncio otherwise."""

from __future__ import annotations

import sys

import pytest

from server.runtime import main


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv(main.EVENT_LOOP_ENV, raising=False)
    name, policy = main.event_loop_policy()
    assert name == "uvloop" and type(policy).__module__.startswith("uvloop")


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(main.EVENT_LOOP_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert main.event_loop_policy() == ("asyncio", None)


def test_asyncio_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(main.EVENT_LOOP_ENV, "asyncio")
    assert main.event_loop_policy() == ("asyncio", None)
