"""The dashboard's files read as text: translations, retries and error texts that no browser run may reach."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.app import STATIC_DIR

JS = STATIC_DIR / "js"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _dictionaries() -> dict[str, dict[str, str]]:
    """The DICT object of i18n.js: plain double-quoted keys and values, so JSON once trailing commas go."""
    source = _read(JS / "i18n.js")
    body = source[source.index("const DICT = ") + len("const DICT = ") : source.index("\n};\n") + 2]
    parsed: dict[str, dict[str, str]] = json.loads(re.sub(r",(\s*})", r"\1", body))
    return parsed


def _used_keys() -> dict[str, set[str]]:
    """Literal keys passed to t() in the scripts and named by data-i18n / data-i18n-aria anywhere, by file."""
    used: dict[str, set[str]] = {}
    for path in [STATIC_DIR / "index.html", *sorted(JS.rglob("*.js"))]:
        text = _read(path)
        keys = set(re.findall(r"\bt\(\s*\"([^\"]+)\"", text))
        keys |= set(re.findall(r"data-i18n(?:-aria)?=\"([^\"]+)\"", text))
        keys |= set(re.findall(r"\"data-i18n(?:-aria)?\"\s*:\s*\"([^\"]+)\"", text))
        if keys:
            used[str(path.relative_to(STATIC_DIR))] = keys
    return used


def test_both_languages_have_the_same_keys() -> None:
    dicts = _dictionaries()
    assert set(dicts) == {"pt-BR", "en"}
    assert sorted(set(dicts["pt-BR"]) ^ set(dicts["en"])) == []


def test_every_key_the_page_uses_is_translated() -> None:
    dicts = _dictionaries()
    used = _used_keys()
    assert "bell.title" in used["index.html"]  # the aria-label keys are seen too
    missing = {
        f"{where}: {key}": [lang for lang, texts in dicts.items() if key not in texts]
        for where, keys in used.items()
        for key in sorted(keys)
        if any(key not in texts for texts in dicts.values())
    }
    assert missing == {}


@pytest.mark.parametrize("view", sorted(p.name for p in (JS / "views").glob("*.js")))
def test_retry_asks_again(view: str) -> None:
    """A call shared between panels goes through ``shared`` (series.js), which forgets a failed call: a
    promise kept in a variable is settled, so a panel's Retry awaiting it would get the same error back."""
    source = _read(JS / "views" / view)
    kept = re.findall(r"\b(?:let|const|var) (\w+) = (?:api|fetch\w*)\(", source)
    awaited = set(re.findall(r"await (\w+)\b(?!\()", source))
    assert not set(kept) & awaited, f"{view}: {sorted(set(kept) & awaited)} awaited as a kept promise"


def _function(source: str, signature: str) -> str:
    start = source.index(signature)
    return source[start : source.index("\n}\n", start)]


def test_login_without_network_shows_the_translated_text() -> None:
    """fetch rejects with the browser's own English text when there is no answer; login maps that to the
    ApiError(0) the other calls raise, and the login view words every non-login failure like the others."""
    login = _function(_read(JS / "api.js"), "export async function login(")
    assert re.search(r"try \{\s*response = await fetch\(", login), login
    assert re.search(r"catch \{\s*throw new ApiError\(0, null\);", login), login
    view = _read(JS / "views" / "login.js")
    assert "err.message" not in view
    assert "describeError(err)" in view
    describe = _function(_read(JS / "dom.js"), "export function describeError(")
    assert 'if (error.status === 0) return t("error.network");' in describe
