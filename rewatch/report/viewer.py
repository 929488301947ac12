"""`rewatch view RUN`: one self-contained HTML file a person can open (no server).

Every model-written string is escaped (Jinja2 autoescape); the only markup built from model
text is the <action>/<observation> highlighting and timestamp links, made from the *escaped*
text, so a caption holding `<script>` shows as text.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from rewatch.config import VideoConfig
from rewatch.schema import mmss
from rewatch.store import JsonlFile
from rewatch.text import clock_seconds

log = logging.getLogger(__name__)

THUMB_WIDTH = 112
MAX_THUMBS = 8  # per video: keeps the file small (about 3-4 KB a thumbnail)
TAG = re.compile(r"&lt;(/?)(action|observation|answer|think)&gt;")
TIME = re.compile(r"\b(?:(\d{1,2}):)?(\d{1,2}):(\d{2})\b")


def _read(run: Path, name: str) -> list[dict[str, Any]]:
    return list(JsonlFile(run / name).read())


def highlight_chain(text: str, video_id: str, line_starts: list[float]) -> Markup:
    """Escape a chain of thought, then mark its tags and link MM:SS times to caption lines."""
    safe = str(escape(text))

    def tag(m: re.Match[str]) -> str:
        return "</span>" if m.group(1) else f'<span class="tag-{m.group(2)}">'

    def link(m: re.Match[str]) -> str:
        try:
            t = clock_seconds(m.group(0))
        except ValueError:  # "12:75" is no time
            return m.group(0)
        if not line_starts:
            return m.group(0)
        nearest = min(range(len(line_starts)), key=lambda i: abs(line_starts[i] - t))
        return f'<a class="ts" href="#{video_id}-l{nearest}">{m.group(0)}</a>'

    safe = TAG.sub(tag, safe)
    safe = TIME.sub(link, safe)
    # unbalanced tags in model text must not leave spans open beyond this chain
    opened = safe.count("<span") - safe.count("</span>")
    return Markup(safe + "</span>" * max(0, opened))


def _thumbnails(path: str, times: list[float], root: str | None) -> list[dict[str, Any]]:
    from rewatch.video.sampling import frames_at

    if not times:
        return []
    n = min(MAX_THUMBS, len(times))  # evenly spread over the whole video
    picked = [times[round(i * (len(times) - 1) / max(1, n - 1))] for i in range(n)]
    try:
        frames = frames_at(path, picked, VideoConfig(root=root), resize=False)
    except Exception as e:  # a report without pictures is still a report
        log.warning("no thumbnails for %s: %s", path, e)
        return []
    out = []
    for t, f in zip(picked, frames, strict=False):
        img = f.image.convert("RGB")
        img.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=60)
        out.append({"t": t, "label": mmss(t),
                    "src": "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()})
    return out


def _pct(t: float, duration: float) -> float:
    return round(100.0 * max(0.0, min(t, duration)) / duration, 3) if duration > 0 else 0.0


def build_report(run_dir: str | Path, *, thumbnails: bool = True) -> Path:
    """Write RUN/report.html from the run's JSONL files and return its path."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}")
    videos = {v["id"]: v for v in _read(run, "videos.jsonl")}
    captions = {c["video_id"]: c for c in _read(run, "captions.jsonl")}
    by_video: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for q in _read(run, "qa.jsonl"):
        by_video[q["video_id"]]["qa"].append(q)
    for m in _read(run, "mcq.jsonl"):
        by_video[m["video_id"]]["mcq"].append(m)
    rewards = {r["id"]: r for r in _read(run, "rewards.jsonl")}
    for c in _read(run, "cot.jsonl"):
        c["reward"] = rewards.get(c["id"])
        by_video[c["video_id"]]["cot"].append(c)
    rejected = _read(run, "rejected.jsonl")
    errors = _read(run, "errors.jsonl")

    sections = []
    for vid in sorted(set(videos) | set(captions), key=lambda v: videos.get(v, {}).get("path", v)):
        v = videos.get(vid, {})
        cap = captions.get(vid)
        duration = float(v.get("duration") or (cap or {}).get("duration") or 0.0)
        lines = (cap or {}).get("detail", [])
        starts = [ln["start"] for ln in lines]
        mcq_by_qa: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in by_video[vid]["mcq"]:
            mcq_by_qa[m["qa_id"]].append(m)
        sections.append({
            "id": f"v{vid}",
            "name": Path(v.get("path") or (cap or {}).get("video_path", vid)).name,
            "duration": mmss(duration),
            "meta": v,
            "shots": [{"left": _pct(a, duration), "width": _pct(b, duration) - _pct(a, duration),
                       "label": f"{mmss(a)}-{mmss(b)}"} for a, b in v.get("shots", [])],
            "chunks": [{"left": _pct(a, duration), "label": mmss(a)}
                       for a, _ in v.get("chunks", [])],
            "lines": [{"n": i, "left": _pct(ln["start"], duration), "span": f"{mmss(ln['start'])}-"
                       f"{mmss(ln['end'])}", "text": ln["text"]} for i, ln in enumerate(lines)],
            "summary": (cap or {}).get("summary", ""),
            "captioner": (cap or {}).get("captioner", ""),
            "thumbs": [dict(t, left=_pct(t["t"], duration)) for t in
                       (_thumbnails(v["path"], starts, None) if thumbnails and v.get("path")
                        else [])],
            "qa": [dict(q, mcqs=mcq_by_qa.get(q["id"], []),
                        filters_json=json.dumps(q.get("filters", {}), indent=1,
                                                ensure_ascii=False)) for q in by_video[vid]["qa"]],
            "cot": [dict(c, html=highlight_chain(c.get("cot", ""), f"v{vid}", starts))
                    for c in by_video[vid]["cot"]],
        })

    audit = _load_json(run / "audit.json")
    plots = [{"name": p.name, "src": "data:image/png;base64," + base64.b64encode(p.read_bytes())
              .decode()} for p in sorted(run.glob("audit*.png"))]
    env = Environment(loader=PackageLoader("rewatch.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.get_template("report.html.j2").render(
        run=run.name, sections=sections, audit=audit, plots=plots, rejected=rejected[:500],
        n_rejected=len(rejected), errors=errors,
        counts={"videos": len(videos), "caption lines": sum(len(s["lines"]) for s in sections),
                "questions": sum(len(s["qa"]) for s in sections),
                "MCQs": sum(len(by_video[s["id"][1:]]["mcq"]) for s in sections),
                "chains": sum(len(s["cot"]) for s in sections), "errors": len(errors)},
    )
    out = run / "report.html"
    out.write_text(html, encoding="utf-8")
    return out


def _load_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
