"""`manage.py drill define | list | show | approve | run-now | set-schedule`: recovery drills from
the shell, through the same services as the console (issue 7).

Four eyes is about people: ``define`` and ``approve`` act as a named user (``--as USERNAME``),
whose roles the services check; the other actions default to the shell user as a system actor.

    manage.py drill define orders-sqs --broker local-sqs --schedule "*/30 * * * *" --as alice
    manage.py drill approve orders-sqs --as bob
    manage.py drill run-now orders-sqs
    manage.py drill set-schedule orders-sqs "0 * * * *" --as alice
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from recovery.drills.selectors import drill_approval_problem, drill_history, drill_trend
from recovery.drills.services import drill_approve, drill_create, drill_run_now, drill_update
from recovery.errors import RecoveryError
from recovery.management.commands.broker import cli_actor
from recovery.models import Broker, Drill

# --option -> the drill field it sets (define only; None: not given)
DEFINE_OPTIONS = {
    "work_queue": "work_queue", "dlq": "dead_letter_queue", "messages": "message_count",
    "transient": "transient_count", "poison": "poison_count", "rate": "rate_per_second", "batch": "batch_size",
    "workers": "workers", "timeout": "timeout_seconds", "max_capture": "max_capture_seconds",
    "max_recover": "max_recover_seconds", "webhook": "alert_webhook_url", "description": "description",
    "reason": "non_drill_queue_reason",
}  # fmt: skip


class Command(BaseCommand):
    help = "Define, list, show, approve, run or reschedule recovery drills."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("list")
        show = sub.add_parser("show")
        show.add_argument("name")
        define = sub.add_parser("define", help="define a drill (author: --as USERNAME, an operator)")
        define.add_argument("name")
        define.add_argument("--broker", required=True)
        define.add_argument("--schedule", required=True, help='cron expression, UTC, e.g. "*/30 * * * *"')
        define.add_argument("--as", dest="as_user", required=True, help="the author's username")
        define.add_argument("--work-queue", help="default: drill-NAME-work")
        define.add_argument("--dlq", help="default: drill-NAME-dlq")
        for option in ("messages", "transient", "poison", "rate", "batch", "workers", "timeout", "max_capture",
                       "max_recover"):  # fmt: skip
            define.add_argument(f"--{option.replace('_', '-')}", type=int)
        define.add_argument("--webhook", help="alert webhook URL (JSON POST when a run fails)")
        define.add_argument("--description")
        define.add_argument("--verifications", help="JSON list of replay verification steps")
        define.add_argument("--stop-conditions", help="JSON list of replay stop conditions")
        define.add_argument("--consumer-stays-broken", action="store_true", help="replayed copies fail too")
        define.add_argument("--disabled", action="store_true", help="define it with its schedule paused")
        define.add_argument("--allow-non-drill-queue", action="store_true", help="admins only, with --reason")
        define.add_argument("--reason", help="why the drill may use a queue that is not a drill queue")
        approve = sub.add_parser("approve", help="approve a drill (--as USERNAME, an approver, not its author)")
        approve.add_argument("name")
        approve.add_argument("--as", dest="as_user", required=True)
        approve.add_argument("--comment", default="")
        run_now = sub.add_parser("run-now", help="start a run now (enqueued for a worker)")
        run_now.add_argument("name")
        run_now.add_argument("--as", dest="as_user")
        schedule = sub.add_parser("set-schedule", help="change the cron schedule, or pause/resume it")
        schedule.add_argument("name")
        schedule.add_argument("schedule", nargs="?")
        schedule.add_argument("--enable", action="store_true")
        schedule.add_argument("--disable", action="store_true")
        schedule.add_argument("--as", dest="as_user")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"].replace("-", "_")
        try:
            getattr(self, f"_{action}")(options)
        except RecoveryError as exc:
            raise CommandError(str(exc)) from None

    # -- helpers -------------------------------------------------------------------------------

    def _actor(self, options: dict[str, Any]) -> Any:
        username = options.get("as_user")
        if not username:
            return cli_actor()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user named {username!r}")
        return user

    def _drill(self, name: str) -> Drill:
        drill = Drill.objects.select_related("broker", "author").filter(name=name).first()
        if drill is None:
            raise CommandError(f"no drill named {name!r} (manage.py drill list)")
        return drill

    def _json(self, options: dict[str, Any], key: str) -> Any:
        try:
            return json.loads(options[key])
        except ValueError as exc:
            raise CommandError(f"--{key.replace('_', '-')} is not JSON: {exc}") from None

    # -- actions -------------------------------------------------------------------------------

    def _list(self, options: dict[str, Any]) -> None:
        for drill in Drill.objects.select_related("broker").order_by("name"):
            approved = "approved" if drill_approval_problem(drill)[0] else "NOT APPROVED"
            state = drill.schedule if drill.enabled else f"{drill.schedule} (paused)"
            last = drill.last_outcome or "never run"
            self.stdout.write(f"{drill.name}\t{drill.broker.name}\t{state}\t{approved}\tlast: {last}")

    def _show(self, options: dict[str, Any]) -> None:
        drill = self._drill(options["name"])
        approval, problem = drill_approval_problem(drill)
        trend = drill_trend(drill)
        write = self.stdout.write
        write(f"drill {drill.name} on {drill.broker.name}: {drill.work_queue} -> {drill.dead_letter_queue}")
        write(f"  scenario: {drill.message_count} messages, {drill.transient_count} transient, "
              f"{drill.poison_count} poison{'' if drill.consumer_recovers else ', consumer stays broken'}")  # fmt: skip
        write(f"  schedule: {drill.schedule}{'' if drill.enabled else ' (paused)'}; next run {drill.next_run_at}")
        write(f"  replay: {drill.rate_per_second}/s, batch {drill.batch_size}, {drill.workers} worker(s)")
        approved = f"approved by {approval.approver.get_username()}" if approval else f"NOT APPROVED: {problem}"
        write(f"  author: {drill.author.get_username()}; {approved}")
        rate = "-" if trend.pass_rate is None else f"{trend.pass_rate:.0%}"
        write(f"  last {trend.runs} finished run(s): pass rate {rate}, median time to recover "
              f"{trend.median_time_to_recover or '-'} s")  # fmt: skip
        for run in drill_history(drill, limit=10):
            step = f" at {run.failed_step}" if run.failed_step else ""
            write(f"  run {run.pk} {run.created_at:%Y-%m-%d %H:%M} {run.trigger} {run.status}{step}"
                  f" lost={run.lost} recover={run.time_to_recover_seconds}s {run.reason[:120]}")  # fmt: skip

    def _define(self, options: dict[str, Any]) -> None:
        broker = Broker.objects.filter(name=options["broker"]).first()
        if broker is None:
            raise CommandError(f"no broker named {options['broker']!r} (manage.py broker list)")
        data: dict[str, Any] = {"name": options["name"], "broker": broker, "schedule": options["schedule"]}
        data.update({field: options[opt] for opt, field in DEFINE_OPTIONS.items() if options.get(opt) is not None})
        for key in ("verifications", "stop_conditions"):
            if options.get(key):
                data[key] = self._json(options, key)
        data["consumer_recovers"] = not options["consumer_stays_broken"]
        data["enabled"] = not options["disabled"]
        data["allow_non_drill_queue"] = options["allow_non_drill_queue"]
        drill = drill_create(actor=self._actor(options), data=data)
        self.stdout.write(self.style.SUCCESS(
            f"drill {drill.name} defined: {drill.work_queue} -> {drill.dead_letter_queue} on {broker.name}, "
            f"{drill.schedule}; an approver other than its author must approve it before it runs"
        ))  # fmt: skip

    def _approve(self, options: dict[str, Any]) -> None:
        drill = self._drill(options["name"])
        drill_approve(actor=self._actor(options), drill=drill, comment=options["comment"])
        self.stdout.write(self.style.SUCCESS(f"drill {drill.name} approved"))

    def _run_now(self, options: dict[str, Any]) -> None:
        drill = self._drill(options["name"])
        run = drill_run_now(actor=self._actor(options), drill=drill)
        self.stdout.write(self.style.SUCCESS(f"run {run.pk} of drill {drill.name} queued (a worker runs it)"))

    def _set_schedule(self, options: dict[str, Any]) -> None:
        drill = self._drill(options["name"])
        if options["enable"] and options["disable"]:
            raise CommandError("--enable and --disable exclude each other")
        changes: dict[str, Any] = {}
        if options["schedule"]:
            changes["schedule"] = options["schedule"]
        if options["enable"] or options["disable"]:
            changes["enabled"] = bool(options["enable"])
        if not changes:
            raise CommandError("give a cron expression, --enable or --disable")
        drill = drill_update(actor=self._actor(options), drill=drill, changes=changes)
        voided = "schedule" in changes and not drill_approval_problem(drill)[0]
        self.stdout.write(self.style.SUCCESS(
            f"drill {drill.name}: {drill.schedule}{'' if drill.enabled else ' (paused)'}, next run {drill.next_run_at}"
            + ("; its approval is void: an approver must approve it again" if voided else "")
        ))  # fmt: skip
