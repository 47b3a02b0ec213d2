"""netsurgeon.provenance: the note for a run resumed by another netsurgeon version."""

from __future__ import annotations

from netsurgeon import __version__
from netsurgeon.provenance import VERSION_KEY, other_version_note


def test_no_note_for_this_version() -> None:
    assert other_version_note({VERSION_KEY: __version__, "epoch": 1}, "run") is None


def test_the_note_names_both_versions_and_what_is_resumed() -> None:
    assert other_version_note({VERSION_KEY: "0.0.1"}, "runs/a") == (
        f"resuming runs/a, written by netsurgeon 0.0.1, with netsurgeon {__version__}: what it "
        "finished is kept and the rest is computed by this version, so the result may differ "
        "from an uninterrupted run's where the two versions train differently"
    )


def test_a_record_without_a_version_is_from_an_older_netsurgeon() -> None:
    for record in ({}, {VERSION_KEY: None}, {VERSION_KEY: 3}):
        note = other_version_note(record, "ckpt.pt")
        assert note is not None
        assert note.startswith("resuming ckpt.pt, written by a netsurgeon that did not record")
