"""The page of `dvc plots show` draws every chart with no network: the repository's HTML template
(.dvc/config `plots.html_template` = .dvc/plots/index.html) inlines vega, vega-lite and
vega-embed, where DVC's default page loads them from cdn.jsdelivr.net.

    .venv/bin/python -m pytest tests/pipeline/test_plots_offline.py -q

A fresh copy of the repo (`PipelineRepo`) runs `dvc repro` on the synthetic archive, then
`dvc plots show -o <dir>` with the committed config, and headless Chromium opens the page from
file:// inside a new network namespace (`unshare -n`: no interface but a down loopback) and dumps
the DOM once the page has settled. Every vega chart that dvc.yaml declares must have been drawn:
vega-embed replaced the chart's <div> content with a chart wrapper holding a sized
`<canvas class="marks">`; rendered again with vega's SVG renderer, each chart holds data marks.
The control: the same plots on DVC's default page (scripts from the CDN) draw no chart there.

Needs Chromium (Debian: `apt-get install chromium`; .ci/run installs it): skipped without it,
except in CI (CI=true), where its absence fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dvc_render.base import Renderer
from dvc_render.html import PAGE_HTML
from dvc_render.vega import VegaRenderer

from tests.helpers.repo import PINNED, PipelineRepo

pytestmark = pytest.mark.slow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg")
DATA_SUFFIXES = (".csv", ".tsv", ".json", ".yaml", ".yml")  # what dvc-render's VegaRenderer draws
VIRTUAL_TIME_MS = 15000   # Chromium's virtual clock: the page's timers run, the wall clock is not waited on
CHROMIUM_TIMEOUT = 180    # seconds of wall time for one page, generous for a loaded 2-core machine
# After the inlined libraries: vegaEmbed with vega's SVG renderer, so that the marks are in the DOM.
SVG_HOOK = ('<script>var embedCanvas = vegaEmbed; vegaEmbed = function (el, spec, opt) '
            '{ return embedCanvas(el, spec, Object.assign({renderer: "svg"}, opt)); };</script>\n')


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: .ci/run installs it; this test must run in CI)")
    pytest.skip(reason)


def offline_browser() -> list[str]:
    """The command prefix that starts Chromium with no network: [unshare -n, chromium, flags...]."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")   # CHROMIUM: another Chromium-based browser
    if chromium is None:
        unavailable("Chromium is not installed: `apt-get update && apt-get install -y chromium` (Debian)")
    # root: a network namespace alone; otherwise also a user namespace in which we are root
    netns = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]
    probe = subprocess.run([*netns, "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        unavailable(f"cannot start a process without network ({' '.join(netns)}): {probe.stderr.strip()}")
    return [*netns, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--virtual-time-budget={VIRTUAL_TIME_MS}"]


def dump_dom(browser: list[str], page: Path, profile: Path) -> str:
    """The DOM of `page` (file://) after Chromium ran its scripts, offline."""
    profile.mkdir()
    cmd = [*browser, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()]
    # its own process group, so that a hung Chromium is killed with all its helpers
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True, env=dict(os.environ, HOME=str(profile)))
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"Chromium did not finish {page} in {CHROMIUM_TIMEOUT} s")
    assert proc.returncode == 0 and "</html>" in out, \
        f"{' '.join(cmd)} exited {proc.returncode}\nstderr (tail):\n{err[-3000:]}"
    return out


def declared_charts(repo: Path) -> list[str]:
    """The <div> ids DVC gives the vega charts (not the images) that dvc.yaml's `plots:` declares."""
    ids = []

    def data_files(path: str) -> list[str]:
        if (repo / path).is_dir():
            return sorted(str(p.relative_to(repo)) for p in (repo / path).rglob("*") if p.suffix in DATA_SUFFIXES)
        return [] if path.endswith(IMAGE_SUFFIXES) else [path]

    for entry in yaml.safe_load((repo / "dvc.yaml").read_text()).get("plots") or []:
        if isinstance(entry, str):
            ids += data_files(entry)
            continue
        (name, definition), = entry.items()
        if isinstance(definition, dict) and isinstance(definition.get("y"), dict):
            ids.append(name)      # an id of its own, the data named in y
        else:
            ids += data_files(name)  # the key is the data file (or folder)
    return list(dict.fromkeys(Renderer.remove_special_chars(i) for i in ids))  # as DVC names the <div>s


class Charts(HTMLParser):
    """Per chart <div id>: whether vega drew it (a sized `marks` canvas or svg inside vega-embed's
    chart wrapper) and how many data marks its SVG holds."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})

    def __init__(self, ids: list[str]):
        super().__init__()
        self.ids = set(ids)
        self.stack: list[tuple[str, dict]] = []   # open elements: (tag, attrs)
        self.drawn = dict.fromkeys(ids, False)
        self.marks = dict.fromkeys(ids, 0)

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        chart = next((a["id"] for _, a in reversed(self.stack) if a.get("id") in self.ids), None)
        if chart is not None:
            wrapped = any(a.get("role") == "graphics-document" for _, a in self.stack)
            if wrapped and "marks" in attrs.get("class", "").split() and tag in ("canvas", "svg"):
                self.drawn[chart] |= float(attrs.get("width") or 0) > 0 and float(attrs.get("height") or 0) > 0
            parent_class = self.stack[-1][1].get("class", "").split() if self.stack else []
            if attrs.get("role") == "graphics-symbol" and "role-mark" in parent_class:
                self.marks[chart] += 1
        if tag not in self.VOID:
            self.stack.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


def charts(dom: str, ids: list[str]) -> Charts:
    parser = Charts(ids)
    parser.feed(dom)
    parser.close()
    return parser


def test_plots_show_page_draws_every_chart_offline(synthetic_archive, tmp_path):
    browser = offline_browser()  # first: skip (or fail in CI) before the pipeline runs
    repo = PipelineRepo.create(tmp_path / "repo", *synthetic_archive, **PINNED)
    repo.dvc("repro")
    ids = declared_charts(repo.path)
    assert ids, "dvc.yaml declares no vega chart: nothing to check"

    # the page with the repository's config, written outside the repo as `make pr-report` does
    repo.dvc("plots", "show", "-o", str(tmp_path / "page"))
    page = tmp_path / "page" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"<script\b[^>]*\bsrc\s*=", html, re.I), "the page loads a script from a file or URL"
    assert "cdn.jsdelivr" not in html
    # the inlined libraries are the versions dvc-render's own page would load
    assert re.findall(r'<script data-package="([^"]+)"', html) == \
        [f"{p}@{v}" for p, v in re.findall(r"cdn\.jsdelivr\.net/npm/([^@\"]+)@([^\"/]+)", VegaRenderer.SCRIPTS)]

    found = charts(dump_dom(browser, page, tmp_path / "profile"), ids)
    assert [i for i in ids if not found.drawn[i]] == [], f"charts not drawn offline; drawn: {found.drawn}"

    svg_page = page.with_name("svg.html")
    head_end = html.rindex("</head>")  # the last one: the inlined libraries hold one in a string
    svg_page.write_text(html[:head_end] + SVG_HOOK + html[head_end:], encoding="utf-8")
    found = charts(dump_dom(browser, svg_page, tmp_path / "profile-svg"), ids)
    assert all(found.drawn.values()) and all(found.marks.values()), f"charts without data marks: {found.marks}"

    # the control: DVC's default page (dvc_render's PAGE_HTML) loads the libraries from the CDN,
    # so offline it draws nothing, and neither would a page whose libraries failed to load
    default_template = tmp_path / "default.html"
    default_template.write_text(PAGE_HTML, encoding="utf-8")
    repo.dvc("plots", "show", "-o", str(tmp_path / "default"), "--html-template", str(default_template))
    default_page = tmp_path / "default" / "index.html"
    assert '<script src="https://cdn.jsdelivr.net/npm/vega@' in default_page.read_text(encoding="utf-8")
    found = charts(dump_dom(browser, default_page, tmp_path / "profile-default"), ids)
    assert not any(found.drawn.values()), f"the CDN page drew charts with no network: {found.drawn}"
