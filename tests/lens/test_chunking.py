"""Rows per unembedding chunk: 128 on the CPU, sized from free memory on CUDA."""

from __future__ import annotations

import torch

from slm_transformerlens.lens.readout import CPU_CHUNK_ROWS, MAX_CHUNK_ROWS, default_chunk_size


def test_cpu_keeps_the_measured_default() -> None:
    assert default_chunk_size("cpu", 152_167) == CPU_CHUNK_ROWS == 128


def test_cuda_uses_a_quarter_of_the_free_memory(monkeypatch) -> None:
    d_vocab = 1000
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 12 * d_vocab * 3000, 0))
    assert default_chunk_size("cuda:0", d_vocab) == 3000
    assert default_chunk_size("cuda:0", d_vocab, "certified") == 1500  # twice the bytes per logit
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**15, 0))
    assert default_chunk_size("cuda", d_vocab) == MAX_CHUNK_ROWS
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10, 0))
    assert default_chunk_size("cuda", d_vocab) == CPU_CHUNK_ROWS
