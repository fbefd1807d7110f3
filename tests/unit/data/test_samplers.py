"""``ResumableLoader``: a checkpoint written mid-epoch resumes with the batches that were still to come."""

import pytest

from rt_lightning.data.samplers import EvenShardSampler, ResumableLoader, WithFiller

DATA = list(range(11))


def loader(rank=0, processes=1, batch_size=2, shuffle=True, seed=0):
    sampler = EvenShardSampler(DATA, processes, rank, shuffle=shuffle, seed=seed)
    return ResumableLoader(WithFiller(DATA, -100), batch_size=batch_size, sampler=sampler, collate_fn=list)


def epoch(dl, number):
    dl.sampler.set_epoch(number)
    return list(dl)


@pytest.mark.parametrize("processes", [1, 2])
def test_resume_mid_epoch_hands_out_the_rest_of_that_epoch(processes):
    for rank in range(processes):
        full = epoch(loader(rank, processes), 3)
        interrupted = loader(rank, processes)
        batches = iter(interrupted)  # Lightning calls iter() first, then sets the epoch, then asks for batches
        interrupted.sampler.set_epoch(3)
        done = [next(batches), next(batches)]
        state = interrupted.state_dict()
        assert state["epoch"] == 3 and state["batches"] == 2
        resumed = loader(rank, processes)
        resumed.load_state_dict(state)
        rest = iter(resumed)
        resumed.sampler.set_epoch(3)
        assert done + list(rest) == full
        assert resumed.state_dict()["batches"] == len(resumed)
        assert epoch(resumed, 4) == epoch(loader(rank, processes), 4)  # the skip applies once


def test_the_order_depends_on_seed_and_epoch_only_and_one_process_sees_what_all_ranks_see():
    assert epoch(loader(), 1) == epoch(loader(), 1) != epoch(loader(), 2)
    assert epoch(loader(seed=1), 1) != epoch(loader(), 1)
    whole = [i for batch in epoch(loader(batch_size=4), 1) for i in batch]
    ranks = [epoch(loader(r, 2, batch_size=2), 1) for r in range(2)]
    step_by_step = [i for pair in zip(*ranks) for batch in pair for i in batch]
    real = [i for i in step_by_step if isinstance(i, int)]  # rank 1's short slice ends with a filler example
    assert sorted(whole) == sorted(real) == DATA
    assert [set(b) for b in epoch(loader(batch_size=4), 1)] == \
        [{i for i in a + b if isinstance(i, int)} for a, b in zip(*ranks)]


def test_a_state_from_an_earlier_epoch_is_not_applied():
    state = {**loader().state_dict(), "epoch": 0, "batches": 6}
    resumed = loader()
    resumed.load_state_dict(state)
    assert epoch(resumed, 1) == epoch(loader(), 1)


def test_resuming_mid_epoch_with_other_data_settings_stops_with_what_changed():
    state = {**loader().state_dict(), "epoch": 0, "batches": 2}
    with pytest.raises(ValueError, match="batch_size 2 → 3"):
        loader(batch_size=3).load_state_dict(state)
    loader(batch_size=3).load_state_dict({**state, "batches": 6})  # a finished epoch: nothing to continue
