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


@pytest.mark.parametrize("kind", ["lstm", "mlp"])
def test_vocab_init_starts_at_the_base_and_learns_a_scaled_residual(kind):
    base = torch.randn(3, 16)
    torch.manual_seed(0)
    enc = PromptEncoder(EncoderConfig(kind=kind, n_prompts=3, hidden_size=16, init="vocab"), base=base, scale=0.01)
    assert torch.equal(enc(), base)
    opt = torch.optim.SGD(enc.parameters(), lr=1.0)
    enc().sum().backward()
    assert enc.mlp[-1].weight.grad.abs().sum() > 0  # the zeroed last layer still learns (its input is not zero)
    opt.step()
    moved = enc().detach() - base
    assert moved.abs().sum() > 0
    assert not any(p is enc.base for p in enc.parameters())  # the base is frozen: a buffer, not a parameter
    # the residual is the network's output times `scale`
    unscaled = PromptEncoder(EncoderConfig(kind=kind, n_prompts=3, hidden_size=16, init="vocab"), base=base)
    unscaled.load_state_dict({**enc.state_dict(), "scale": torch.tensor(1.0)})
    assert torch.allclose(unscaled().detach() - base, moved / 0.01, atol=1e-4)


def test_vocab_state_dict_restores_base_and_scale():
    base = torch.randn(2, 8)
    enc = PromptEncoder(EncoderConfig(kind="lstm", n_prompts=2, hidden_size=8, init="vocab"), base=base, scale=0.5)
    fresh = PromptEncoder(EncoderConfig(kind="lstm", n_prompts=2, hidden_size=8, init="vocab"))
    fresh.load_state_dict(enc.state_dict())
    assert torch.equal(fresh(), base) and float(fresh.scale) == 0.5
    with pytest.raises(ValueError, match="unknown prompt init"):
        PromptEncoder(EncoderConfig(kind="lstm", n_prompts=2, hidden_size=8, init="glove"))
