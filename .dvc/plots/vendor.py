"""Write .dvc/plots/index.html, the HTML template of `dvc plots show|diff` (`plots.html_template`
in .dvc/config), with the vega, vega-lite and vega-embed browser builds inlined, so that the page
loads no script over the network. See README.md beside this file.

    python .dvc/plots/vendor.py           # npm pack the pinned versions, check their integrity,
                                          # (re)write index.html and the LICENSE-* files
    python .dvc/plots/vendor.py --check   # offline: index.html holds exactly the pinned builds,
                                          # byte for byte, and they are the versions dvc-render uses

The output depends only on the tarballs' bytes: rerunning it with the same pins changes no file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "index.html"

# (package, version, browser build inside the tarball, `npm view <package>@<version> dist.integrity`);
# the versions are the ones dvc-render's VegaRenderer.SCRIPTS loads from cdn.jsdelivr.net, whose
# default file for each is the package.json "jsdelivr" field: these builds.
PINS = [
    ("vega", "5.20.2", "build/vega.min.js",
     "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="),
    ("vega-lite", "5.2.0", "build/vega-lite.min.js",
     "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="),
    ("vega-embed", "6.18.2", "build/vega-embed.min.js",
     "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="),
]

# dvc-render's page (dvc_render/html.py PAGE_HTML) with the three builds in place of its scripts
# placeholder, which is left out on purpose: DVC would put the CDN <script src> tags there.
# The charset is needed because the builds hold non-ASCII characters (a file:// page has no HTTP
# header to say it). `{refresh_tag}` and `{plot_divs}` are DVC's placeholders.
HEAD = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega, vega-lite and vega-embed inlined by .dvc/plots/vendor.py (see README.md there):
         this page loads no script over the network and works from file:// -->
"""
SCRIPT = '<script data-package="{package}@{version}" data-file="{file}" data-sha256="{sha256}">{code}</script>\n'
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""
SCRIPT_RE = re.compile(r'<script data-package="([^"@]+)@([^"]+)" data-file="([^"]+)" '
                       r'data-sha256="([0-9a-f]{64})">(.*?)</script>\n', re.S)


def render(builds: list[tuple[str, str, str, str]]) -> str:
    """The template for [(package, version, file, code)], in load order."""
    scripts = "".join(SCRIPT.format(package=p, version=v, file=f, code=code,
                                    sha256=hashlib.sha256(code.encode()).hexdigest()) for p, v, f, code in builds)
    return HEAD + scripts + TAIL


def check_inlinable(name: str, code: str) -> None:
    """Verbatim inside <script>...</script> of a page that DVC fills by str.replace."""
    for bad in ("</script", "<!--", "{plot_divs}", "{refresh_tag}", "{scripts}"):
        if bad in code.lower():
            sys.exit(f"{name} contains {bad!r}: it cannot be inlined verbatim; escape it in render()")


def pack(package: str, version: str, integrity: str, tmp: Path) -> Path:
    name = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=tmp, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tarball = tmp / name
    algo, digest = integrity.split("-", 1)
    got = base64.b64encode(hashlib.new(algo, tarball.read_bytes()).digest()).decode()
    if got != digest:
        sys.exit(f"{tarball.name}: integrity {algo}-{got}, pinned {integrity}")
    return tarball


def update() -> None:
    builds = []
    with tempfile.TemporaryDirectory() as tmp:
        for package, version, file, integrity in PINS:
            tarball = pack(package, version, integrity, Path(tmp))
            with tarfile.open(tarball) as tar:
                code = tar.extractfile(f"package/{file}").read().decode("utf-8")
                license_text = tar.extractfile("package/LICENSE").read()
            check_inlinable(f"{package}@{version} {file}", code)
            builds.append((package, version, file, code))
            (HERE / f"LICENSE-{package}").write_bytes(license_text)
            print(f"{package}@{version} {integrity}\n  {file} sha256 {hashlib.sha256(code.encode()).hexdigest()}")
    TEMPLATE.write_text(render(builds), encoding="utf-8", newline="")
    print(f"wrote {TEMPLATE} sha256 {hashlib.sha256(TEMPLATE.read_bytes()).hexdigest()}")


def dvc_render_versions() -> list[tuple[str, str]] | None:
    """[(package, version)] that dvc-render's VegaRenderer loads from the CDN, None without dvc-render."""
    try:
        from dvc_render.vega import VegaRenderer
    except ImportError:
        return None
    return re.findall(r'<script src="https://cdn\.jsdelivr\.net/npm/([^"@]+)@([^"/]+)"></script>', VegaRenderer.SCRIPTS)


def check() -> None:
    html = TEMPLATE.read_text(encoding="utf-8")
    found = [(p, v, f, code, sha) for p, v, f, sha, code in SCRIPT_RE.findall(html)]
    assert [(p, v, f) for p, v, f, _, _ in found] == [(p, v, f) for p, v, f, _ in PINS], \
        f"index.html inlines {[(p, v, f) for p, v, f, _, _ in found]}, pinned {PINS}"
    for package, version, file, code, sha in found:
        assert hashlib.sha256(code.encode()).hexdigest() == sha, f"{package}@{version} {file}: inlined bytes changed"
        assert (HERE / f"LICENSE-{package}").is_file(), f"LICENSE-{package} missing"
    assert html == render([(p, v, f, code) for p, v, f, code, _ in found]), "index.html differs from what vendor.py writes"
    used = dvc_render_versions()
    if used is not None:
        assert used == [(p, v) for p, v, _, _ in PINS], f"dvc-render loads {used}, index.html inlines {PINS}: update PINS"
    print(f"ok: {', '.join(f'{p}@{v}' for p, v, _, _ in PINS)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify index.html offline instead of rewriting it")
    if parser.parse_args().check:
        check()
    else:
        update()
