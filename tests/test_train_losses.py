"""Loss math, config validation, adapters and attention read-out (no training)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import ConfigError
from edgekd.train import FinetuneConfig
from edgekd.train.losses import (
    attention_loss,
    attention_modules,
    attention_probs,
    hinton_kd,
    logits_loss,
    make_adapter,
    reverse_kd,
)
from edgekd.typed import from_mapping


def test_hinton_matches_definition_and_scales_with_t_squared() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 10, generator=g), torch.randn(5, 10, generator=g)
    for temp in (1.0, 4.0):
        pt, ps = F.softmax(t / temp, -1), F.softmax(s / temp, -1)
        manual = (pt * (pt.log() - ps.log())).sum(-1).mean() * temp**2
        assert torch.allclose(hinton_kd(s, t, temp), manual, atol=1e-6)
        manual_rev = (ps * (ps.log() - pt.log())).sum(-1).mean() * temp**2
        assert torch.allclose(reverse_kd(s, t, temp), manual_rev, atol=1e-6)
    assert hinton_kd(t, t, 4.0).abs() < 1e-6
    assert not torch.allclose(hinton_kd(s, t, 2.0), reverse_kd(s, t, 2.0))  # KL is asymmetric


def test_logits_loss_mixes_soft_and_hard_and_degrades_without_labels() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    mixed = logits_loss("hinton", s, t, y, 4.0, 0.9)
    assert torch.allclose(mixed, 0.9 * hinton_kd(s, t, 4.0) + 0.1 * F.cross_entropy(s, y))
    assert torch.allclose(logits_loss("hinton", s, t, None, 4.0, 0.9), hinton_kd(s, t, 4.0))  # unlabelled
    assert torch.allclose(logits_loss("ce", s, t, y, 4.0, 0.9), F.cross_entropy(s, y))
    assert torch.allclose(logits_loss("hinton", s, None, y, 4.0, 0.9), F.cross_entropy(s, y))  # no teacher
    with pytest.raises(ConfigError, match="labelled"):
        logits_loss("ce", s, t, None, 4.0, 0.9)


def test_config_from_toml_table_is_validated() -> None:
    cfg = from_mapping(FinetuneConfig, {"epochs": 3, "loss": "reverse_kl", "features": ["a.b:c"]}, where="p.toml [x]")
    assert cfg.loss == "reverse_kl" and cfg.features == ("a.b:c",) and cfg.hint_pairs() == [("a.b", "c")]
    with pytest.raises(ConfigError, match="unknown key 'temprature'") as exc:
        from_mapping(FinetuneConfig, {"temprature": 2.0}, where="p.toml [x]")
    assert "temperature" in str(exc.value) and "p.toml" in str(exc.value)
    with pytest.raises(ConfigError, match="alpha"):
        from_mapping(FinetuneConfig, {"alpha": 1.5}, where="p.toml")
    with pytest.raises(ConfigError, match="teacher.layer:student.layer"):
        from_mapping(FinetuneConfig, {"features": ["nocolon"]}, where="p.toml")
    with pytest.raises(ConfigError, match="choose one of"):
        from_mapping(FinetuneConfig, {"schedule": "linear"}, where="p.toml")


def test_adapters_map_student_width_to_teacher() -> None:
    conv = make_adapter(torch.Size([2, 8, 8, 8]), torch.Size([2, 16, 8, 8]), "x")
    assert isinstance(conv, nn.Conv2d) and conv(torch.zeros(2, 8, 8, 8)).shape == (2, 16, 8, 8)
    pooled = make_adapter(torch.Size([2, 8, 8, 8]), torch.Size([2, 32, 4, 4]), "x")
    assert pooled(torch.zeros(2, 8, 8, 8)).shape == (2, 32, 4, 4)
    lin = make_adapter(torch.Size([2, 5, 12]), torch.Size([2, 5, 24]), "x")
    assert isinstance(lin, nn.Linear) and lin(torch.zeros(2, 5, 12)).shape == (2, 5, 24)
    assert isinstance(make_adapter(torch.Size([2, 7]), torch.Size([2, 7]), "x"), nn.Identity)
    with pytest.raises(ConfigError, match="smaller"):
        make_adapter(torch.Size([2, 8, 2, 2]), torch.Size([2, 8, 4, 4]), "features[0]")
    with pytest.raises(ConfigError, match="cannot adapt"):
        make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 64]), "features[0]")


def test_attention_probs_match_multihead_attention_weights() -> None:
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
        _, ref = mha(x, x, x, need_weights=True, average_attn_weights=False)
        probs = attention_probs(mha, x)
        assert probs.shape == (3, 4, 5, 5)
        assert torch.allclose(probs, ref, atol=1e-5)


def test_attention_probs_reproduce_timm_attention_output() -> None:
    timm_attention = pytest.importorskip("timm.models.vision_transformer").Attention
    torch.manual_seed(0)
    attn = timm_attention(16, num_heads=2, qkv_bias=True).eval()
    x = torch.randn(3, 6, 16)
    probs = attention_probs(attn, x)
    v = attn.qkv(x).reshape(3, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)[2]
    out = attn.proj((probs @ v).transpose(1, 2).reshape(3, 6, 16))
    assert torch.allclose(out, attn(x), atol=1e-5)
    assert [n for n, _ in attention_modules(nn.Sequential(attn))] == ["0"]


def test_attention_loss_head_average_and_length_check() -> None:
    a = torch.softmax(torch.randn(2, 4, 5, 5), -1)
    b = torch.softmax(torch.randn(2, 2, 5, 5), -1)
    assert attention_loss(a, a, "x").abs() < 1e-6
    assert attention_loss(a, b, "x") > 0  # 4 vs 2 heads: compared head-averaged
    with pytest.raises(ConfigError, match="tokens"):
        attention_loss(torch.softmax(torch.randn(2, 2, 4, 4), -1), b, "x")
