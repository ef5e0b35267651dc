import math

import torch

from ptcli.prompt_init import FIRST_ID, sample_token_rows, token_scale


def test_sampled_rows_are_real_embedding_rows_past_the_special_tokens():
    weight = torch.arange(1200 * 4, dtype=torch.float32).reshape(1200, 4)
    rows = sample_token_rows(weight, 5, seed=3)
    ids = (rows[:, 0] / 4).long()
    assert torch.equal(rows, weight[ids]) and bool((ids >= FIRST_ID).all())
    assert torch.equal(rows, sample_token_rows(weight, 5, seed=3))
    assert not torch.equal(rows, sample_token_rows(weight, 5, seed=4))


def test_token_scale_is_the_median_norm_per_root_width():
    weight = torch.zeros(3, 4)
    weight[0, 0], weight[1, :] , weight[2, 1] = 1.0, 2.0, 10.0  # norms 1, 4, 10: median 4
    assert math.isclose(token_scale(weight), 4 / 2)
