"""`python tests/without_tensorflow.py -m MODULE ARGS...`: run MODULE as `python -m` would, in
an interpreter that cannot import TensorFlow, as on a machine where only JAX or PyTorch is
installed (the lent GPU machines have no TensorFlow).

The virtual environment's site-packages is replaced on sys.path by a folder of links to each of
its entries but TensorFlow's own (tensorflow*, tensorboard*, tf_keras): `import tensorflow`
then fails as it does where it was never installed, and `importlib.util.find_spec` answers
None for it, as libraries that probe for it expect. Processes spawned by multiprocessing get
the same sys.path, so a worker's training child cannot import TensorFlow either.
"""

from __future__ import annotations

import atexit
import os
import runpy
import shutil
import site
import sys
import tempfile

HIDDEN = ("tensorflow", "_tensorflow", "tensorboard", "tf_keras")


def hide_tensorflow() -> None:
    packages = [p for p in sys.path if p.rstrip("/").endswith("site-packages")
                and os.path.isdir(os.path.join(p, "tensorflow"))]
    if not packages:
        return
    for folder in packages:
        shadow = tempfile.mkdtemp(prefix="without-tensorflow-")
        atexit.register(shutil.rmtree, shadow, ignore_errors=True)
        for name in os.listdir(folder):
            if not name.lower().startswith(HIDDEN):
                os.symlink(os.path.join(folder, name), os.path.join(shadow, name))
        sys.path.remove(folder)
        site.addsitedir(shadow)  # and its .pth files: the editable install of lrsearch
    sys.modules.pop("tensorflow", None)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        raise SystemExit("usage: python tests/without_tensorflow.py -m MODULE [ARGS...]")
    hide_tensorflow()
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
