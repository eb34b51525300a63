"""The app extra is optional: the CLI starts and ``convergent list`` runs without importing
FAISS, FastAPI, uvicorn, onnx or onnxruntime; the new verbs' parsers import none of them."""

import json
import os
import subprocess
import sys

CHECK = """
import json, sys
from convergent.cli import build_parser, main
build_parser()
main(["list"])
heavy = ("faiss", "fastapi", "uvicorn", "onnx", "onnxruntime", "starlette", "torch", "convergent.app")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_list_imports_no_app_dependency():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
