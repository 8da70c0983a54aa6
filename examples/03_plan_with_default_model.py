"""Plan toward a goal image with the shipped default world model, in a closed loop.

    uv run python examples/03_plan_with_default_model.py          # one reach episode, ~1 min

What `jepa-robot demo` does for each episode, by hand:

1. load the embedded default model (``WorldModel.load("default")``: a tiny V-JEPA 2
   encoder, a 0.6M-parameter predictor and a state readout of its latents);
2. make the evaluation protocol's goal image for one reach seed (``make_goal_images``:
   the task-aimed scripted expert runs, its success frame closest to the target becomes
   the goal, and the env is reset to the same seed);
3. build the MPC agent from the ``demo`` config's planner and agent settings (CEM on the
   readout energy, ``planner=default_model agent=default_model``);
4. run the episode (``run_episode``): the agent replans every predictor step (5 env
   steps) and the env's success flag on the last step decides the episode.

Returns success, the number of replans and the mean plan time per replan. The protocol
measures plan time on one torch thread per worker (about 0.3 s per replan here); run with
``OMP_NUM_THREADS=1`` to compare, since two threads on a busy 2-core machine can be far
slower.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from envs import ENV_IDS, EPISODE_BUDGET  # importing envs registers JepaRobot/MetaWorld-*-v0
from envs.metaworld.goals import make_goal_images
from jepa_robot.agent import make_agent, run_episode
from jepa_robot.config import compose
from jepa_robot.config.planning import EvalConfig
from jepa_robot.world_model.model import WorldModel


def main(task: str = "reach", seed: int = 100_000, steps: int | None = None) -> dict:
    """One closed-loop ``task`` episode from ``seed`` (evaluation seeds start at 100000)
    for ``steps`` env steps (default: the protocol's budget, 100 for reach)."""
    world_model = WorldModel.load("default")
    # The demo's planner and agent settings; any eval override would work here too.
    demo = compose("demo", [], EvalConfig)
    agent = make_agent(world_model, demo.planner.for_task(task), demo.agent)

    env = gym.make(ENV_IDS[task], image_size=world_model.image_size,
                   cameras=world_model.cameras).unwrapped
    try:
        goal, observation, _ = make_goal_images(env, seed=seed)
        agent.reset([goal.goal])  # reach has no sub-goals; the goal image of every camera
        result = run_episode(env, agent, observation, steps or EPISODE_BUDGET[task])
    finally:
        env.close()

    plan_seconds = [replan.seconds for replan in result.replans]
    energies = [replan.energy for replan in result.replans]
    summary = {
        "success": result.success,
        "steps": result.steps,
        "replans": len(result.replans),
        "mean_plan_seconds": float(np.mean(plan_seconds)) if plan_seconds else float("nan"),
        "energies": energies,
        "final_goal_distance_m": result.final_goal_distance_m,
    }
    print(f"{task} seed {seed}: {'success' if result.success else 'failure'} after {result.steps} "
          f"steps; {summary['replans']} replans, {1e3 * summary['mean_plan_seconds']:.0f} ms each "
          f"on average; the fingers end {100 * result.final_goal_distance_m:.1f} cm from the target")
    return summary


if __name__ == "__main__":
    main()
