"""`from bert import tokenization, modeling, run_classifier`, as with the original's package.

The original shipped its modules as the `bert` package (bert-tensorflow on PyPI); this project
keeps them flat at the repository root. Each `bert.<module>` here is the flat module itself,
the same object (`bert.modeling is modeling`), imported on first use: no second copy.
"""

import importlib
import importlib.abc
import importlib.util
import sys

MODULES = ("tokenization", "modeling", "optimization", "create_pretraining_data", "run_pretraining",
           "run_classifier", "run_squad", "extract_features")


class _FlatModuleAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `import bert.X` to the flat module `X`."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package != __name__ or name not in MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return importlib.import_module(spec.name.partition(".")[2])

    def exec_module(self, module):
        pass  # already executed under its flat name


if not any(isinstance(finder, _FlatModuleAlias) for finder in sys.meta_path):
    sys.meta_path.insert(0, _FlatModuleAlias())


def __getattr__(name):
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
