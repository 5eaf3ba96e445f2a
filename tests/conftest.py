"""Tests run beside other work (two cores, shared): one PyTorch thread each, since intra-op
threads spin when the cores are busy (a small run was measured 23x slower with 2 threads under
load than with 1). Subprocesses the tests start pass ``--threads 1`` for the same reason."""

import torch

torch.set_num_threads(1)
