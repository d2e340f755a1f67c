"""The dashboard says KPI notes in Portuguese from a catalogue of the fragments analytics writes
(gateway/static/js/notes.js); a fragment missing from it would be shown in English. Every fragment the
service writes on the real data, with and without stock, must have its Portuguese pattern."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from novacorrente.analytics.v1 import analytics_pb2 as a
from novacorrente.common.v1 import common_pb2 as c

from tests.analytics.analytics_data import snapshot
from tests.analytics.conftest import World

NOTES_JS = Path(__file__).resolve().parents[2] / "gateway" / "static" / "js" / "notes.js"


def _patterns() -> list[re.Pattern[str]]:
    # The catalogue's entries are `[/^...$/, ...]`: JavaScript literals in the syntax both languages share.
    sources = re.findall(r"^\s*\[/(\^.*?\$)/,", NOTES_JS.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(sources) > 15, "the catalogue was not found"
    return [re.compile(source.replace(r"\/", "/")) for source in sources]


async def test_every_note_fragment_on_the_real_data_has_a_portuguese_pattern(
    world: World, real_records
) -> None:
    replica = await world.replica()
    await world.commit(real_records)
    slices = [c.Filter(), c.Filter(families=["EPI"]), c.Filter(material_codes=["NOPE"])]
    notes: set[str] = set()

    async def collect() -> None:
        for f in slices:
            reply = await replica.stub.GetKpis(a.GetKpisRequest(filter=f), metadata=replica.md())
            notes.update(k.note for k in reply.kpis if k.note)

    await collect()
    await world.commit(
        [
            snapshot("010932", "ALMOX-BA", v, dt.date(2025, 3, d), simulated=True)
            for d, v in ((1, 9.0), (15, 0.0))
        ]
    )
    await collect()
    fragments = {part for note in notes for part in note.split("; ")}
    assert len(fragments) > 8, fragments
    patterns = _patterns()
    untranslated = sorted(f for f in fragments if not any(p.match(f) for p in patterns))
    assert untranslated == [], untranslated
