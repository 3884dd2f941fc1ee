"""Fetch the wheels the GPU tier needs on a lent GPU machine, which has Python 3.12, CUDA and
JAX (or PyTorch) but no TensorFlow, no Keras, no Optuna and no package registry:

    python -m bench.gpu_wheels            # here: download into .gpu-wheels/ (gitignored)
    # there, with .gpu-wheels/ carried beside the working tree:
    pip install --no-index --no-deps .gpu-wheels/*.whl
    pip install --no-index --no-deps --no-build-isolation -e .
    KERAS_BACKEND=jax python -m bench.run --gpu

Exactly the pinned wheels below are downloaded (`pip download --no-deps`, manylinux x86_64
binaries for CPython 3.12), each at the version this project's tests run with: what importing
lrsearch, the worker and the service needs with KERAS_BACKEND=jax (the API, SQLite through
SQLAlchemy, Alembic and Optuna; Keras and what it imports; the web page's Jinja2 and
matplotlib), and setuptools/wheel for the editable install. Left out on purpose: TensorFlow,
JAX, PyTorch, NumPy and SciPy (the machine's, with the backend), psycopg (SQLite only),
uvicorn's [standard] extras (the plain server is enough), and whatever is only imported when
present (pandas). The lrsearch package itself is installed with --no-deps, since its declared
dependencies include TensorFlow. Fails when the wheels together reach MAX_BYTES (what may be
carried to the machine with the working tree, 64 MiB in all).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / ".gpu-wheels"
MAX_BYTES = 60 * 2**20  # of the 64 MiB carried, room for the working tree's own files
PYTHON = "3.12"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")

# name==version: why it is needed
WHEELS = {
    # Keras and what `import keras` imports (ml_dtypes comes with JAX)
    "keras==3.15.1": "the models and the training loop",
    "absl-py==2.5.1": "keras",
    "namex==0.1.0": "keras",
    "h5py==3.14.0": "keras (saving)",
    "optree==0.20.0": "keras (nested structures)",
    "rich==15.0.0": "keras, the command line's tables",
    "markdown-it-py==4.3.0": "rich",
    "mdurl==0.1.2": "markdown-it-py",
    "pygments==2.21.0": "rich",
    "packaging==26.4": "keras, optuna",
    # the datasets (digits, splits) and image decoding for non-TensorFlow backends
    "scikit-learn==1.9.1": "lrsearch.datasets",
    "joblib==1.6.0": "scikit-learn",
    "threadpoolctl==3.8.0": "scikit-learn",
    "pillow==13.0.0": "lrsearch.datasets.portable",
    # the search and the database
    "optuna==5.1.0": "the search (worker/search.py)",
    "colorlog==6.12.0": "optuna",
    "tqdm==4.70.1": "optuna",
    "pyyaml==6.0.4": "optuna, the command line",
    "sqlalchemy==2.1.9": "the database",
    "alembic==1.20.1": "migrations",
    "mako==1.4.3": "alembic",
    "markupsafe==3.0.4": "mako, jinja2",
    # the API
    "fastapi==0.165.0": "the API",
    "starlette==1.10.0": "fastapi",
    "annotated-doc==0.0.7": "fastapi",
    "pydantic==2.14.4": "the API's and the library's models",
    "pydantic-core==2.50.5": "pydantic",
    "annotated-types==0.8.0": "pydantic",
    "typing-inspection==0.4.5": "pydantic",
    "typing-extensions==4.16.0": "pydantic, sqlalchemy",
    "pydantic-settings==2.16.3": "service/config.py",
    "python-dotenv==1.2.4": "pydantic-settings",
    "anyio==4.16.0": "starlette, httpx",
    "idna==3.21": "anyio, httpx",
    "uvicorn==0.55.0": "serves the API",
    "h11==0.16.0": "uvicorn, httpcore",
    "click==8.5.1": "the command line, uvicorn",
    "python-multipart==0.0.34": "uploads (the benchmark uploads its dataset)",
    "httpx==0.29.0": "the client, the benchmarks",
    "httpcore==1.0.9": "httpx, notifications",
    "certifi==2026.10.19.post1": "httpx",
    "jinja2==3.1.6": "the web page",
    "prometheus-client==0.26.0": "/metrics",
    "matplotlib==3.11.2": "lrsearch.plots (imported by the service)",
    "contourpy==1.3.3": "matplotlib",
    "cycler==0.12.1": "matplotlib",
    "fonttools==4.69.1": "matplotlib",
    "kiwisolver==1.5.1": "matplotlib",
    "pyparsing==3.3.3": "matplotlib",
    "python-dateutil==4.0.0": "matplotlib",
    "six==1.17.0": "python-dateutil",
    "requests==2.34.2": "imported by keras' and optuna's helpers where present",
    "urllib3==2.8.0": "requests",
    "charset-normalizer==3.5.3": "requests",
    # the editable install of this project (--no-build-isolation)
    "setuptools==84.2.1": "building lrsearch",
    "wheel==0.48.0": "building lrsearch",
}


def download(folder: Path = FOLDER) -> int:
    """Download every pinned wheel into `folder`; its total size in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", PYTHON, "--implementation", "cp", *platforms,
                    "--dest", str(folder), *WHEELS], check=True)
    wanted = {w.split("==")[0].lower().replace("-", "_") for w in WHEELS}
    extra = [p.name for p in folder.glob("*.whl")
             if p.name.split("-")[0].lower() not in wanted]
    if extra:
        raise SystemExit(f"error: {folder} holds wheels not pinned here: {extra}; empty it "
                         "first")
    return sum(p.stat().st_size for p in folder.glob("*.whl"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, default=FOLDER)
    args = parser.parse_args()
    total = download(args.dest)
    print(f"{len(WHEELS)} wheels, {total / 2**20:.1f} MiB in {args.dest}")
    if total >= MAX_BYTES:
        print(f"error: {total / 2**20:.1f} MiB is over the {MAX_BYTES / 2**20:.0f} MiB that "
              "may be carried", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
