"""Q-learning over the nodes in topological order, as in QS-DNN (de Prado et al., DATE 2019).

An episode builds one plan: at node ``l`` the state is (``l``, the option chosen for node ``l - 1``), the
action an option of node ``l``, the reward minus its latency and the conversions on its edges from the
producers already assigned. Actions come epsilon-greedy from the Q table, epsilon falling linearly from
``epsilon_start`` to ``epsilon_end`` over the budget. After every episode the table learns from that episode
and from a sample of earlier ones (experience replay, as MetaQNN and QS-DNN do), all steps of the batch in
one update from the table as it was. The best plan of any episode is the answer.

Actions that cannot lead to a feasible plan are masked: an infinite latency or conversion from the
producers chosen, or a peak memory whose lower bound (weights and workspace chosen so far, the smallest
possible for the nodes left) breaks the memory limit. At the last node that bound is the exact peak
memory, so an episode that never meets an all-masked node is feasible; one that does takes a masked
action at a large negative reward and teaches the table to avoid the way there. A next state's value is
the best over the options that episode could take there, so a masked option's untouched (optimistic)
value never props up the states before it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..space import DesignSpace
from .base import Evaluator, Searcher, check_number


class _Tables:
    """The space as plain lists for the steps of an episode (a handful of options is faster in Python than
    in numpy) and as padded arrays to price a whole episode at once."""

    def __init__(self, space: DesignSpace, memory_limit: float | None) -> None:
        count, widest = len(space.nodes), max(space.sizes)
        self.sizes = space.sizes
        self.latency = [[o.latency_ms for o in node.options] for node in space.nodes]
        self.incoming = [[(edge.source, edge.cost) for edge in edges] for edges in space.incoming()]
        self.latency_table = np.zeros((count, widest))
        for l, latency in enumerate(self.latency):
            self.latency_table[l, :len(latency)] = latency
        self.sources = np.array([edge.source for edge in space.edges], dtype=np.int64)
        self.targets = np.array([edge.target for edge in space.edges], dtype=np.int64)
        self.conversions = np.zeros((len(space.edges), widest, widest))
        for e, edge in enumerate(space.edges):
            matrix = np.array(edge.cost)
            self.conversions[e, :matrix.shape[0], :matrix.shape[1]] = matrix
        costs = np.concatenate([self.latency_table.ravel(), self.conversions.ravel()])
        # worse than any feasible plan, yet finite so Q-values stay numbers
        self.penalty = 2.0 * float(np.abs(costs[np.isfinite(costs)]).sum()) + 1.0

        self.memory_limit = memory_limit
        self.weights = [[o.weight_bytes for o in node.options] for node in space.nodes]
        self.workspace = [[o.workspace_bytes for o in node.options] for node in space.nodes]
        # lower bounds on what the nodes after l add: the lightest weights, the largest smallest workspace
        rest_weights, self.rest_workspace = [0] * (count + 1), [0] * (count + 1)
        for l in reversed(range(count)):
            rest_weights[l] = rest_weights[l + 1] + min(self.weights[l])
            self.rest_workspace[l] = max(self.rest_workspace[l + 1], min(self.workspace[l]))
        # every option's weights plus everything in the bound that does not depend on the episode
        self.fixed_memory = [[w + rest_weights[l + 1] + space.live_bytes() for w in self.weights[l]]
                             for l in range(count)]
        # nodes where some option may cost infinitely much, so each step must look at every option's cost
        self.infinite = [not all(map(math.isfinite, self.latency[l]))
                         or any(not math.isfinite(c) for _, matrix in self.incoming[l] for row in matrix for c in row)
                         for l in range(count)]

    def roomy(self, l: int, weights: int, workspace: int) -> bool:
        """Whether every option of node ``l`` keeps the peak-memory lower bound within the limit."""
        return self.memory_limit is None or (
            weights + max(self.fixed_memory[l]) + max(workspace, self.rest_workspace[l + 1], max(self.workspace[l]))
            <= self.memory_limit)

    def possible(self, l: int, plan: list[int], weights: int, workspace: int) -> list[bool]:
        """Which options of node ``l`` have a finite cost given the producers chosen in ``plan`` and a
        peak-memory lower bound within the limit, given the weights and workspace chosen so far."""
        cost = self.latency[l]
        for source, matrix in self.incoming[l]:
            cost = [a + b for a, b in zip(cost, matrix[plan[source]])]
        ok = [c < math.inf for c in cost]
        if self.memory_limit is not None:
            workspace = max(workspace, self.rest_workspace[l + 1])
            ok = [good and weights + fixed + max(workspace, scratch) <= self.memory_limit
                  for good, fixed, scratch in zip(ok, self.fixed_memory[l], self.workspace[l])]
        return ok

    def step_rewards(self, plan: np.ndarray) -> np.ndarray:
        """Minus the cost of every step of a full plan: its option and the conversions into it."""
        conversions = self.conversions[np.arange(len(self.sources)), plan[self.sources], plan[self.targets]]
        steps = np.arange(len(plan))
        return -(self.latency_table[steps, plan] + np.bincount(self.targets, conversions, minlength=len(plan)))


class QLearningSearcher(Searcher):
    """QS-DNN's reinforcement-learning search: one episode, one plan, one evaluation.

    Parameters
    ----------
    learning_rate
        Step size alpha of the Q update, in (0, 1]. The default 0.2 is above MetaQNN's 0.01-0.1 because a
        state-action pair met several times in one replayed batch is updated once, not once per meeting;
        on the synthetic ResNet-18 spaces it missed the 2% target less often than 0.1 at the same budget.
    discount
        gamma, in [0, 1]: 1 (the default) weighs every later node's cost fully, as the plan's cost does.
    epsilon_start, epsilon_end
        Exploration probability at the first and the last episode (linear in between), in [0, 1].
    replay_batch
        Earlier episodes replayed after every episode (0: none).
    replay_memory
        Most recent episodes kept for replay.

    Examples
    --------
    >>> from tvm_dse.testing.spaces import chain_space
    >>> result = QLearningSearcher().search(chain_space(10), seed=0)
    >>> result.evaluations == result.info["episodes"]
    True
    """

    name = "qlearning"

    def __init__(self, learning_rate: float = 0.2, discount: float = 1.0, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.1, replay_batch: int = 16, replay_memory: int = 2000) -> None:
        check_number("learning_rate", learning_rate, low=0.0, high=1.0, low_open=True)
        check_number("discount", discount, low=0.0, high=1.0)
        check_number("epsilon_start", epsilon_start, low=0.0, high=1.0)
        check_number("epsilon_end", epsilon_end, low=0.0, high=1.0)
        if epsilon_end > epsilon_start:
            raise ValueError(f"epsilon_end ({epsilon_end}) must not exceed epsilon_start ({epsilon_start})")
        check_number("replay_batch", replay_batch, integer=True, low=0)
        check_number("replay_memory", replay_memory, integer=True, low=1)
        self.learning_rate = learning_rate
        self.discount = discount
        self.epsilon_start = epsilon_start
        self.epsilon_end = epsilon_end
        self.replay_batch = replay_batch
        self.replay_memory = replay_memory

    def explore(self, space: DesignSpace, evaluator: Evaluator, rng: np.random.Generator) -> dict[str, Any]:
        tables = _Tables(space, evaluator.memory_limit_bytes)
        count, widest = len(space.nodes), max(space.sizes)
        # Q[l, previous option, option]; 0 is optimistic (every reward is negative), so untried options get
        # tried; padding beyond a node's options is -inf so it never wins a max
        q = np.zeros((count, widest, widest))
        for l, size in enumerate(space.sizes):
            q[l, :, size:] = -np.inf
        plans = np.zeros((self.replay_memory, count), dtype=np.int64)
        rewards = np.zeros((self.replay_memory, count))
        # the options each step could take: a next state's value is the best of those, not of all
        allowed = np.ones((self.replay_memory, count, widest), dtype=bool)
        episodes = 0
        while not evaluator.exhausted:
            epsilon = self.epsilon_start + (self.epsilon_end - self.epsilon_start) * evaluator.progress
            slot = episodes % self.replay_memory
            self._episode(tables, q, epsilon, rng, plans[slot], rewards[slot], allowed[slot])
            evaluator.evaluate(plans[slot].tolist())
            episodes += 1
            stored = min(episodes, self.replay_memory)
            batch = np.concatenate([[slot], rng.integers(0, stored, self.replay_batch)])
            self._learn(q, plans[batch], rewards[batch], allowed[batch])
        return {"episodes": episodes}

    def _episode(self, tables: _Tables, q: np.ndarray, epsilon: float, rng: np.random.Generator,
                 plan: np.ndarray, rewards: np.ndarray, allowed: np.ndarray) -> None:
        """Build one plan into ``plan``, its per-step rewards into ``rewards``, the options it could take at
        every step into ``allowed``."""
        explore, pick = (rng.random(len(plan)) < epsilon).tolist(), rng.random(len(plan))
        guesses = (pick * tables.sizes).astype(np.int64).tolist()
        chosen: list[int] = []
        forced = []
        allowed[:] = True
        previous, weights, workspace = 0, 0, 0
        for l, size in enumerate(tables.sizes):
            values = q[l, previous, :size]
            if tables.infinite[l] or not tables.roomy(l, weights, workspace):
                possible = tables.possible(l, chosen, weights, workspace)
                if not any(possible):
                    forced.append(l)
                    possible = [True] * size
                allowed[l, :size] = possible
                candidates = [i for i, ok in enumerate(possible) if ok]
                action = (candidates[int(pick[l] * len(candidates))] if explore[l]
                          else candidates[int(values[candidates].argmax())])
            else:
                action = guesses[l] if explore[l] else int(values.argmax())
            if tables.memory_limit is not None:
                weights += tables.weights[l][action]
                workspace = max(workspace, tables.workspace[l][action])
            chosen.append(action)
            previous = action
        plan[:] = chosen
        rewards[:] = tables.step_rewards(plan)
        rewards[forced] = -tables.penalty

    def _learn(self, q: np.ndarray, plans: np.ndarray, rewards: np.ndarray, allowed: np.ndarray) -> None:
        """One Q update for every step of every episode in the batch, all from the table as it was."""
        steps = np.arange(plans.shape[1])
        previous = np.concatenate([np.zeros((len(plans), 1), dtype=np.int64), plans[:, :-1]], axis=1)
        # the value of each step's next state (l + 1, option of node l) over the options that episode could
        # take there (an impossible option keeps its optimistic 0); none after the last node
        following = np.zeros(plans.shape, dtype=float)
        following[:, :-1] = np.where(allowed[:, 1:], q[steps[1:], plans[:, :-1]], -np.inf).max(axis=2)
        current = q[steps, previous, plans]
        q[steps, previous, plans] = current + self.learning_rate * (rewards + self.discount * following - current)
