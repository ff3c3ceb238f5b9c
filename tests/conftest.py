import os
import random

import torch

# Without a GPU, Triton kernels run through Triton's interpreter. The variable is read
# when a kernel is decorated, so it must be set before `minilm.kernels` is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# In a handout, a test that needs an unfinished assignment skips, naming it (minilm/course/testing.py).
from minilm.course.testing import pytest_runtest_makereport  # noqa: E402,F401

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


# A small review-like corpus and its 320-token BPE tokenizer, for pretraining tests (seconds, no download).
REVIEW_WORDS = ("the a movie film plot actor actress scene story director music great terrible boring funny long "
                "short good bad loved hated watched saw was is and but not very really quite").split()


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    path.write_text("\n".join(" ".join(rng.choice(REVIEW_WORDS) for _ in range(rng.randint(20, 60))) + "."
                              for _ in range(300)) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus_file):
    from minilm.data.tokenizer import Tokenizer

    return Tokenizer.train(corpus_file.read_text().splitlines(), 320, lowercase=True)
