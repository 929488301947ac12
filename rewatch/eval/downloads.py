"""The benchmarks as their authors publish them: Hugging Face snapshot folders (parquet or JSON
files and the videos, zipped or not) and MINERVA's JSON with its videos in a folder.

`--data` may name the question file or the snapshot folder; the question file and the videos
folder are then found where each release keeps them (`Benchmark.download_files` and
`download_videos`). Videos still inside a downloaded zip (one file, or split parts
`videos.zip.part*` joined in order) are extracted member by member on first use, to the path the
loader expects, so only the questions asked cost disk space.
"""

from __future__ import annotations

import io
import logging
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from rewatch.eval.benchmarks.base import Benchmark, BenchmarkFormatError, EvalItem

log = logging.getLogger(__name__)


def resolve_download(bench: Benchmark, data: str | Path, videos: str | Path | None
                     ) -> tuple[Path, Path]:
    """(question file or folder of shards, videos folder) for `--data` / `--videos`."""
    data = Path(data).expanduser()
    if not data.exists():
        raise BenchmarkFormatError(f"benchmark data not found: {data}")
    root = data if data.is_dir() else data.parent
    if data.is_dir():
        found = _find_data(bench, data)
        if found is None:
            raise BenchmarkFormatError(
                f"{data}: no {bench.name} question file in this folder; looked for "
                f"{', '.join(bench.download_files)} (download: {bench.download_hint})")
        data = found
    if videos is not None:
        return data, Path(videos).expanduser()
    for rel in bench.download_videos:
        for base in (root, data.parent if data.is_file() else data):
            cand = (base / rel)
            if cand.is_dir():
                return data, cand
    first = bench.download_videos[0] if bench.download_videos else "."
    return data, root / first


def _find_data(bench: Benchmark, folder: Path) -> Path | None:
    for pattern in bench.download_files:
        hits = sorted(p for p in folder.glob(pattern) if p.is_file())
        if not hits:
            continue
        if len(hits) > 1 and all(p.suffix == ".parquet" for p in hits):
            return hits[0].parent  # shards of one split: load_rows reads them all
        return hits[0]
    return None


# --- zipped videos -----------------------------------------------------------------------------

def _natural(p: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


class JoinedParts(io.RawIOBase):
    """Read-only, seekable view of split archive parts as one file (what `cat part*` makes),
    so `zipfile` can read members without the parts being joined on disk."""

    def __init__(self, parts: list[Path]):
        self.parts = parts
        self.sizes = [p.stat().st_size for p in parts]
        self.total = sum(self.sizes)
        self.pos = 0
        self._files = [open(p, "rb") for p in parts]  # noqa: SIM115 (closed in close())

    def readable(self) -> bool:
        """Always readable."""
        return True

    def seekable(self) -> bool:
        """Always seekable."""
        return True

    def tell(self) -> int:
        """The position in the joined file."""
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move in the joined file."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.total}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill `buf` from the parts that hold the current position."""
        want, done, start = len(buf), 0, 0
        view = memoryview(buf)
        for f, size in zip(self._files, self.sizes, strict=True):
            if self.pos < start + size and done < want:
                f.seek(self.pos - start)
                chunk = f.read(min(want - done, start + size - self.pos))
                view[done:done + len(chunk)] = chunk
                done += len(chunk)
                self.pos += len(chunk)
            start += size
        return done

    def close(self) -> None:
        """Close every part."""
        for f in self._files:
            f.close()
        super().close()


def find_archives(folders: Iterable[Path]) -> list[list[Path]]:
    """Zip archives in `folders` (and their subfolders one level down): single `.zip` files,
    and split parts (`name.zip.part00`, `name.zip.001`, ...) as one ordered list each."""
    out: list[list[Path]] = []
    seen: set[Path] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        files = [p for p in [*folder.iterdir(), *(q for d in folder.iterdir() if d.is_dir()
                                                   for q in d.iterdir())] if p.is_file()]
        split: dict[Path, list[Path]] = {}
        for p in files:
            m = re.match(r"(.+\.zip)\.(?:part)?\d+$", p.name)
            if m:
                split.setdefault(p.with_name(m.group(1)), []).append(p)
            elif p.suffix == ".zip" and p not in seen:
                seen.add(p)
                out.append([p])
        for _stem, parts in sorted(split.items()):
            out.append(sorted(parts, key=_natural))
    return out


def _open_zip(parts: list[Path]) -> zipfile.ZipFile:
    if len(parts) == 1:
        return zipfile.ZipFile(parts[0])
    return zipfile.ZipFile(io.BufferedReader(JoinedParts(parts)))  # type: ignore[arg-type]


def _member_for(names: list[str], rel: PurePosixPath) -> str | None:
    """The archive member that holds `rel` (its path, or its path below a top folder)."""
    want = rel.as_posix()
    for name in names:
        if name == want or name.endswith("/" + want):
            return name
    by_name = [n for n in names if PurePosixPath(n).name == rel.name]
    return by_name[0] if len(by_name) == 1 else None


def ensure_videos(items: list[EvalItem], search: Iterable[Path] | None = None) -> int:
    """Extract from the download's zip archives every video of `items` that is not on disk
    yet, to the path its item names; returns how many were extracted. A video found in no
    archive is left to fail on its own (errors.jsonl names it)."""
    missing = sorted({it.video for it in items if not Path(it.video).exists()})
    if not missing:
        return 0
    folders = list(search) if search is not None else sorted(
        {p for v in missing for p in (Path(v).parent, Path(v).parent.parent)})
    archives = find_archives(folders)
    if not archives:
        return 0
    done = 0
    for parts in archives:
        try:
            zf = _open_zip(parts)
        except (zipfile.BadZipFile, OSError) as e:
            log.warning("cannot read archive %s: %s", parts[0], e)
            continue
        with zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            for video in list(missing):
                dest = Path(video)
                # the destination is the loader's path (checked to lie in the videos folder);
                # the member's own name never becomes a path, so no zip-slip
                member = (_member_for(names, PurePosixPath(*dest.parts[-2:]))
                          or _member_for(names, PurePosixPath(dest.name)))
                if member is None:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".part")
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)
                tmp.replace(dest)
                missing.remove(video)
                done += 1
                log.info("extracted %s from %s", member, parts[0].name)
        if not missing:
            break
    return done
