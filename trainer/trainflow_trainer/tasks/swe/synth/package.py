"""A real PyPI package as a bug-synthesis source: its sdist (fetched once), layout, tests and environment."""

from __future__ import annotations

import email.parser
import hashlib
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..environment import EnvironmentError_, _locked, cache_root
from ..instance import EnvironmentSpec, Snapshot

DEFAULT_TEST_REQUIREMENTS = ("pytest==8.3.4",)
SPEC_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9._+!-]+)$")


class PackageError(ValueError):
    pass


@dataclass
class Package:
    name: str
    version: str
    sdist: Path  # the archive (in the output's sdists/ folder)
    sha256: str
    subdir: str
    tree: Path  # the unpacked clean source (a scratch copy for reading)
    sources: list[str]  # the package's modules (relative paths), the mutation targets
    test_paths: list[str]  # what pytest collects (tests/ or test/)
    pythonpath: list[str]
    requirements: list[str]
    project_url: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    def snapshot(self, rel_sdist: str, setup_patch: str) -> Snapshot:
        return Snapshot(kind="sdist", path=rel_sdist, sha256=self.sha256, subdir=self.subdir, setup_patch=setup_patch)

    def environment(self) -> EnvironmentSpec:
        return EnvironmentSpec(python="3", requirements=self.requirements, pythonpath=self.pythonpath)


def parse_spec(spec: str) -> tuple[str, str]:
    m = SPEC_RE.match(spec.strip())
    if not m:
        raise PackageError(f"--package {spec!r}: expected NAME==VERSION (an exact release, e.g. sqlparse==0.5.3)")
    return m.group(1), m.group(2)


def fetch_sdist(name: str, version: str, dest: Path) -> Path:
    """The package's sdist in `dest`: from the SWE cache, else from PyPI (`pip download --no-binary :all:
    --no-deps`) into the cache first, so a release is downloaded once per machine."""
    cached = _download(name, version, cache_root() / "sdists")
    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / cached.name).exists():
        shutil.copyfile(cached, dest / cached.name)
    return dest / cached.name


def _download(name: str, version: str, dest: Path) -> Path:
    """The release's sdist in the cache folder `dest`, downloaded once per machine: under a lock and into a
    private folder first, so processes that curate side by side on a fresh machine never read a half-written
    archive."""
    dest.mkdir(parents=True, exist_ok=True)
    norm = re.sub(r"[-_.]+", "[-_.]", name)

    def cached(folder: Path, exts: str = r"tar\.gz|zip") -> list[Path]:
        return [p for p in folder.iterdir() if re.match(rf"(?i){norm}-{re.escape(version)}\.({exts})$", p.name)]

    if existing := cached(dest):
        return existing[0]
    with _locked(dest / f"{name}-{version}"):
        if existing := cached(dest):
            return existing[0]
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
            p = subprocess.run(
                ["python3", "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q", "-d", tmp]
                + [f"{name}=={version}"],
                capture_output=True,
                text=True,
                env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
            )
            if p.returncode != 0:
                why = (p.stderr or p.stdout).strip()[-400:]
                raise PackageError(f"{name}=={version}: pip download failed: {why}")
            found = cached(Path(tmp), r"tar\.gz")
            if not found:
                raise PackageError(f"{name}=={version}: no .tar.gz sdist on PyPI (only .tar.gz sdists are supported)")
            os.replace(found[0], dest / found[0].name)
            return dest / found[0].name


def inspect_package(name: str, version: str, sdist: Path, scratch: Path, test_requirements: tuple[str, ...]) -> Package:
    """Unpacks the sdist into `scratch` and finds its modules, tests and dependencies."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(scratch, filter="data")
    tops = os.listdir(scratch)
    if len(tops) != 1:
        raise PackageError(f"{name}=={version}: the sdist has {len(tops)} top folders, expected one")
    tree = scratch / tops[0]
    tests = [d for d in ("tests", "test") if (tree / d).is_dir()]
    if not tests:
        raise PackageError(f"{name}=={version}: the sdist ships no tests/ or test/ folder (it cannot be validated)")
    base = "src" if (tree / "src").is_dir() else "."
    packages = [
        d
        for d in sorted(os.listdir(tree / base))
        if (tree / base / d / "__init__.py").is_file() and d not in ("tests", "test", "docs")
    ]
    if not packages:
        raise PackageError(f"{name}=={version}: no package folder (with __init__.py) under {base}/")
    sources = []
    for pkg in packages:
        for dirpath, _dirs, files in os.walk(tree / base / pkg):
            for f in files:
                if f.endswith(".py") and not f.startswith("test"):
                    sources.append(os.path.normpath(os.path.relpath(Path(dirpath) / f, tree)))
    meta = _metadata(tree)
    deps = [r for r in meta.get_all("Requires-Dist") or [] if ";" not in r]
    urls = meta.get_all("Project-URL") or []
    project_url = next((u.split(",", 1)[1].strip() for u in urls if "source" in u.lower()), "")
    return Package(
        name=name,
        version=version,
        sdist=sdist,
        sha256=hashlib.sha256(sdist.read_bytes()).hexdigest(),
        subdir=tops[0],
        tree=tree,
        sources=sorted(sources),
        test_paths=tests,
        pythonpath=[base],
        requirements=[*test_requirements, *[_pin_later(d) for d in deps]],
        project_url=project_url,
    )


def _pin_later(req: str) -> str:
    """A runtime dependency as PKG-INFO states it (a range); synthesis pins it from what pip installed."""
    return req.replace(" ", "")


def _metadata(tree: Path) -> email.message.Message:
    pkg_info = tree / "PKG-INFO"
    if not pkg_info.is_file():
        raise EnvironmentError_(f"{tree.name}: the sdist has no PKG-INFO")
    return email.parser.Parser().parsestr(pkg_info.read_text(errors="replace"))


def repo_name(pkg: Package) -> str:
    """owner/name from the project's source URL when it is on GitHub, else the PyPI name."""
    m = re.search(r"github\.com/([^/\s]+/[^/\s#?]+)", pkg.project_url)
    return m.group(1).removesuffix(".git") if m else pkg.name
