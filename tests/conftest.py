import pytest
import torch

# 1 thread: on a loaded 2-core machine, 2 threads made tiny ops up to 100x slower (ops tests)
torch.set_num_threads(1)


@pytest.fixture
def storage_url(tmp_path):
    return f"sqlite:///{tmp_path / 'nas.db'}"
