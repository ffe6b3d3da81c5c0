"""The serving side must run on a host without torch."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import serving

ROOT = Path(serving.__file__).parent
FORBIDDEN = {"torch", "torchvision", "training"}


def test_no_module_under_serving_imports_torch_or_training():
    offenders = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_every_serving_module_imports_with_torch_blocked():
    modules = [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="serving.")]
    assert "serving.manifest" in modules
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
        "import importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "assert 'torch' not in {k for k, v in sys.modules.items() if v is not None}\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_serve_extra_does_not_pull_torch(tmp_path):
    """Resolve `pip install .[serve]` (dry run, nothing installed) and look for torch in it."""
    root = ROOT.parent
    report = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            f"{root}[serve]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "onnxruntime" in names and "fastapi" in names
    assert not {n for n in names if n.startswith(("torch", "nvidia-"))}, sorted(names)
