"""Helpers to read TwiML answers in tests."""
from __future__ import annotations

import xml.etree.ElementTree as ET


def parse(response) -> ET.Element:
    assert response.status_code == 200, response.data
    assert response.content_type == "text/xml; charset=utf-8"
    root = ET.fromstring(response.data)
    assert root.tag == "Response"
    return root


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def assert_gathers_have_fallback(root: ET.Element) -> None:
    """Every <Gather> must be followed by a verb that runs when nothing was pressed."""
    children = list(root)
    for index, child in enumerate(children):
        if child.tag == "Gather":
            assert index + 1 < len(children), "a <Gather> is the last verb"
            assert children[index + 1].tag in ("Redirect", "Hangup", "Enqueue", "Dial"), \
                children[index + 1].tag


def assert_no_estonian_say(root: ET.Element) -> None:
    for say in root.iter("Say"):
        assert not (say.get("language") or "").startswith("et"), ET.tostring(say)
