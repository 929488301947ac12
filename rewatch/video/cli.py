"""`rewatch video probe|sample|segment PATH`: the video layer from the command line."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from rewatch.clikit import ConfigOpt, SetOpt, console, get_config
from rewatch.video.io import VideoError, probe

app = typer.Typer(help="Probe, sample and segment videos (the video layer).",
                  no_args_is_help=True)

PathArg = Annotated[str, typer.Argument(help="A video file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        console.print(f"[bold]{key}[/bold]: {value}")


def _fail(e: VideoError) -> None:
    console.print(f"[red]video error[/red] {e}")
    raise typer.Exit(1)


@app.command("probe")
def probe_cmd(path: PathArg, as_json: JsonOpt = False, config: ConfigOpt = None,
              set_: SetOpt = None) -> None:
    """Duration, fps, frame count, size, rotation, audio.

    Example: rewatch video probe bikes.mp4 --json
    """
    cfg = get_config(config, set_)
    try:
        info = probe(path, cfg.video.root)
    except VideoError as e:
        _fail(e)
    _emit(info.to_dict(), as_json)


@app.command("sample")
def sample_cmd(
    path: PathArg,
    max_frames: Annotated[int | None, typer.Option(
        help="Cap on frames (qwen-vl-utils max_frames; default video.max_frames).")] = None,
    fps: Annotated[float | None, typer.Option(help="Frames per second (default video.fps).")
                   ] = None,
    start: Annotated[float | None, typer.Option(help="Span start, seconds.")] = None,
    end: Annotated[float | None, typer.Option(help="Span end, seconds.")] = None,
    out_dir: Annotated[str | None, typer.Option(help="Also write the frames as JPEG here.")
                       ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Frame indices, timestamps and sizes as Qwen2.5-VL (qwen-vl-utils) samples them.

    Example: rewatch video sample bikes.mp4 --max-frames 16 --fps 2 --json
    """
    from pathlib import Path

    from rewatch.video.sampling import sample_frames

    cfg = get_config(config, set_)
    try:
        frames = sample_frames(path, cfg.video, start=start, end=end, fps=fps,
                               max_frames=max_frames)
    except VideoError as e:
        _fail(e)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for f in frames:
            f.image.save(Path(out_dir) / f"frame_{f.index:06d}.jpg", quality=90)
    h, w = (frames[0].image.height, frames[0].image.width) if frames else (0, 0)
    _emit({"path": path, "nframes": len(frames), "height": h, "width": w,
           "indices": [f.index for f in frames],
           "timestamps": [round(f.timestamp, 3) for f in frames]}, as_json)


@app.command("segment")
def segment_cmd(path: PathArg, as_json: JsonOpt = False, config: ConfigOpt = None,
                set_: SetOpt = None) -> None:
    """Shots (PySceneDetect) and ~10-minute chunks on shot boundaries, in seconds (M_seg).

    Example: rewatch video segment bikes.mp4 --json
    """
    from rewatch.video.segment import segment

    cfg = get_config(config, set_)
    vlm = cfg.models[cfg.video.segmenter_model] if cfg.video.segmenter == "vlm" else None
    try:
        seg = segment(path, cfg.video, vlm=vlm)
    except VideoError as e:
        _fail(e)
    _emit(seg.to_dict(), as_json)
