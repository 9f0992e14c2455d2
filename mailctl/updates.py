"""What Set- commands share: a change validated through the settings model on top of the
current values (PowerShell's @{Add=...; Remove=...} included), written field by field, and
reported as `Set X on Y from A to B` (or `What if: ...`)."""

from __future__ import annotations

from typing import Any

from mailctl.errors import fail, validation_message
from mailctl.options import field_kind, format_value, value_hint


def apply_updates(
    model: type[Any], current: Any, values: dict[str, Any], label: str
) -> tuple[Any, dict[str, tuple[Any, Any]]]:
    """Validate `values` (field -> raw text) on top of `current` through the model.
    Returns the new model and {field: (old json value, new json value)} for what changed.
    A bad value fails with exit 2 naming the parameter, the value and what is allowed."""
    from pydantic import ValidationError

    data = current.model_dump()
    data.update(values)
    try:
        for fname, raw in values.items():
            if (
                isinstance(raw, str)
                and raw.lstrip().startswith("@{")
                and fname in model.model_fields
                and field_kind(model.model_fields[fname]) == "list"
            ):
                data[fname] = add_remove(model, current, fname, raw)
        new = model.model_validate(data)
    except ValidationError as exc:

        def shown(f: str) -> str:  # a value with a line break would break the message
            text = str(values.get(f, ""))
            return f"-{f} {text if text.isprintable() else repr(text)}".rstrip()

        message = validation_message(exc, shown)
        first = exc.errors()[0]["loc"][:1] if exc.errors() else ()
        hint = value_hint(model, str(first[0])) if first else ""
        if hint and "allowed" not in message and "write" not in message:
            message += f"; allowed: {hint}"
        fail(f"{label}: {message}")
    except ValueError as exc:
        fail(f"{label}: {exc}")
    old_dump, new_dump = current.model_dump(mode="json"), new.model_dump(mode="json")
    changes = {
        k: (old_dump.get(k), new_dump.get(k)) for k in values if old_dump.get(k) != new_dump.get(k)
    }
    return new, changes


def add_remove(model: type[Any], current: Any, fname: str, raw: str) -> list[Any]:
    """PowerShell's multi-value edit `@{Add="a","b"; Remove="c"}`: the current list with
    `Add` appended (when not there yet) and `Remove` taken out. Items are compared in their
    canonical spelling, so `Remove` matches however the item was written."""
    body = raw.strip()
    if not body.endswith("}"):
        raise ValueError(f'-{fname} {raw}: write @{{Add="a","b"; Remove="c"}}')
    parts: dict[str, str] = {}
    for piece in body[2:-1].split(";"):
        if not piece.strip():
            continue
        key, sep, items = piece.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("add", "remove") or key in parts:
            raise ValueError(f"-{fname} {raw}: only Add= and Remove=, once each, separated by ';'")
        parts[key] = items

    def canonical(text: str) -> list[Any]:
        dumped = current.model_dump()
        dumped[fname] = text
        return model.model_validate(dumped).model_dump(mode="json")[fname]

    def fold(item: Any) -> str:  # host names, addresses, enum names: case-insensitive
        return str(item).lower()

    have = current.model_dump(mode="json")[fname]
    removed = {fold(x) for x in canonical(parts.get("remove", "$null"))}
    kept = [x for x in have if fold(x) not in removed]
    for item in canonical(parts.get("add", "$null")):
        if fold(item) not in {fold(x) for x in kept}:
            kept.append(item)
    return kept


def require_values(values: dict[str, Any], label: str) -> None:
    """A Set- command given no parameter has nothing to do: say so, exit 2."""
    if not values:
        fail(f"{label}: give at least one parameter to change (see --help)")


def update_fields(
    session: Any,
    path: tuple[str, ...],
    model: type[Any],
    current: Any,
    values: dict[str, Any],
    label: str,
) -> dict[str, tuple[Any, Any]]:
    """`apply_updates`, then write each changed field below `path` in the edit session
    (only those: the admin's formatting and comments elsewhere stay). Returns the changes."""
    new, changes = apply_updates(model, current, values, label)
    dumped = new.model_dump(mode="json")
    for field in changes:
        session.set((*path, field), dumped[field])
    return changes


def report_changes(target: str, changes: dict[str, tuple[Any, Any]], what_if: bool) -> None:
    """`What if: ...` lines for -WhatIf; otherwise one line per change (stderr-free)."""
    if not changes:
        print(f"{target}: nothing to change.")
        return
    for key, (old, new) in changes.items():
        prefix = "What if: would set" if what_if else "Set"
        print(f"{prefix} {key} on {target} from {format_value(old)} to {format_value(new)}.")
