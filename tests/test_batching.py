import random

import pytest

from ptcli import batching


def fixed(lengths, size):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + size] for i in range(0, len(order), size)]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [1, 3, 32])
def test_plan_covers_every_row_once_longest_first_within_the_batch_size(seed, size):
    rng = random.Random(seed)
    lengths = [rng.choice([0, 1, 5, 60, 255]) + rng.randrange(40) for _ in range(rng.randrange(1, 200))]
    batches = batching.plan(lengths, size)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= size for b in batches)
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


@pytest.mark.parametrize("seed", range(5))
def test_plan_never_costs_more_than_fixed_size_batches(seed):
    rng = random.Random(seed)
    lengths = [int(rng.lognormvariate(3.5, 1.0)) for _ in range(300)]
    cost = batching.PASS_COST_TOKENS
    planned, plain = batching.plan(lengths, 32), fixed(lengths, 32)
    assert (batching.padded_tokens(lengths, planned) + cost * len(planned)
            <= batching.padded_tokens(lengths, plain) + cost * len(plain))


def test_spread_out_lengths_are_cut_where_padding_costs_more_than_a_pass():
    lengths = [250] + [20] * 31  # fixed batches of 32 would pad 31 short rows to 250
    batches = batching.plan(lengths, 32)
    assert batches == [[0], list(range(1, 32))]
    assert batching.padded_tokens(lengths, batches) == 250 + 31 * 20


def test_equal_lengths_fill_whole_batches():
    assert sorted(len(b) for b in batching.plan([10] * 70, 32)) == [6, 32, 32]


def test_plan_of_nothing_and_bad_size():
    assert batching.plan([], 8) == []
    with pytest.raises(ValueError):
        batching.plan([1], 0)
