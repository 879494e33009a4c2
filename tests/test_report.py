"""`capsule report`: real capsules made by the real CLI, pages opened in real headless Chromium.

Each page must load with no console error and no network request but its own file, hold every
section and figure its capsules call for, and embed the same data `--json` prints. A full-page
screenshot of each is written to build/test-artifacts/report/ (look at them). Chromium is
Debian's (`scripts/chromium-up.sh`, run by `make test`), driven through Playwright, which never
downloads a browser here; a missing Chromium fails these tests, it does not skip them.

The capsules are the paper's 2-D experiment cut to 3 epochs (about a second of training each):
(a) a fresh capsule and an identical replay, (b) the same capsule swept over 4 init seeds and
4 data orders with a planted divergent replay (`replay --set train.lr=…`), (c) a cross-device
matrix, (d) PyTorch against TensorFlow; and (e) the schema-v1 fixture, which holds a sweep, an
upgrade audit and a matrix without any training.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import CAPSULES, ROOT, assert_refused, capsule, ok

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ARTIFACTS = ROOT / "build" / "test-artifacts" / "report"
V1 = ROOT / "tests" / "fixtures" / "schema-v1"
BASE_FIGURES = {"curves-loss", "curves-eval_error", "curves-trace"}
DRIFT_FIGURES = {"drift-abs", "drift-ulp"}


def short_spec(directory: Path, name: str) -> Path:
    """A paper capsule's spec with 3 epochs instead of 10."""
    text = (CAPSULES / name / "capsule.toml").read_text()
    spec = directory / f"{name}.toml"
    spec.write_text(text.replace("epochs = 10", "epochs = 3"))
    return spec


@dataclass(frozen=True)
class Made:
    cap: Path  # paper-2d-torch, 3 epochs
    replay: Path  # an identical replay of it
    swept: Path  # a copy swept over 4 init seeds and 4 orders
    lr: Path  # a replay of it with train.lr=0.005
    matrix: Path  # capsule matrix --devices cpu:1,cpu:2
    tf: Path  # paper-2d-tensorflow, 3 epochs


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    root = tmp_path_factory.mktemp("report")
    cap, tf = root / "paper-2d-torch", root / "paper-2d-tensorflow"
    ok(capsule("freeze", short_spec(root, "paper-2d-torch"), "--out", cap))
    ok(capsule("replay", cap, "--out", root / "r1"))
    swept = root / "swept"
    shutil.copytree(cap, swept)
    ok(capsule("sweep", swept, "--seeds", "4", "--jobs", "2"))
    ok(capsule("sweep", swept, "--orders", "4", "--jobs", "2"))
    ok(capsule("replay", swept, "--set", "train.lr=0.005", "--out", root / "lr"))
    ok(capsule("matrix", cap, "--devices", "cpu:1,cpu:2", "--out", root / "matrix"))
    ok(capsule("freeze", short_spec(root, "paper-2d-tensorflow"), "--out", tf))
    return Made(cap, root / "r1", swept, root / "lr", root / "matrix", tf)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium through Playwright (its own browsers are never fetched)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run scripts/chromium-up.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium)
        yield launched
        launched.close()


def report(*args: object) -> dict[str, Any]:
    """`capsule report … --json`: the result document."""
    result: dict[str, Any] = json.loads(ok(capsule("report", *args, "--json")).stdout)
    return result


@dataclass
class Opened:
    sections: list[str]
    figures: dict[str, tuple[float, float]]  # name → the figure's drawn width and height
    verdicts: list[str]
    data: dict[str, Any]
    text: str


def open_page(
    browser: Browser,
    page_file: Path,
    shot: str,
    width: int = 1200,
    scheme: str = "light",
    media: str = "screen",
) -> Opened:
    """Load the page; fail on any console error, page error or request but the page itself;
    read its sections, figures, verdict badges and embedded data; screenshot the full page."""
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        color_scheme=scheme,  # type: ignore[arg-type]
    )
    page = context.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    url = page_file.resolve().as_uri()
    page.goto(url, wait_until="load")
    page.emulate_media(media=media)  # type: ignore[arg-type]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)
    opened = Opened(
        sections=page.eval_on_selector_all("section[data-section]", "s => s.map(e => e.id)"),
        figures={
            f["name"]: (f["w"], f["h"])
            for f in page.eval_on_selector_all(
                "figure[data-figure]",
                """fs => fs.map(f => { const r = f.querySelector("svg").getBoundingClientRect();
                       return {name: f.dataset.figure, w: r.width, h: r.height}; })""",
            )
        },
        verdicts=page.eval_on_selector_all("[data-verdict]", "b => b.map(e => e.dataset.verdict)"),
        data=page.evaluate("JSON.parse(document.getElementById('capsule-data').textContent)"),
        text=page.inner_text("body"),
    )
    context.close()
    assert not problems, problems
    assert requests == [url], requests
    return opened


def check(opened: Opened, result: dict[str, Any], sections: list[str], figures: set[str]) -> None:
    assert opened.sections == result["sections"] == sections
    assert figures <= set(opened.figures), sorted(opened.figures)
    assert len(opened.figures) == result["figures"]
    assert all(w > 100 and h > 60 for w, h in opened.figures.values()), opened.figures
    assert opened.data == result["data"]  # the page embeds exactly what --json prints


def test_fresh_capsule_and_an_identical_replay(
    made: Made, browser: Browser, tmp_path: Path
) -> None:
    out = tmp_path / "a.html"
    result = report(made.cap, made.replay, "--out", out)
    opened = open_page(browser, out, "a-fresh-identical")
    sections = ["summary", "environment", "curves", "drift", "checklist"]
    check(opened, result, sections, BASE_FIGURES | DRIFT_FIGURES)
    assert opened.verdicts == ["identical"]
    assert "its trace matches the baseline's at every checkpoint" in opened.text
    assert "No difference in the" in opened.text  # environments: nothing highlighted
    checks = {c["item"].split(":")[0]: c["met"] for c in result["data"]["checklist"]}
    assert checks["Statistical significance"] is False  # no sweep yet: no error bars
    assert checks["Results Reproduced"] is True
    assert "capsule replay" in opened.text  # the exact commands to replay


def test_swept_capsule_with_a_planted_divergent_replay(
    made: Made, browser: Browser, tmp_path: Path
) -> None:
    out = tmp_path / "b.html"
    result = report(made.swept, made.replay, made.lr, "--out", out)
    opened = open_page(browser, out, "b-swept-diverged")
    sections = ["summary", "environment", "curves", "drift", "variance", "checklist"]
    variance = {
        f"variance-{axis}-{m}"
        for axis in ("seeds", "orders")
        for m in ("train_error", "dev_error", "eval_error")
    }
    check(opened, result, sections, BASE_FIGURES | DRIFT_FIGURES | variance)
    assert opened.verdicts == ["identical", "diverged"]
    data = result["data"]
    lr = data["compared"][1]
    assert lr["verdict"]["reasons"][0]["kind"] == "override"
    assert [r["field"] for r in lr["environment"] if r["differs"]] == [
        "replay --set train.lr",
        "adam.lr",
    ]
    assert data["curves"][2]["first_divergent_step"] is not None
    assert "first divergent checkpoint at step" in opened.text
    axes = {a["axis"]: a["runs"] for a in data["variance"]["axes"]}
    assert axes == {"seeds": 4, "orders": 4}
    tests = {(t["label"], t["tost"]["metric"]): t["tost"] for t in data["variance"]["tests"]}
    assert len(tests) == 6 and not all(t["equivalent"] for k, t in tests.items() if k[0] == "lr")
    assert {m["label"] for m in data["variance"]["marks"]} == {"baseline", "r1", "lr"}
    # the same page on a phone, in the dark, and as printed
    phone = open_page(browser, out, "b-swept-diverged-phone-dark", width=390, scheme="dark")
    assert phone.sections == sections and all(w <= 390 for w, _ in phone.figures.values())
    printed = open_page(browser, out, "b-swept-diverged-print", media="print")
    assert printed.sections == sections


def test_a_cross_device_matrix(made: Made, browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "c.html"
    result = report(made.cap, made.matrix, "--out", out)
    opened = open_page(browser, out, "c-matrix")
    check(opened, result, ["summary", "curves", "matrix", "checklist"], {"matrix-1"})
    study = result["data"]["matrices"][0]
    assert study["metric"] == "eval_error"
    assert sorted(study["identical_cells"]) == [
        ["cpu:1", "cpu:1"],
        ["cpu:1", "cpu:2"],
        ["cpu:2", "cpu:1"],
        ["cpu:2", "cpu:2"],
    ]
    assert "4 of 4 cells bit-identical to the baseline" in opened.text


def test_pytorch_against_tensorflow(made: Made, browser: Browser, tmp_path: Path) -> None:
    out = tmp_path / "d.html"
    result = report(made.cap, made.tf, "--out", out)
    opened = open_page(browser, out, "d-torch-vs-tensorflow")
    sections = ["summary", "environment", "curves", "drift", "checklist"]
    check(opened, result, sections, BASE_FIGURES | DRIFT_FIGURES)
    tf = result["data"]["compared"][0]
    assert tf["facts"]["kind"] == "capsule" and tf["facts"]["framework"] == "tensorflow"
    assert tf["verdict"]["reasons"][0]["kind"] == "framework"
    assert tf["environment"][0] == {
        "group": "framework",
        "field": "framework",
        "baseline": f"torch {result['data']['capsule']['framework_version']}",
        "other": f"tensorflow {tf['facts']['framework_version']}",
        "differs": True,
    }
    assert opened.verdicts == [tf["verdict"]["verdict"]]


def test_every_section_from_stored_studies(browser: Browser, tmp_path: Path) -> None:
    """The schema-v1 fixture holds a sweep and an upgrade audit, a replay and a matrix: all
    eight sections, without training anything."""
    out = tmp_path / "e.html"
    result = report(V1 / "capsule", V1 / "replay", V1, "--out", out)
    opened = open_page(browser, out, "e-every-section")
    check(
        opened,
        result,
        ["summary", "environment", "curves", "drift", "variance", "matrix", "audits", "checklist"],
        {"matrix-1", "variance-seeds-eval_error"},
    )
    audit = result["data"]["audits"][0]
    assert audit["changes"] == [{"name": "numpy", "old": "2.4.6", "new": "2.4.5"}]
    assert "Bisection: not run" in opened.text and "numpy 2.4.6 → 2.4.5" in opened.text
    assert result["data"]["matrices"][0]["identical_cells"] == [["cpu:1", "cpu:1"]]


def test_the_same_capsules_give_the_same_bytes(made: Made, tmp_path: Path) -> None:
    for name in ("one.html", "two.html"):
        ok(
            capsule(
                "report", made.swept, made.replay, made.lr, made.matrix, "--out", tmp_path / name
            )
        )
    assert (tmp_path / "one.html").read_bytes() == (tmp_path / "two.html").read_bytes()


def test_markdown_with_its_figures_beside_it(made: Made, tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    result = report(made.swept, made.lr, "--out", out, "--format", "md")
    text = out.read_text()
    folder = tmp_path / "report-files"
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == result["figures"] and len(result["files"]) == len(pngs) + 1
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](report-files/{png.name})" in text
    assert json.loads((folder / "capsule-data.json").read_text()) == result["data"]
    for title in ("## Summary", "## Variance over seeds and orders", "## Reproducibility"):
        assert title in text
    again = capsule("report", made.swept, made.lr, "--out", out, "--format", "md")
    assert_refused(again, str(out), "--force")
    ok(capsule("report", made.swept, "--out", out, "--format", "md", "--force"))
    assert len(list(folder.glob("*.png"))) < len(pngs)  # the folder was replaced, not merged
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_bad_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    cap = tmp_path / "capsule"
    shutil.copytree(V1 / "capsule", cap)
    out = tmp_path / "r.html"
    assert_refused(capsule("report", V1 / "replay", "--out", out), "is a replay, not a capsule")
    assert_refused(capsule("report", cap, tmp_path, "--out", out), str(tmp_path), "matrix.json")
    assert_refused(capsule("report", cap, tmp_path / "nope", "--out", out), "not a directory")
    broken = tmp_path / "m"
    broken.mkdir()
    matrix = json.loads((V1 / "matrix.json").read_text())
    matrix["cells"][0]["train_error"] = "low"
    (broken / "matrix.json").write_text(json.dumps(matrix))
    assert_refused(
        capsule("report", cap, broken, "--out", out), "matrix.json", "cells.0.train_error"
    )
    assert_refused(capsule("report", cap, "--out", tmp_path), "is a directory")
    out.write_text("mine")
    assert_refused(capsule("report", cap, "--out", out), str(out), "--force")
    assert out.read_text() == "mine"
    manifest = cap / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"tiny-v1"', '"tiny-v2"'))
    altered = capsule("report", cap, "--out", tmp_path / "x.html")
    assert altered.returncode == 3 and "altered" in altered.stderr
    assert "Traceback" not in altered.stderr and not (tmp_path / "x.html").exists()


def test_help_names_what_other_may_be_and_start_up_stays_light() -> None:
    shown = ok(capsule("report", "--help")).stdout
    for word in ("replay.json", "manifest.json", "matrix.json", "--format", "--force"):
        assert word in shown, word
    code = (
        "import sys, builder.cli; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'jinja2'}))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]", loaded.stderr
