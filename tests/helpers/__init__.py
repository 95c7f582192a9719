"""Helpers shared by the tests and the scripts in benchmarks/; not part of the installed package.

- `helpers.tiny_dinov2`: a tiny random Dinov2 checkpoint saved like a hub snapshot.
- `helpers.chexbert_reference`: the f1chexbert reference labeller run on local files, and
  random checkpoints in chexbert.pth's format.

Import them as `helpers.<module>`: tests/conftest.py puts tests/ on sys.path (pytest's default
import mode does too). Not as `tests.helpers...`: tests/ is not a package, and f1chexbert
installs a top-level package named `tests` into site-packages, which would shadow it.
Scripts outside tests/ put tests/ on sys.path themselves (see benchmarks/chexbert_speed.py).
"""
