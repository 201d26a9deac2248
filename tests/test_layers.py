"""The model zoo stands alone: every seg_models module imports with the other layers blocked."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKED_IMPORT = """
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("cluster", "jobs", "workers"):
            raise ImportError(f"{name} is blocked")
        return None

sys.meta_path.insert(0, Block())
import seg_models
names = [m.name for m in pkgutil.walk_packages(seg_models.__path__, "seg_models.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_seg_models_imports_with_the_other_layers_blocked():
    result = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 15  # every module of the zoo was imported


def test_the_blocker_blocks():
    script = BLOCKED_IMPORT.replace("import seg_models\n", "import workers.target\nimport seg_models\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "workers is blocked" in result.stderr
