"""`pip install rewatch-kit` from a built wheel works on its own: configs, prompts, templates and
the benchmarks ship inside the package, and every third-party module the package imports is a
declared dependency (not one that merely arrives with another package)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rewatch"


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> tuple[set[str], set[str]]:
    """(core dependencies, every extra's dependencies) as canonical distribution names."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {_canon(re.split(r"[\[=<>!~; ]", r, maxsplit=1)[0]) for r in reqs}

    extras = set().union(*(names(v) for v in meta.get("optional-dependencies", {}).values()))
    return names(meta["dependencies"]), extras


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level module names a file imports: (at module level, anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    every: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module]
        else:
            continue
        every.update(m.split(".")[0] for m in mods)
    for node in tree.body:  # module level (not inside a function or an if)
        if isinstance(node, ast.Import):
            top.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top.add(node.module.split(".")[0])
    return top, every


def test_every_imported_module_is_a_declared_dependency() -> None:
    core, extras = declared()
    dists = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    missing: list[str] = []
    seen = 0
    for f in files:
        top, every = imports(f)
        for mod in sorted(every - stdlib - {"rewatch"}):
            if f.parent.name == "bench" and mod in {"qa_scripted", "cot_scripted", "cot_truth",
                                                     "pipeline_scripted"}:
                continue  # the source checkout's tests/ fixtures (rewatch.bench.use_test_fixtures)
            if f.parent.name == "verl" and mod in {"verl", "hydra", "omegaconf"}:
                assert "verl" in extras  # run in .venv-verl, built from the `verl` extra alone
                continue
            owners = {_canon(d) for d in dists.get(mod, [])}
            assert owners, f"{f.relative_to(ROOT)} imports {mod!r}, which no installed package has"
            seen += 1
            # module-level imports of the package proper must install with it
            need = core if (mod in top and f.parent.name != "bench") else core | extras
            if not owners & need:
                missing.append(f"{f.relative_to(ROOT)}: {mod} ({sorted(owners)})")
    assert seen > 30
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def _copy_source(dest: Path) -> Path:
    """The files a fresh clone has (tracked, plus new files not ignored), tests/ left out."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    files = [f for f in out if f and not f.startswith("tests/") and (ROOT / f).is_file()]
    assert "pyproject.toml" in files and "rewatch/configs/demo.yaml" in files
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return dest


@pytest.mark.slow
def test_the_wheel_alone_runs_from_another_folder(tmp_path: Path) -> None:
    src = _copy_source(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("rewatch_kit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("rewatch/configs/demo.yaml", "rewatch/configs/vllm.yaml",
              "rewatch/bench/bench_chat.py", "rewatch/bench/bench_reward.py",
              "rewatch/reward/prompts/observation_judge.md",
              "rewatch/report/templates/report.html.j2", "rewatch/synth/prompts/qa_verify.md"):
        assert f in names, f

    # a fresh venv with only the wheel in it; its dependencies come from this venv's
    # site-packages (offline), where rewatch itself is an editable install of the tree: a .pth
    # line adds that folder but runs none of its .pth hooks, so the tree is not importable
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True,
                   timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(Path.home())}

    def run(*args: str) -> str:
        out = subprocess.run(list(args), cwd=elsewhere, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    where = run(str(py), "-c", "import rewatch; print(rewatch.__file__)")
    assert where.startswith(str(site)), where  # the installed copy, not the source tree
    for name in ("demo", "vllm"):
        shown = run(str(venv / "bin" / "rewatch"), "config", "show", "--config", name)
        assert "models:" in shown and "reward:" in shown, shown[:500]
    vllm = run(str(venv / "bin" / "rewatch"), "config", "show", "--config", "vllm")
    assert "backend: openai" in vllm
    listed = subprocess.run([str(venv / "bin" / "rewatch"), "bench", "nosuch"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 2 and "chat" in listed.stderr and "reward" in listed.stderr
