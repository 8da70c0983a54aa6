"""Every planner on the point mass, where the optimum is known in closed form.

Problem: 2-D latent, start 0, goal (1, -0.6), gain 0.5, actions in [-1, 1]^2,
horizon 4, energy = mean squared distance summed over all steps. The first step
can reach at best (0.5, -0.5); from there the goal is reachable in one more step
and can be held. So the optimal first action is (1, -1), the final position is
the goal, and the optimal energy is ((0.5)^2 + (0.1)^2) / 2 = 0.13.
"""

from __future__ import annotations

import pytest
import torch

from planners import PLANNERS, ActionBounds, L2Energy, make_planner

PLANNER_NAMES = sorted(PLANNERS)
SAMPLING_PLANNERS = [name for name in PLANNER_NAMES if name != "gradient"]

GOAL = torch.tensor([1.0, -0.6])
OPTIMAL_ENERGY = 0.13
OPTIMAL_FIRST_ACTION = torch.tensor([1.0, -1.0])
ENERGY_TOLERANCE = 0.01
FINAL_DISTANCE_TOLERANCE = 0.06
FIRST_ACTION_TOLERANCE = 0.1


def toy_planner(name: str, fast_settings: dict, **overrides):
    settings = fast_settings[name] | overrides
    return make_planner(
        name,
        horizon=4,
        action_dim=2,
        bounds=ActionBounds.box(2),
        energy=L2Energy(steps="all"),
        **settings,
    )


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_reaches_the_known_optimum(name, point_mass, fast_settings):
    planner = toy_planner(name, fast_settings)
    rollout = point_mass(torch.zeros(1, 2))

    result = planner.plan(rollout, GOAL)

    assert result.actions.shape == (1, 4, 2)
    assert result.energy.shape == (1,)
    assert result.energy.item() == pytest.approx(OPTIMAL_ENERGY, abs=ENERGY_TOLERANCE)
    assert result.energy.item() >= OPTIMAL_ENERGY - 1e-4  # nothing beats the optimum
    final_position = rollout(result.actions)[0, -1]
    assert (final_position - GOAL).norm() < FINAL_DISTANCE_TOLERANCE
    first_action_error = (result.first_action[0] - OPTIMAL_FIRST_ACTION).abs().max()
    assert first_action_error < FIRST_ACTION_TOLERANCE
    # The reported energy is the energy of the returned actions.
    recomputed = L2Energy(steps="all")(rollout(result.actions), GOAL)
    assert torch.allclose(recomputed, result.energy, atol=1e-5)


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_energy_falls_over_iterations(name, point_mass, fast_settings):
    planner = toy_planner(name, fast_settings)
    result = planner.plan(point_mass(torch.zeros(1, 2)), GOAL)

    history = result.energy_history[:, 0]
    assert result.iterations == planner.config.iterations
    assert history.shape == (planner.config.iterations,)
    assert history[-1] <= history[0]
    assert history[-1] < history[0] - 0.05  # a real improvement, not a tie
    assert result.energy.item() == pytest.approx(history.min().item())


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_same_seed_repeats_the_plan_after_reset(name, point_mass, fast_settings):
    rollout = point_mass(torch.zeros(1, 2))
    planner = toy_planner(name, fast_settings, seed=3, iterations=3)
    first = planner.plan(rollout, GOAL)
    planner.reset()
    again = planner.plan(rollout, GOAL)
    twin = toy_planner(name, fast_settings, seed=3, iterations=3).plan(rollout, GOAL)

    assert torch.equal(first.actions, again.actions)
    assert torch.equal(first.energy_history, again.energy_history)
    assert torch.equal(first.actions, twin.actions)


@pytest.mark.parametrize("name", SAMPLING_PLANNERS)
def test_different_seeds_give_different_plans(name, point_mass, fast_settings):
    rollout = point_mass(torch.zeros(1, 2))
    plans = [
        toy_planner(name, fast_settings, seed=seed, iterations=2).plan(rollout, GOAL).actions
        for seed in (1, 2)
    ]
    assert not torch.allclose(plans[0], plans[1])


@pytest.mark.parametrize("name", PLANNER_NAMES)
@pytest.mark.parametrize("move_norm", ["l1", "l2"])
def test_actions_stay_within_box_and_move_ball(name, move_norm, point_mass, fast_settings):
    # 4-D actions (xyz + gripper), a goal far out of reach so the bounds bind.
    bounds = ActionBounds(
        low=[-1.0, -1.0, -1.0, 0.0],
        high=[1.0, 1.0, 1.0, 0.5],
        move_radius=0.075,
        move_norm=move_norm,
        move_dims=[0, 1, 2],
    )
    settings = fast_settings[name] | {"iterations": 5}
    planner = make_planner(name, horizon=3, action_dim=4, bounds=bounds, **settings)
    calls: list[torch.Tensor] = []
    result = planner.plan(point_mass(torch.zeros(1, 4), calls), torch.tensor([2.0, -2, 2, 2]))

    assert bounds.contains(result.actions)
    assert all(bounds.contains(batch) for batch in calls)  # every candidate, not only the best
    xyz_moves = result.actions[0, :, :3]
    move_lengths = xyz_moves.abs().sum(-1) if move_norm == "l1" else xyz_moves.norm(dim=-1)
    assert (move_lengths > 0.06).all()  # the ball binds: the planner pushes against it
    assert (result.actions[0, :, 3] > 0.4).all()  # the gripper pushes against its box


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_warm_start_begins_from_the_shifted_previous_plan(name, point_mass, fast_settings):
    planner = toy_planner(name, fast_settings, iterations=3)
    planner.plan(point_mass(torch.zeros(1, 2)), GOAL)
    previous = planner.previous_plan.clone()  # returned plan (MPPI: its final mean)

    calls: list[torch.Tensor] = []
    planner.plan(point_mass(torch.zeros(1, 2), calls), GOAL)

    # The first candidate of the first evaluation is where the search starts.
    expected = torch.cat([previous[0, 1:], previous[0, -1:]])  # drop step 0, repeat last
    assert torch.allclose(calls[0][0], expected)
    assert not torch.allclose(calls[0][0], previous[0])


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_cold_start_after_reset_or_when_disabled(name, point_mass, fast_settings):
    planner = toy_planner(name, fast_settings, iterations=2)
    planner.plan(point_mass(torch.zeros(1, 2)), GOAL)
    planner.reset()
    calls: list[torch.Tensor] = []
    planner.plan(point_mass(torch.zeros(1, 2), calls), GOAL)
    assert torch.equal(calls[0][0], torch.zeros(4, 2))  # the box centre

    no_warm_start = toy_planner(name, fast_settings, iterations=2, warm_start=False)
    no_warm_start.plan(point_mass(torch.zeros(1, 2)), GOAL)
    calls.clear()
    no_warm_start.plan(point_mass(torch.zeros(1, 2), calls), GOAL)
    assert torch.equal(calls[0][0], torch.zeros(4, 2))


def test_warm_start_fill_with_mean(point_mass, fast_settings):
    bounds = ActionBounds(low=[0.0, -1.0], high=[1.0, 1.0])  # centre (0.5, 0)
    planner = make_planner(
        "cem", horizon=4, action_dim=2, bounds=bounds, warm_start_fill="mean", iterations=2
    )
    planner.plan(point_mass(torch.zeros(1, 2)), GOAL)
    previous = planner.previous_plan.clone()
    calls: list[torch.Tensor] = []
    planner.plan(point_mass(torch.zeros(1, 2), calls), GOAL)
    assert torch.allclose(calls[0][0, :3], previous[0, 1:])
    assert torch.allclose(calls[0][0, 3], torch.tensor([0.5, 0.0]))


def test_icem_carries_shifted_elites_into_the_next_call(point_mass, fast_settings):
    planner = toy_planner("icem", fast_settings, iterations=3)
    planner.plan(point_mass(torch.zeros(1, 2)), GOAL)
    kept = planner.previous_elites.clone()  # [E, K', H, A]
    assert kept.shape[1] == round(planner.config.keep_elite_fraction * planner.config.elites)

    calls: list[torch.Tensor] = []
    planner.plan(point_mass(torch.zeros(1, 2), calls), GOAL)
    shifted = torch.cat([kept[0, :, 1:], kept[0, :, -1:]], dim=1)
    assert torch.allclose(calls[0][-kept.shape[1] :], shifted)


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_batched_environments_reach_their_own_goals(name, point_mass, fast_settings):
    starts = torch.tensor([[0.0, 0.0], [0.5, 0.5], [-1.0, 0.2]])
    goals = torch.tensor([[1.0, -0.6], [-0.3, 1.0], [-0.2, -0.5]])
    settings = fast_settings[name]
    planner = make_planner(
        name, horizon=4, action_dim=2, bounds=ActionBounds.box(2), energy=L2Energy(), **settings
    )
    calls: list[torch.Tensor] = []
    rollout = point_mass(starts, calls)

    result = planner.plan(rollout, goals, num_envs=3)

    assert result.actions.shape == (3, 4, 2)
    assert result.energy.shape == (3,)
    assert result.energy_history.shape == (result.iterations, 3)
    assert calls[0].shape == (3 * settings["samples"], 4, 2)  # flattened [E*N, H, A]
    final_positions = rollout(result.actions)[:, -1]
    distances = (final_positions - goals).norm(dim=-1)
    assert (distances < FINAL_DISTANCE_TOLERANCE).all(), distances
    # Each environment is solved for its own goal, not a shared one.
    assert (distances < (final_positions - goals.roll(1, dims=0)).norm(dim=-1)).all()


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_time_budget_stops_after_at_least_one_iteration(name, point_mass, fast_settings):
    planner = toy_planner(name, fast_settings, iterations=50, time_budget_s=1e-9)
    result = planner.plan(point_mass(torch.zeros(1, 2)), GOAL)
    assert result.iterations == 1
    assert result.energy_history.shape == (1, 1)
    assert torch.isfinite(result.energy).all()


def test_rollout_with_wrong_shape_is_refused(fast_settings):
    planner = toy_planner("cem", fast_settings, iterations=1)
    with pytest.raises(ValueError, match="rollout returned"):
        planner.plan(lambda actions: actions[:, :1], GOAL)


def test_goal_batch_must_match_num_envs(point_mass, fast_settings):
    planner = toy_planner("cem", fast_settings, iterations=1)
    with pytest.raises(ValueError, match="num_envs=3"):
        planner.plan(point_mass(torch.zeros(3, 2)), torch.zeros(2, 2), num_envs=3)


def test_gradient_planner_refuses_a_non_differentiable_rollout(point_mass, fast_settings):
    planner = toy_planner("gradient", fast_settings, iterations=3)
    rollout = point_mass(torch.zeros(1, 2))

    def frozen_rollout(actions):
        with torch.no_grad():
            return rollout(actions)

    with pytest.raises(RuntimeError, match="not differentiable"):
        planner.plan(frozen_rollout, GOAL)


def test_cem_hold_candidate_keeps_still_at_the_goal(point_mass, fast_settings):
    """Started on the goal and warm-started from a plan that moves (as after an
    approach), holding still is the exact optimum. The hold candidate is evaluated
    every iteration, so CEM returns it exactly; without it CEM returns its best
    sample, which still moves."""
    rollout = point_mass(GOAL.unsqueeze(0))
    moving = torch.full((1, 4, 2), 0.5)
    results = {}
    for hold in (True, False):
        planner = toy_planner("cem", fast_settings, hold_candidate=hold)
        planner.previous_plan = moving.clone()
        results[hold] = planner.plan(rollout, GOAL)
    assert torch.equal(results[True].actions, torch.zeros(1, 4, 2))
    assert results[True].energy.item() == pytest.approx(0.0, abs=1e-9)
    assert results[False].actions.abs().max().item() > 1e-3


def test_cem_hold_candidate_leaves_the_gripper_to_the_mean(point_mass, fast_settings):
    """Only the bounds' move dims are zeroed: on a 4-D action with move dims (0, 1, 2),
    the hold candidate keeps dim 3 from the mean."""
    seen = []
    planner = make_planner(
        "cem", horizon=2, action_dim=4, bounds=ActionBounds.box(4), energy=L2Energy(steps="all"),
        samples=8, elites=2, iterations=1, hold_candidate=True,
    )
    planner.previous_plan = torch.tensor([[[0.3, 0.3, 0.3, 0.7], [0.3, 0.3, 0.3, 0.7]]])
    planner.plan(point_mass(torch.zeros(1, 4), seen), torch.ones(4))
    hold = seen[0][1]  # candidate 0 is the mean, candidate 1 the hold
    assert torch.equal(hold[:, :3], torch.zeros(2, 3))
    assert torch.allclose(hold[:, 3], torch.full((2,), 0.7))
    with pytest.raises(ValueError, match="hold_candidate"):
        make_planner("cem", samples=1, elites=1, hold_candidate=True)


def test_cem_return_mean_averages_out_a_noisy_energy(point_mass, fast_settings):
    """With iid noise on every candidate's energy, the best sample is partly luck; the
    final elite mean lands nearer the true optimum, on average over seeds. The goal
    (0.3, -0.2) is reached in one step by the interior action (0.6, -0.4), then held.
    The energy reported with return_mean is that of the returned mean."""
    generator = torch.Generator().manual_seed(0)
    goal, optimal_first = torch.tensor([0.3, -0.2]), torch.tensor([0.6, -0.4])

    def noisy(predicted, goal):
        clean = L2Energy(steps="all")(predicted, goal)
        return clean + 0.3 * torch.rand(clean.shape, generator=generator)

    errors = {False: [], True: []}
    for seed in range(16):
        for return_mean in (False, True):
            planner = toy_planner("cem", fast_settings, return_mean=return_mean, seed=seed)
            result = planner.plan(point_mass(torch.zeros(1, 2)), goal, energy=noisy)
            errors[return_mean].append((result.first_action[0] - optimal_first).abs().max())
    mean_error, best_error = torch.stack(errors[True]).mean(), torch.stack(errors[False]).mean()
    assert mean_error < 0.85 * best_error  # measured 0.71x

    planner = toy_planner("cem", fast_settings, return_mean=True)
    rollout = point_mass(torch.zeros(1, 2))
    result = planner.plan(rollout, GOAL)
    assert result.energy.item() == pytest.approx(OPTIMAL_ENERGY, abs=ENERGY_TOLERANCE)
    recomputed = L2Energy(steps="all")(rollout(result.actions), GOAL)
    assert torch.allclose(recomputed, result.energy, atol=1e-5)


def test_cem_hold_margin_keeps_still_unless_a_move_clearly_pays(point_mass, fast_settings):
    """Under iid energy noise, the best of many samples nearly always undercuts the hold
    candidate a little, so a planner at the goal keeps moving; a 30% margin keeps it
    still. Away from the goal, a move pays more than the margin and is still taken."""
    generator = torch.Generator().manual_seed(0)

    def noisy(predicted, goal):
        clean = L2Energy(steps="all")(predicted, goal)
        return clean + 0.05 * torch.rand(clean.shape, generator=generator) + 0.1

    still = {0.0: 0, 0.3: 0}
    for seed in range(8):
        for margin in still:
            planner = toy_planner("cem", fast_settings, hold_candidate=True, hold_margin=margin, seed=seed)
            result = planner.plan(point_mass(GOAL.unsqueeze(0)), GOAL, energy=noisy)
            still[margin] += int(torch.equal(result.actions, torch.zeros(1, 4, 2)))
    assert still[0.3] == 8 and still[0.0] <= 2, still
    # the margin applies to the returned mean as well
    planner = toy_planner("cem", fast_settings, hold_candidate=True, hold_margin=0.3, return_mean=True)
    assert torch.equal(planner.plan(point_mass(GOAL.unsqueeze(0)), GOAL, energy=noisy).actions, torch.zeros(1, 4, 2))
    planner = toy_planner("cem", fast_settings, hold_candidate=True, hold_margin=0.3)
    away = planner.plan(point_mass(torch.zeros(1, 2)), GOAL)
    assert away.first_action.abs().max().item() > 0.1
    with pytest.raises(ValueError, match="hold_margin needs hold_candidate"):
        make_planner("cem", samples=8, elites=2, hold_margin=0.1)
    with pytest.raises(ValueError, match="hold_margin"):
        make_planner("cem", samples=8, elites=2, hold_candidate=True, hold_margin=1.0)
