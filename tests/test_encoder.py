import pytest
import torch

from ptcli.encoder import EncoderConfig, PromptEncoder


@pytest.mark.parametrize("kind", ["lstm", "mlp", "none"])
def test_output_shape_and_grad(kind):
    enc = PromptEncoder(EncoderConfig(kind=kind, n_prompts=3, hidden_size=16))
    out = enc()
    assert out.shape == (3, 16) and out.dtype == torch.float32
    out.sum().backward()
    assert enc.embedding.weight.grad is not None and enc.embedding.weight.grad.abs().sum() > 0


def test_lstm_is_the_papers_architecture():
    enc = PromptEncoder(EncoderConfig(kind="lstm", n_prompts=4, hidden_size=16))
    assert enc.lstm.bidirectional and enc.lstm.num_layers == 2 and enc.lstm.hidden_size == 8
    layers = list(enc.mlp)
    assert isinstance(layers[1], torch.nn.ReLU)
    assert layers[0].in_features == 16 and layers[2].out_features == 16


def test_none_returns_the_init_vectors():
    init = torch.randn(2, 8)
    enc = PromptEncoder(EncoderConfig(kind="none", n_prompts=2, hidden_size=8), init=init)
    assert torch.equal(enc(), init)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown encoder"):
        PromptEncoder(EncoderConfig(kind="gru", n_prompts=2, hidden_size=8))
