"""A real headless Chromium (Debian's ``chromium``) loading a page, and the DOM it built.

``render`` runs the browser once: it loads the URL, lets the page's scripts run (fetches
included) for a virtual-time budget, then prints the DOM or writes a screenshot. ``Page``
parses that DOM into elements a test can query (the standard library's HTML parser).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)

#: headless, as root, on a machine with no network beyond loopback
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def render(
    url: str, *, screenshot: Path | None = None, size: tuple[int, int] = (1400, 1000), wait_ms: int = 2500
) -> str:
    """The DOM of ``url`` once its scripts ran for ``wait_ms`` of virtual time (or, with
    ``screenshot``, a PNG of it written there)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        args = [
            CHROMIUM,
            *_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={wait_ms}",
        ]
        args.append(f"--screenshot={screenshot}" if screenshot is not None else "--dump-dom")
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=90)
    if screenshot is not None:
        assert screenshot.is_file(), done.stderr[-2000:]
        return ""
    assert "<html" in done.stdout, done.stderr[-2000:]
    return done.stdout


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def iter(self) -> list[Element]:
        out: list[Element] = []
        for c in self.children:
            if isinstance(c, Element):
                out.append(c)
                out.extend(c.iter())
        return out

    def find_all(self, tag: str | None = None, *, cls: str | None = None, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.iter()
            if (tag is None or e.tag == tag)
            and (cls is None or cls in e.classes)
            and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def by_id(self, id_: str) -> Element:
        (found,) = self.find_all(id=id_)
        return found


class Page(HTMLParser):
    """The DOM Chromium printed, as a tree of :class:`Element`."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self._stack = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(element)
        if tag not in _VOID:
            self._stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)
