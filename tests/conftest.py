import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# One JAX compilation cache for this session's processes (the tests and every
# `lensaudit` they start), fresh per session: a CLI run compiles its kernels
# once, not once per process.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lensaudit-jax-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def german():
    from engine.datasets import load_shipped

    return load_shipped("german_credit")  # the shipped case-set file, as a job reads it


@pytest.fixture(scope="session")
def german_encoded(german):
    return german.encode()


@pytest.fixture(scope="session")
def bundled_model_path():
    from engine.decisions import prepare_bundled_model

    return str(prepare_bundled_model())


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
