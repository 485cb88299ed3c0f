"""The listening report in a real browser: headless Chromium (Debian's ``chromium``) driven over the DevTools
pipe (tests/cdp.py). The page loads from disk with no console errors, the gallery has one row per clip, sorting by
a metric reorders the rows as the values say, the filters hide rows and model columns, every ``<video>`` /
``<audio>`` source is a file that exists and decodes and the browser loads its metadata without a media error and
decodes a picture of every video (copied from its source or re-encoded), and a screenshot is saved under
tests/artifacts/ (ignored by git). Under ``CI=true`` a missing or broken browser fails the test; elsewhere it skips
with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.report import build_report
from tests.cdp import BrowserError, Chromium, find_chromium
from tests.report_fixture import make_report_inputs

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _browser_or_skip() -> Chromium:
    why = None
    if find_chromium() is None:
        why = "no Chromium (apt-get install chromium; .ci/run installs it)"
    else:
        try:
            return Chromium().__enter__()
        except BrowserError as e:
            why = f"Chromium cannot run here: {e}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: the browser test must run, but {why}")
    pytest.skip(why)


ROW_IDS = "Array.from(document.querySelector('table.gallery').tBodies[0].rows).map(r => r.dataset.clip)"
VISIBLE_IDS = ("Array.from(document.querySelector('table.gallery').tBodies[0].rows)"
               ".filter(r => !r.hidden).map(r => r.dataset.clip)")
MEDIA_STATE = ("Array.from(document.querySelectorAll('video, audio')).map(m => ({src: m.getAttribute('src'), "
               "ready: m.readyState, error: m.error ? m.error.code + ' ' + m.error.message : null, "
               "duration: m.duration}))")


@pytest.mark.parametrize("copy_kbps", [800.0, 0.0], ids=["copied", "re-encoded"])
def test_report_in_headless_chromium(tmp_path, copy_kbps):
    """Both ways of making the ground-truth videos: the fixture's small H.264 windows copied from their sources
    (the default) and re-encoded (``copy_kbps=0``)."""
    browser = _browser_or_skip()  # before building anything: a skip costs nothing
    try:
        _check_report_in(browser, tmp_path, copy_kbps)
    finally:
        browser.close()


def _check_report_in(browser: Chromium, tmp_path: Path, copy_kbps: float) -> None:
    from benchmarks.report_media import MediaSettings
    from visualsound.media import probe, read_audio

    paths = make_report_inputs(tmp_path, count=4)
    summary = build_report(paths, tmp_path / "report", settings=MediaSettings(copy_kbps=copy_kbps))
    assert (summary.copied, summary.reencoded) == ((4, 0) if copy_kbps else (0, 4))
    out = summary.index.parent
    report = json.loads((out / "report.json").read_text())
    clips = [c["clip_id"] for c in report["groups"][0]["clips"]]
    rows = {}
    for p in paths:  # the DeSync of each clip per model, to know the sorted order
        df = pd.read_parquet(p.parent / (p.stem + ".clips.parquet"))
        rows[json.loads(p.read_text())["model"]["name"]] = df[df["clip_id"].notna()].set_index("clip_id")["DeSync"]

    page = browser.new_page(width=1500, height=1000)
    page.goto(summary.index.resolve().as_uri())
    assert "DEBUG WEIGHTS" in page.evaluate("document.title")
    assert page.evaluate("!!document.getElementById('debug-banner')")

    # one row per clip, in the selection order
    assert page.evaluate(ROW_IDS) == clips

    # sorting by a metric (the ground-truth model's DeSync: every clip has one): worst (highest) first, then
    # best first
    header = ("Array.from(document.querySelectorAll('table.gallery th[data-metric=\"DeSync\"]'))"
              f".find(th => th.dataset.model === '{_key(report, 'ground-truth')}')")
    expected = list(rows["ground-truth"].loc[clips].sort_values(ascending=False).index)
    assert expected != clips, "the fixture's order must differ from the sorted one for this check to bite"
    page.evaluate(f"{header}.click()")
    assert page.evaluate(ROW_IDS) == expected
    assert page.evaluate(f"{header}.getAttribute('aria-sort')") == "descending"
    page.evaluate(f"{header}.click()")
    assert page.evaluate(ROW_IDS) == expected[::-1]
    # a model's DeSync with a missing value: the empty cell stays last in both directions
    vaura = ("Array.from(document.querySelectorAll('table.gallery th[data-metric=\"DeSync\"]'))"
             f".find(th => th.dataset.model === '{_key(report, 'vaura')}')")
    page.evaluate(f"{vaura}.click()")
    order = page.evaluate(ROW_IDS)
    have = rows["vaura"].loc[clips].dropna().sort_values(ascending=False)
    assert order[:len(have)] == list(have.index) and len(order) == len(clips)
    page.evaluate("document.querySelector('table.gallery th').click()")  # '#': back to the selection order
    assert page.evaluate(ROW_IDS) == clips

    # the text filter hides rows; the model checkbox hides that model's columns
    page.evaluate("(() => { const f = document.querySelector('input.filter'); f.value = 'drum'; "
                  "f.dispatchEvent(new Event('input')); })()")
    visible = page.evaluate(VISIBLE_IDS)
    labels = dict(zip(clips, _labels(paths[0], clips)))
    assert visible == [c for c in clips if "drum" in labels[c]] and 0 < len(visible) < len(clips)
    assert page.evaluate("document.querySelector('.count').textContent") == f"{len(visible)} of {len(clips)} clips"
    page.evaluate("(() => { const f = document.querySelector('input.filter'); f.value = ''; "
                  "f.dispatchEvent(new Event('input')); })()")
    key = _key(report, "vaura")
    page.evaluate(f"(() => {{ const b = document.querySelector('input.model-toggle[value={key}]'); "
                  "b.checked = false; b.dispatchEvent(new Event('change')); })()")
    hidden = page.evaluate(f"Array.from(document.querySelectorAll('.m-{key}'))"
                           ".every(e => getComputedStyle(e).display === 'none')")
    assert hidden
    page.evaluate(f"(() => {{ const b = document.querySelector('input.model-toggle[value={key}]'); "
                  "b.checked = true; b.dispatchEvent(new Event('change')); })()")

    # every media element: its file exists and decodes (PyAV), and the browser loads it without an error
    media = page.wait_for(f"(() => {{ const m = {MEDIA_STATE}; "
                          "return m.every(x => x.ready >= 1 || x.error) ? m : null; })()", timeout=30)
    assert len(media) == 11
    for m in media:
        f = out / m["src"]
        info = probe(f, require_audio=True)
        assert read_audio(f, duration=0.5).shape[1] > 0
        assert m["error"] is None and m["ready"] >= 1, m
        assert abs(m["duration"] - info.duration) < 0.1, (m, info.duration)
    # the browser decodes a picture of every video at 0.5 s (readyState 2: the current frame is there)
    page.evaluate("document.querySelectorAll('video').forEach(v => { v.preload = 'auto'; v.currentTime = 0.5; })")
    pictures = page.wait_for("(() => { const v = Array.from(document.querySelectorAll('video')); "
                             "return v.every(x => x.readyState >= 2 && !x.seeking && !x.error) ? "
                             "v.map(x => [x.videoWidth, x.currentTime]) : null; })()", timeout=30)
    assert len(pictures) == 11 and all(w > 0 and abs(t - 0.5) < 1e-6 for w, t in pictures), pictures
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")  # lazy spectrograms load when seen
    images = page.wait_for("(() => { const i = Array.from(document.images); "
                           "return i.every(x => x.complete && x.naturalWidth > 0) ? "
                           "i.map(x => x.getAttribute('src')) : null; })()", timeout=20)
    assert len(images) == 4 + 11  # distribution plots + spectrograms
    page.evaluate("window.scrollTo(0, 0)")

    assert page.errors() == []
    shot = page.screenshot(ARTIFACTS / "report_screenshot.png", full_page=True)
    print(f"screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _key(report: dict, model: str) -> str:
    """The HTML key (m0, m1, ...) of a model in the report's first group."""
    models = report["groups"][0]["models"]
    (key,) = [k for k, label in models.items() if label.split(" [")[0] == model]
    return key


def _labels(result: Path, clips: list[str]) -> list[str]:
    df = pd.read_parquet(result.parent / (result.stem + ".clips.parquet"))
    labels = df[df["clip_id"].notna()].drop_duplicates("clip_id").set_index("clip_id")["label"]
    return [labels[c] for c in clips]
