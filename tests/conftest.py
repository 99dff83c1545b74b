"""Test session setup: the repo root on sys.path, quiet TensorFlow, CPU-sized threads, and
the same random state at the start of every test (a failure reproduces on a rerun)."""

import os
import random
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


# Another seed (BERT_TEST_SEED=n) finds tests that pass only by the luck of one draw.
SEED = int(os.environ.get("BERT_TEST_SEED", "1234"))


@pytest.fixture(autouse=True)
def _fixed_random_state():
    """Seeds Python, NumPy and (when a test module imported it) TensorFlow/Keras."""
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(SEED)
    else:
        random.seed(SEED)
        np.random.seed(SEED)
    yield
