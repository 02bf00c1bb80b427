"""A hypothesis state machine over the plan and run lifecycle (issue 6), driven through the
services only: edit, submit, approve, reject, override a precondition, cancel, start, pause,
resume, abort; plus the engine's two ways a run moves on its own: a stop condition tripping
(recovery.replay.engine.stop_run) and a worker running the run to its end (engine.Worker). The ORM
only creates letters and people and reads state.

The test keeps its own model of every plan and run, predicts whether each call succeeds or is
refused (and with which error), and checks after every step:
- the database agrees with the model, and every state change follows the allowed graph below;
- a plan is approved only with enough valid approvals of its current content hash, none by its
  author (who holds the approver role too, so only four eyes stops them) - invariant 7;
- a successful edit leaves no valid approval;
- a plan has at most one active run, and every run's plan_hash is a content hash that enough
  approvers other than the author approved before it started;
- a refused call raises InvalidInput or NotPermitted and changes nothing (no audit event, no row
  written or changed); a successful one writes exactly one audit event (invariant 8).

The target is the real RabbitMQ, not a dead endpoint: a run's worker publishes its two letters to
a fresh queue in a fraction of a second, so the worker rule ends runs (completed, not verified: the
plans have no verification step) and checks the queue's depth, and the machine goes on to what
follows a run: finished plans, another plan free to start on the same queue. With a dead target a
run could start only under an override and its worker would retry until its job's time limit, so no
run would ever end on its own. The override rule still matters: plans may be edited to share a
queue, and then one starts while another runs on it only under an admin's override of
no_other_active_run_on_target for its current content.

Examples share the test's database transaction (so on-commit enqueues never fire); each has its
own letters and queues, so earlier examples' plans and runs never interfere. Each example starts
its two plans (on one queue or two) at a random point of the happy path, draft to running, so
that 15 steps reach the runs' states too; rules mostly pick a plan or run whose state suits them
and sometimes any, so refusals keep coming.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from recovery.brokers.base import DlqAddress
from recovery.brokers.registry import adapter_for
from recovery.errors import InvalidInput, NotPermitted
from recovery.models import (
    RUN_ACTIVE,
    ApprovalDecision,
    AuditEvent,
    Broker,
    Disposition,
    PlanApproval,
    PlanState,
    ReplayPlan,
    ReplayRun,
    RunState,
)
from recovery.permissions import Role
from recovery.replay import engine, selectors, services
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.brokers.harness import RabbitHarness
from tests.factories import BrokerFactory, DeadLetterFactory, DeadLetterQueueFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

LETTERS_PER_PLAN = 2
CONFLICT = "no_other_active_run_on_target"
GOOD_REASON = "checked with the on-call team"

# The allowed graph. Any edit before a run sends a plan back to draft; finished and cancelled
# are final.
PLAN_EDGES = {
    PlanState.DRAFT: {PlanState.SUBMITTED, PlanState.CANCELLED},
    PlanState.SUBMITTED: {PlanState.APPROVED, PlanState.REJECTED, PlanState.DRAFT, PlanState.CANCELLED},
    PlanState.APPROVED: {PlanState.RUNNING, PlanState.REJECTED, PlanState.DRAFT, PlanState.CANCELLED},
    PlanState.REJECTED: {PlanState.DRAFT, PlanState.CANCELLED},
    PlanState.RUNNING: {PlanState.FINISHED},
    PlanState.FINISHED: set(),
    PlanState.CANCELLED: set(),
}
RUN_EDGES = {
    None: {RunState.RUNNING},  # run_start creates a run running
    RunState.RUNNING: {RunState.PAUSED, RunState.VERIFYING, RunState.STOPPED, RunState.ABORTED},
    RunState.PAUSED: {RunState.RUNNING, RunState.ABORTED},
    RunState.VERIFYING: {
        RunState.VERIFIED,
        RunState.COMPLETED_NOT_VERIFIED,
        RunState.VERIFICATION_FAILED,
        RunState.FAILED,
        RunState.ABORTED,
    },
}
# One worker step walks running -> verifying -> an end; the test never sees verifying itself.
RUN_STEP_EDGES = {**RUN_EDGES, RunState.RUNNING: RUN_EDGES[RunState.RUNNING] | RUN_EDGES[RunState.VERIFYING]}
EDITABLE = (PlanState.DRAFT, PlanState.SUBMITTED, PlanState.APPROVED, PlanState.REJECTED)
IN_REVIEW = (PlanState.SUBMITTED, PlanState.APPROVED)
FINAL = (PlanState.FINISHED, PlanState.CANCELLED)
HEAD_STARTS = (PlanState.DRAFT, PlanState.SUBMITTED, PlanState.APPROVED, PlanState.RUNNING)

# The author is an operator and an approver: only four eyes stops them approving their plan.
PEOPLE = {
    "author": (Role.OPERATOR, Role.APPROVER),
    "approver1": (Role.APPROVER,),
    "approver2": (Role.APPROVER,),
    "operator": (Role.OPERATOR,),
    "admin": (Role.ADMIN,),
    "viewer": (Role.VIEWER,),
}
PLANNERS = {"author", "operator"}  # who may plan and run
OPERATORS = st.sampled_from(["operator", "author", "operator", "author", "viewer"])

GOOD_CHANGES = st.sampled_from(
    [
        ("rate_per_second", 100),
        ("rate_per_second", 1000),
        ("required_approvals", 1),
        ("required_approvals", 2),
        ("target", 0),  # which of the example's two queues
        ("target", 1),
        ("name", "first"),
        ("name", "second"),
    ]
)
BAD_CHANGES = [("rate_per_second", 0), ("batch_size", 0), ("state", PlanState.APPROVED)]

# What a refused call must leave alone, every column of every row of the example's plans, read in
# one round trip (the machine takes hundreds of snapshots).
SNAPSHOT_SQL = """
WITH runs AS (SELECT id FROM recovery_replayrun WHERE plan_id = ANY(%(plans)s))
SELECT
  (SELECT count(*) FROM recovery_auditevent),
  (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM recovery_replayplan t WHERE t.id = ANY(%(plans)s)),
  (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM recovery_planapproval t WHERE t.plan_id = ANY(%(plans)s)),
  (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM recovery_preconditionoverride t
     WHERE t.plan_id = ANY(%(plans)s)),
  (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM recovery_planitem t WHERE t.plan_id = ANY(%(plans)s)),
  (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM recovery_replayrun t WHERE t.id IN (SELECT id FROM runs)),
  (SELECT md5(string_agg(t::text, ',' ORDER BY t.id)) FROM recovery_ledgerentry t
     WHERE t.run_id IN (SELECT id FROM runs)),
  (SELECT count(*) FROM recovery_runevent t WHERE t.run_id IN (SELECT id FROM runs))
"""


def _some_plan(*states: str) -> Any:
    """Rule precondition: some plan is in one of ``states``. The rule may still pick another
    plan, so refusals keep coming, but rules that cannot succeed at all are not drawn."""
    return lambda machine: any(plan.state in states for plan in machine.plans)


def _some_run(*states: str) -> Any:
    return lambda machine: any(run.state in states for run in machine.run_models.values())


@dataclass
class World:
    """What outlives one example: the people, the real RabbitMQ broker row, the letters' broker."""

    users: dict[str, Any]
    rabbit: RabbitHarness
    source: Broker


@dataclass
class PlanModel:
    pk: int
    state: str
    settings: dict[str, Any]  # name, rate_per_second, required_approvals, target (queue index)
    approvers: set[str] = field(default_factory=set)  # valid approvals of the current content
    overrides: set[tuple[tuple, str]] = field(default_factory=set)  # (content, check)
    run: int | None = None  # its active run

    @property
    def content(self) -> tuple:
        return tuple(sorted(self.settings.items()))


@dataclass
class RunModel:
    plan: int  # index into the machine's plans
    state: str


class PlanLifecycle(RuleBasedStateMachine):
    world: World  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.users = self.world.users
        self.names = {user.pk: name for name, user in self.users.items()}
        self.queues = [self.world.rabbit.new_queue(), self.world.rabbit.new_queue()]
        self.delivered: Counter[str] = Counter()  # queue -> letters verified runs published there
        self.plans: list[PlanModel] = []
        self.run_models: dict[int, RunModel] = {}
        self.seen_plans: dict[int, str] = {}
        self.seen_runs: dict[int, str] = {}

    # -- setting up: drafts over letters of their own, through the services ----------------

    def _draft(self, queue: int) -> None:
        index = len(self.plans)
        dlq = DeadLetterQueueFactory(broker=self.world.source)
        for n in range(LETTERS_PER_PLAN):
            DeadLetterFactory(dlq=dlq, body=f'{{"plan": {index}, "n": {n}}}'.encode(), disposition=Disposition.REPLAY)
        name, author = ("first", "second")[index % 2], self.users["author"]
        plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name=name)
        target = {"target_broker": self.world.rabbit.broker, "target_routing_key": self.queues[queue]}
        services.plan_update(
            actor=author,
            plan=plan,
            changes={**target, "rate_per_second": 1000, "stop_conditions": [], "verifications": []},
        )
        settings_ = {"name": name, "rate_per_second": 1000, "required_approvals": 1, "target": queue}
        self.plans.append(PlanModel(pk=plan.pk, state=PlanState.DRAFT, settings=settings_))

    @initialize(
        first=st.sampled_from(HEAD_STARTS + (PlanState.RUNNING,) * 2),
        second=st.sampled_from(HEAD_STARTS[:-1]),
        one_queue=st.booleans(),
        overridden=st.booleans(),
    )
    def draft_two_plans(self, first: str, second: str, one_queue: bool, overridden: bool) -> None:
        """Two plans, on one queue or two, each walked to a random point of the happy path; the
        second maybe with an admin's override of the one-run-per-target check."""
        for head_start, queue in ((first, 0), (second, 0 if one_queue else 1)):
            self._draft(queue)
            self._walk(len(self.plans) - 1, head_start)
        plan = self.plans[-1]
        if overridden and plan.state in IN_REVIEW:
            self._call(None, partial(services.precondition_override, actor=self.users["admin"], plan=self._row(plan),
                                     check=CONFLICT, reason=GOOD_REASON))  # fmt: skip
            plan.overrides.add((plan.content, CONFLICT))

    def _walk(self, index: int, to: str) -> None:
        """Submit, approve and start as far as ``to``, checking each hop like a step."""
        plan = self.plans[index]
        self.invariants_hold()
        if to == PlanState.DRAFT:
            return
        self._call(None, partial(services.plan_submit, actor=self.users["author"], plan=self._row(plan)))
        plan.state = PlanState.SUBMITTED
        self.invariants_hold()
        if to == PlanState.SUBMITTED:
            return
        self._call(None, partial(services.plan_approve, actor=self.users["approver1"], plan=self._row(plan)))
        plan.state, plan.approvers = PlanState.APPROVED, {"approver1"}
        self.invariants_hold()
        if to == PlanState.APPROVED:
            return
        self._started(index, self._call(None, partial(services.run_start, actor=self.users["operator"],
                                                      plan=self._row(plan))))  # fmt: skip

    @precondition(lambda self: sum(plan.state not in FINAL for plan in self.plans) < 2)
    @rule(queue=st.integers(0, 1))
    def draft_another(self, queue: int) -> None:
        """Keeps the machine going once plans are cancelled or finished."""
        self._draft(queue)

    # -- calling a service and checking what it did -------------------------------------------

    def _snapshot(self) -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(SNAPSHOT_SQL, {"plans": [plan.pk for plan in self.plans]})
            return cursor.fetchone()

    def _call(self, refusal: type[Exception] | None, call: Any) -> Any:
        """Call a service expecting ``refusal`` (None: success). A refusal changes nothing; a
        success writes exactly one audit event."""
        before = self._snapshot()
        try:
            result = call()
        except (InvalidInput, NotPermitted) as exc:
            assert refusal is type(exc), f"expected {refusal and refusal.__name__}, got {type(exc).__name__}: {exc}"
            assert self._snapshot() == before, f"refused ({exc}) but something changed"
            return None
        assert refusal is None, f"expected {refusal.__name__}, but the call succeeded"
        assert AuditEvent.objects.count() == before[0] + 1, "a change writes exactly one audit event"
        return result

    def _row(self, plan: PlanModel) -> ReplayPlan:
        return ReplayPlan.objects.get(pk=plan.pk)

    def _plan(self, data: st.DataObject, *fits: str) -> int:
        """A plan: three times in four one whose state suits the rule, else any (refusals)."""
        fitting = [i for i, plan in enumerate(self.plans) if plan.state in fits]
        anyone = st.sampled_from(range(len(self.plans)))
        suited = st.sampled_from(fitting) if fitting else anyone
        return data.draw(st.one_of(suited, suited, suited, anyone), label="plan")

    def _run(self, data: st.DataObject, *fits: str) -> int:
        fitting = [pk for pk, run in sorted(self.run_models.items()) if run.state in fits]
        anyone = st.sampled_from(sorted(self.run_models))
        suited = st.sampled_from(fitting) if fitting else anyone
        return data.draw(st.one_of(suited, suited, suited, anyone), label="run")

    @staticmethod
    def _can(actor: str, allowed: set[str]) -> type[Exception] | None:
        return None if actor in allowed else NotPermitted

    def _conflicting(self, index: int) -> bool:
        """Another plan of the machine has an active run on this plan's queue."""
        mine = self.plans[index].settings["target"]
        return any(p.run is not None and p.settings["target"] == mine for i, p in enumerate(self.plans) if i != index)

    # -- plan rules ----------------------------------------------------------------------------

    @precondition(_some_plan(*EDITABLE))
    @rule(data=st.data(), actor=st.sampled_from(["author", "author", "operator", "approver1"]),
          change=st.one_of(GOOD_CHANGES, GOOD_CHANGES, st.sampled_from(BAD_CHANGES)))  # fmt: skip
    def edit(self, data: st.DataObject, actor: str, change: tuple[str, Any]) -> None:
        plan = self.plans[self._plan(data, *IN_REVIEW)]  # mostly plans whose approvals an edit must void
        name, value = change
        changes = {"target_routing_key": self.queues[value]} if name == "target" else {name: value}
        refusal = self._can(actor, PLANNERS)
        if refusal is None and (plan.state not in EDITABLE or change in BAD_CHANGES or plan.settings[name] == value):
            refusal = InvalidInput  # no longer editable, a bad value, or nothing changed
        old_hash = self._row(plan).content_hash
        if not self._call(refusal, partial(services.plan_update, actor=self.users[actor], plan=self._row(plan),
                                           changes=changes)):  # fmt: skip
            return
        plan.settings[name] = value
        plan.state, plan.approvers = PlanState.DRAFT, set()
        row = self._row(plan)
        assert not row.approvals.filter(decision=ApprovalDecision.APPROVE, voided_at__isnull=True).exists()
        assert not selectors.valid_approvals(row) and not selectors.valid_approvals(row, content_hash=old_hash or "-")

    @precondition(_some_plan(PlanState.DRAFT))
    @rule(data=st.data(), actor=st.sampled_from(["author", "author", "operator", "approver1"]))
    def submit(self, data: st.DataObject, actor: str) -> None:
        plan = self.plans[self._plan(data, PlanState.DRAFT)]
        refusal = self._can(actor, PLANNERS) or (InvalidInput if plan.state != PlanState.DRAFT else None)
        if self._call(refusal, partial(services.plan_submit, actor=self.users[actor], plan=self._row(plan))):
            plan.state = PlanState.SUBMITTED

    @precondition(_some_plan(*IN_REVIEW))
    @rule(data=st.data(), actor=st.sampled_from(["approver1", "approver2", "approver1", "approver2", "author"]))
    def approve(self, data: st.DataObject, actor: str) -> None:
        plan = self.plans[self._plan(data, *IN_REVIEW)]
        if actor == "author":
            refusal: type[Exception] | None = NotPermitted  # four eyes, although the author is an approver
        elif plan.state not in IN_REVIEW or actor in plan.approvers:
            refusal = InvalidInput
        else:
            refusal = None
        if self._call(refusal, partial(services.plan_approve, actor=self.users[actor], plan=self._row(plan))):
            plan.approvers.add(actor)
            if len(plan.approvers) >= plan.settings["required_approvals"]:
                plan.state = PlanState.APPROVED

    @precondition(_some_plan(*IN_REVIEW))
    @rule(data=st.data(), actor=st.sampled_from(["approver1", "approver2", "author"]),
          comment=st.sampled_from(["the target is still failing", "no"]))  # fmt: skip
    def reject(self, data: st.DataObject, actor: str, comment: str) -> None:
        plan = self.plans[self._plan(data, *IN_REVIEW)]
        if actor == "author":
            refusal: type[Exception] | None = NotPermitted
        elif plan.state not in IN_REVIEW or len(comment) < services.MIN_REASON:
            refusal = InvalidInput
        else:
            refusal = None
        if self._call(refusal, partial(services.plan_reject, actor=self.users[actor], plan=self._row(plan),
                                       comment=comment)):  # fmt: skip
            plan.state, plan.approvers = PlanState.REJECTED, set()

    @precondition(_some_plan(*IN_REVIEW))
    @rule(data=st.data(), actor=st.sampled_from(["admin", "admin", "operator"]),
          check=st.sampled_from([CONFLICT, CONFLICT, "target_reachable", "no_such_check"]),
          reason=st.sampled_from([GOOD_REASON, GOOD_REASON, "ok"]))  # fmt: skip
    def override(self, data: st.DataObject, actor: str, check: str, reason: str) -> None:
        plan = self.plans[self._plan(data, *IN_REVIEW)]
        refusal = self._can(actor, {"admin"})
        if refusal is None and (
            len(reason) < services.MIN_REASON or check == "no_such_check" or plan.state not in IN_REVIEW
        ):
            refusal = InvalidInput
        if self._call(refusal, partial(services.precondition_override, actor=self.users[actor],
                                       plan=self._row(plan), check=check, reason=reason)):  # fmt: skip
            plan.overrides.add((plan.content, check))

    @precondition(_some_plan(*EDITABLE))
    @rule(data=st.data(), actor=st.sampled_from(["author", "operator", "viewer", "approver1"]))
    def cancel(self, data: st.DataObject, actor: str) -> None:
        """Any plan, often one past cancelling: a cancel ends a plan for good."""
        plan = data.draw(st.sampled_from(self.plans), label="plan")
        refusal = self._can(actor, PLANNERS)
        if refusal is None and plan.state not in EDITABLE:
            refusal = InvalidInput
        if self._call(refusal, partial(services.plan_cancel, actor=self.users[actor], plan=self._row(plan),
                                       reason="not needed")):  # fmt: skip
            plan.state = PlanState.CANCELLED

    # -- run rules -----------------------------------------------------------------------------

    @precondition(_some_plan(PlanState.APPROVED))
    @rule(data=st.data(), actor=OPERATORS)
    def start(self, data: st.DataObject, actor: str) -> None:
        index = self._plan(data, PlanState.APPROVED)
        plan = self.plans[index]
        refusal = self._can(actor, PLANNERS)
        if refusal is None and (
            plan.state != PlanState.APPROVED
            or (self._conflicting(index) and (plan.content, CONFLICT) not in plan.overrides)
        ):
            refusal = InvalidInput
        run = self._call(refusal, partial(services.run_start, actor=self.users[actor], plan=self._row(plan)))
        if run is not None:
            self._started(index, run)

    def _started(self, index: int, run: ReplayRun) -> None:
        assert run.total == LETTERS_PER_PLAN
        plan = self.plans[index]
        plan.state, plan.run = PlanState.RUNNING, run.pk
        self.run_models[run.pk] = RunModel(plan=index, state=RunState.RUNNING)

    def _finished(self, model: RunModel) -> None:
        plan = self.plans[model.plan]
        plan.state, plan.run = PlanState.FINISHED, None

    def _control(self, run_pk: int, actor: str, allowed: tuple[str, ...], service: Any, new_state: str) -> None:
        model = self.run_models[run_pk]
        refusal = self._can(actor, PLANNERS)
        if refusal is None and model.state not in allowed:
            refusal = InvalidInput
        run = ReplayRun.objects.get(pk=run_pk)
        if self._call(refusal, partial(service, actor=self.users[actor], run=run, reason="operator's call")):
            model.state = new_state
            if new_state == RunState.ABORTED:
                self._finished(model)

    @precondition(_some_run(RunState.RUNNING))
    @rule(data=st.data(), actor=OPERATORS)
    def pause(self, data: st.DataObject, actor: str) -> None:
        self._control(self._run(data, RunState.RUNNING), actor, (RunState.RUNNING,), services.run_pause,
                      RunState.PAUSED)  # fmt: skip

    @precondition(_some_run(RunState.PAUSED))
    @rule(data=st.data(), actor=OPERATORS)
    def resume(self, data: st.DataObject, actor: str) -> None:
        self._control(self._run(data, RunState.PAUSED), actor, (RunState.PAUSED,), services.run_resume,
                      RunState.RUNNING)  # fmt: skip

    @precondition(_some_run(*RUN_ACTIVE))
    @rule(data=st.data(), actor=OPERATORS)
    def abort(self, data: st.DataObject, actor: str) -> None:
        self._control(self._run(data, *RUN_ACTIVE), actor, RUN_ACTIVE, services.run_abort, RunState.ABORTED)

    @precondition(_some_run(RunState.RUNNING))
    @rule(data=st.data(), action=st.sampled_from(["pause", "abort"]))
    def stop_condition_trips(self, data: st.DataObject, action: str) -> None:
        """The engine stops a run on a stop condition: only a running run moves."""
        run = self._run(data, RunState.RUNNING)
        model = self.run_models[run]
        before = self._snapshot()
        moved = engine.stop_run(ReplayRun.objects.get(pk=run), reason="re-dead-letter rate 80% > 5%", action=action)
        assert moved == (model.state == RunState.RUNNING)
        if not moved:
            assert self._snapshot() == before
            return
        assert AuditEvent.objects.count() == before[0] + 1
        if action == "pause":
            model.state = RunState.PAUSED
        else:
            model.state = RunState.STOPPED
            self._finished(model)

    @precondition(_some_run(*RUN_ACTIVE))
    @rule(data=st.data())
    def worker(self, data: st.DataObject) -> None:
        """One worker job: a running run publishes every letter to its queue and ends verified;
        a paused or ended run is left as it is."""
        run = self._run(data, RunState.RUNNING)
        model = self.run_models[run]
        before = self._snapshot()
        outcome = engine.Worker(run, 0).run()
        if model.state != RunState.RUNNING:
            assert self._snapshot() == before, f"a worker moved a {model.state} run ({outcome})"
            return
        assert outcome == RunState.COMPLETED_NOT_VERIFIED  # no verification step (issue 15)
        row = ReplayRun.objects.get(pk=run)
        assert (row.state, row.published, row.failed) == (RunState.COMPLETED_NOT_VERIFIED, LETTERS_PER_PLAN, 0)
        model.state = RunState.COMPLETED_NOT_VERIFIED
        queue = self.queues[self.plans[model.plan].settings["target"]]
        self.delivered[queue] += LETTERS_PER_PLAN
        self._finished(model)
        adapter = adapter_for(self.world.rabbit.broker, timeout=10)
        try:
            assert adapter.depth(DlqAddress(name=queue)) == self.delivered[queue]
        finally:
            adapter.close()

    # -- the invariants (read in a few queries: they run after every step) -------------------

    @invariant()
    def invariants_hold(self) -> None:
        plans = {p.pk: p for p in ReplayPlan.objects.filter(pk__in=[m.pk for m in self.plans])}
        approvals = list(
            PlanApproval.objects.filter(plan__in=plans, decision=ApprovalDecision.APPROVE).values(
                "plan", "approver", "content_hash", "voided_at", "created_at"
            )
        )
        runs = list(ReplayRun.objects.filter(plan__in=plans).values("pk", "plan", "state", "plan_hash", "started_at"))
        self._moves_along_the_graph(plans, runs)
        self._approved_only_by_enough_others(plans, approvals)
        self._runs_only_of_approved_content(plans, approvals, runs)

    def _moves_along_the_graph(self, plans: dict[int, ReplayPlan], runs: list[dict[str, Any]]) -> None:
        """The database agrees with the model, and each change is an edge of the graph."""
        for model in self.plans:
            state, previous = plans[model.pk].state, self.seen_plans.get(model.pk, PlanState.DRAFT)
            assert state == model.state, f"plan {model.pk} is {state}; the model says {model.state}"
            assert state == previous or state in PLAN_EDGES[previous], f"plan {model.pk}: {previous} -> {state}"
            self.seen_plans[model.pk] = state
        assert {run["pk"] for run in runs} == set(self.run_models), "a run no successful start made"
        for run in runs:
            pk, state, previous = run["pk"], run["state"], self.seen_runs.get(run["pk"])
            assert state == self.run_models[pk].state, f"run {pk} is {state}; the model says {self.run_models[pk]}"
            assert state == previous or state in RUN_STEP_EDGES.get(previous, ()), f"run {pk}: {previous} -> {state}"
            self.seen_runs[pk] = state

    def _approved_only_by_enough_others(self, plans: dict[int, ReplayPlan], approvals: list[dict[str, Any]]) -> None:
        """Invariant 7: never an approval by the author; an approved plan holds enough valid
        approvals (not voided, not expired) of its current content hash."""
        fresh_after = timezone.now() - timedelta(seconds=django_settings.RECOVERY_APPROVAL_TTL)
        for model in self.plans:
            plan = plans[model.pk]
            mine = [a for a in approvals if a["plan"] == plan.pk]
            assert all(a["approver"] != plan.author_id for a in mine), "the author approved their own plan"
            valid = {
                self.names[a["approver"]]
                for a in mine
                if a["voided_at"] is None and a["content_hash"] == plan.content_hash and a["created_at"] >= fresh_after
            }
            assert valid == model.approvers, f"plan {plan.pk}: valid approvals by {valid}, the model says {model}"
            if plan.state == PlanState.APPROVED:
                assert plan.content_hash == selectors.plan_content_hash(plan), "approved content changed"
                assert len(valid) >= plan.required_approvals

    def _runs_only_of_approved_content(
        self, plans: dict[int, ReplayPlan], approvals: list[dict[str, Any]], runs: list[dict[str, Any]]
    ) -> None:
        """At most one active run per plan; each run's plan_hash is a content hash that enough
        approvers other than the author approved before the run started."""
        active = Counter(run["plan"] for run in runs if run["state"] in RUN_ACTIVE)
        assert all(n <= 1 for n in active.values()), f"several active runs: {active}"
        for run in runs:
            plan = plans[run["plan"]]
            earlier = [a for a in approvals if a["plan"] == plan.pk and a["created_at"] <= run["started_at"]]
            approvers = {a["approver"] for a in earlier if a["content_hash"] == run["plan_hash"]} - {plan.author_id}
            assert run["plan_hash"] and len(approvers) >= plan.required_approvals, f"run {run['pk']} was not approved"


def test_plan_and_run_transitions_keep_the_invariants(rabbit: RabbitHarness, test_redis: Any) -> None:
    PlanLifecycle.world = World(
        # no passwords: nobody signs in
        users={name: UserFactory(password=None, roles=roles) for name, roles in PEOPLE.items()},
        rabbit=rabbit,
        source=BrokerFactory(),
    )
    run_state_machine_as_test(
        PlanLifecycle,
        settings=settings(
            max_examples=25,
            stateful_step_count=15,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_whoever_changed_a_plan_cannot_approve_that_version() -> None:
    """Invariant 7 in spirit: the content an approver approves was shaped by someone else. Here
    the author drafts; a second planner who is also an approver changes the target, submits and
    approves; the plan must not become approved on that one person's word."""
    author = UserFactory(password=None, roles=PEOPLE["author"])
    editor = UserFactory(password=None, roles=(Role.OPERATOR, Role.APPROVER))
    dlq = DeadLetterQueueFactory()
    DeadLetterFactory(dlq=dlq, disposition=Disposition.REPLAY)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="first")
    plan = services.plan_update(
        actor=author, plan=plan, changes={"target_broker": dlq.broker, "target_address": "orders"}
    )
    plan = services.plan_update(actor=editor, plan=plan, changes={"target_address": "somewhere-else"})
    plan = services.plan_submit(actor=editor, plan=plan)
    with pytest.raises(NotPermitted):
        services.plan_approve(actor=editor, plan=plan)
    assert ReplayPlan.objects.get(pk=plan.pk).state == PlanState.SUBMITTED
