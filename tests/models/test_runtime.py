"""Device, precision and the inference fast path's pieces: buckets, padding, input layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.runtime import (
    InferenceOptions,
    bucket_sizes,
    pad_to_bucket,
    prepare_for_inference,
    to_device,
    to_input,
)

CPU = torch.device("cpu")


def test_bucket_sizes_cover_every_batch_up_to_the_maximum() -> None:
    assert bucket_sizes(1) == (1,)
    assert bucket_sizes(16) == (1, 2, 4, 8, 16)
    assert bucket_sizes(12) == (1, 2, 4, 8, 12)


def test_padding_repeats_the_last_row_up_to_the_next_bucket() -> None:
    x = torch.arange(3 * 2, dtype=torch.float32).view(3, 2)
    padded = pad_to_bucket(x, (1, 2, 4, 8))
    assert padded.shape == (4, 2)
    assert torch.equal(padded[:3], x) and torch.equal(padded[3], x[2])
    assert pad_to_bucket(x[:2], (1, 2, 4)).shape[0] == 2  # already a bucket size
    assert pad_to_bucket(x, ()).shape[0] == 3  # no buckets: untouched
    assert pad_to_bucket(torch.zeros(9, 2), (1, 2, 4, 8)).shape[0] == 9  # larger than all


def test_reduced_precision_casts_the_weights_and_the_inputs() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    options = InferenceOptions(CPU, torch.bfloat16, channels_last=True)
    served = prepare_for_inference(model, options)
    assert not served.training
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in served.parameters())
    x = to_input(torch.rand(2, 3, 8, 8), options)
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert served(x).shape == (2, 4, 6, 6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_to_device_copy_through_pinned_memory_is_exact() -> None:
    x = torch.rand(4, 3, 8, 8)
    y = to_device(x, torch.device("cuda"))
    torch.cuda.synchronize()
    assert y.is_cuda and torch.equal(y.cpu(), x)
