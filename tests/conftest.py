import os

import torch

# Without a GPU, Triton kernels run through Triton's interpreter. The variable is read
# when a kernel is decorated, so it must be set before `kernels` is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# In a handout, a test that needs an unfinished assignment skips, naming it (minilm/testing.py).
from minilm.testing import pytest_runtest_makereport  # noqa: E402,F401

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
