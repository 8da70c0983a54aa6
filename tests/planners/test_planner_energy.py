"""Energies: L1 / L2 distance to a goal latent, on the final step or over steps."""

from __future__ import annotations

import pytest
import torch

from planners import L1Energy, L2Energy, make_energy


@pytest.fixture
def predicted():
    # [B=2, H=2, tokens=1, D=2]: a latent with more than one dimension.
    return torch.tensor(
        [
            [[[1.0, 1.0]], [[2.0, 0.0]]],
            [[[0.0, 0.0]], [[0.0, 4.0]]],
        ]
    )


def test_final_step_l1_and_l2(predicted):
    goal = torch.zeros(1, 2)  # shared goal [*latent]
    assert torch.equal(L1Energy()(predicted, goal), torch.tensor([1.0, 2.0]))
    assert torch.equal(L2Energy()(predicted, goal), torch.tensor([2.0, 8.0]))


def test_all_steps_summed_and_weighted(predicted):
    goal = torch.zeros(1, 2)
    assert torch.equal(L1Energy(steps="all")(predicted, goal), torch.tensor([2.0, 2.0]))
    weighted = L2Energy(steps="all", step_weights=(0.5, 2.0))(predicted, goal)
    assert torch.equal(weighted, torch.tensor([0.5 * 1.0 + 2.0 * 2.0, 2.0 * 8.0]))


def test_one_goal_per_row(predicted):
    goals = torch.stack([predicted[0, -1], torch.zeros(1, 2)])  # [B, *latent]
    assert torch.equal(L1Energy()(predicted, goals), torch.tensor([0.0, 2.0]))


def test_energy_is_differentiable(predicted):
    predicted = predicted.clone().requires_grad_(True)
    L2Energy()(predicted, torch.zeros(1, 2)).sum().backward()
    assert predicted.grad is not None and predicted.grad[:, -1].abs().sum() > 0
    assert (predicted.grad[:, 0] == 0).all()  # only the final step counts


def test_bad_goal_shapes_and_options_are_refused(predicted):
    with pytest.raises(ValueError, match="fits neither"):
        L1Energy()(predicted, torch.zeros(3, 1, 2))
    with pytest.raises(ValueError, match="step_weights"):
        L1Energy(steps="all", step_weights=(1.0,))(predicted, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="steps"):
        L1Energy(steps="first")
    with pytest.raises(ValueError, match="step_weights only"):
        L2Energy(step_weights=(1.0, 1.0))


def test_token_weights_weigh_each_token_mean():
    """Two views of two tokens each: weights per token give a weighted mean of token means."""
    predicted = torch.tensor([[[[1.0, 1.0], [3.0, 3.0], [0.0, 0.0], [8.0, 8.0]]]])  # [B=1, H=1, 4 tokens, D=2]
    goal = torch.zeros(4, 2)
    assert torch.equal(L1Energy()(predicted, goal), torch.tensor([3.0]))
    assert torch.equal(L1Energy(token_weights=(1, 1, 0, 0))(predicted, goal), torch.tensor([2.0]))  # first view
    assert torch.equal(L1Energy(token_weights=(1, 1, 3, 3))(predicted, goal), torch.tensor([(4 + 24) / 8]))
    with pytest.raises(ValueError, match="3 token_weights"):
        L1Energy(token_weights=(1, 1, 1))(predicted, goal)
    with pytest.raises(ValueError, match="positive sum"):
        L1Energy(token_weights=(0, 0, 0, 0))
    with pytest.raises(ValueError, match="readout energy"):
        make_energy("readout", readout=lambda z: z.flatten(-2), token_weights=(1, 1, 1, 1))


def test_make_energy_by_name():
    assert isinstance(make_energy("l1"), L1Energy)
    assert make_energy("l2", steps="all").steps == "all"
    with pytest.raises(ValueError, match=r"valid: \['l1', 'l2', 'readout'\]"):
        make_energy("cosine")


def test_a_final_step_readout_energy_reads_only_the_final_step(predicted):
    seen = []

    def readout(latents):  # [..., tokens, D] -> [..., F]
        seen.append(tuple(latents.shape))
        return latents.flatten(-2)

    final = make_energy("readout", readout=readout)(predicted, torch.zeros(1, 2))
    assert torch.allclose(final, torch.tensor([2.0, 4.0]))  # Euclidean, last step only
    assert seen == [(1, 2), (2, 1, 1, 2)]  # the goal, then [B, 1 step, *latent]: the planner's cost
    seen.clear()
    summed = make_energy("readout", readout=readout, steps="all")(predicted, torch.zeros(1, 2))
    assert torch.allclose(summed, torch.tensor([2 ** 0.5 + 2.0, 4.0])) and seen[1] == (2, 2, 1, 2)
