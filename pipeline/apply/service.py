"""What ``plan``, ``apply`` and ``destroy`` do, apart from how a command asks and prints.

``Deployer`` owns the rules that keep the state safe: one operation at a time (the state lock),
every step journaled, a saved plan applied only when it equals the plan made now, the registry
told which versions serve (they cannot be deleted), every apply and destroy recorded in the
ledger, and built environments nothing serves collected. It reports through a ``Reporter``
(callbacks), so the CLI, a test or another front end decides what to show and whether to go on.

Targets that other machines share (a cluster namespace) bring their own lock (``Target.lock``):
an apply or destroy holds it beside the state lock, so two clones with separate state, or two
projects in one namespace, never change it at once. The service only knows the protocol.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.apply.executor import Executor, Outcome
from pipeline.apply.journal import Journal
from pipeline.apply.observe import observe, record_usage, served, spec_digest, used_targets
from pipeline.apply.state_store import LocalStateStore, StateStore
from pipeline.errors import LockError, RolloutFailed, StalePlanError
from pipeline.lockinfo import describe_holder, mismatch_message
from pipeline.plan import Plan, reconcile
from pipeline.spec.model import Spec
from pipeline.targets.base import Target, TargetLock


def _ignore(*args: Any) -> None:
    return None


def _holder(lock: Any) -> dict | None:
    try:
        return lock.holder()
    except LockError:
        return None


@dataclass
class Reporter:
    """How the service speaks to its caller; every callback is optional."""

    notice: Callable[[str], None] = _ignore  # a sentence worth showing (lock taken over, data kept)
    plan: Callable[[Plan, bool], None] = _ignore  # the plan about to run (True: a saved plan)
    confirm: Callable[[Plan], None] = _ignore  # raise to cancel before anything changes
    # (step, "start"|"done"|"failed"|"retry"|"rollout", detail); "rollout": a step, check or decision of a rollout
    progress: Callable[[Any, str, str], None] = _ignore


@dataclass
class Applied:
    plan: Plan
    outcome: Outcome | None  # None: nothing to do


class Deployer:
    def __init__(self, spec: Spec, spec_file: Path, registry, targets: Mapping[str, Target], builder,
                 state_dir: Path, lineage: Callable[[], Mapping[str, Any]] = dict, store: StateStore | None = None):
        self.spec, self.spec_file, self.registry = spec, spec_file, registry
        self.targets, self.builder, self.state_dir = targets, builder, state_dir
        self.lineage = lineage  # the commit and author of the desired state (read only when recorded)
        self.store = store or LocalStateStore(state_dir, spec.registry_path())  # the lock and the ledger

    # -- locks -----------------------------------------------------------------------------

    def _acting_on(self, targets: tuple[str, ...] = ()) -> list[str]:
        """The targets an apply may change: those of the endpoints a ``--target`` filter names (all used
        targets without a filter, or when it names an endpoint the file no longer has)."""
        used = used_targets(self.spec) & set(self.targets)
        named = {address.split("/", 1)[0] for address in targets}
        if named and named <= set(self.spec.endpoints):
            used &= {self.spec.endpoints[name].target for name in named}
        return sorted(used)

    def _target_locks(self, operation: str, notice: Callable[[str], None],
                      targets: tuple[str, ...] = ()) -> list[TargetLock]:
        """One lock per scope (targets in one namespace share a Lease), in a fixed order: two applies
        wanting the same two never hold one each."""
        locks: dict[str, TargetLock] = {}
        for name in self._acting_on(targets):
            lock = self.targets[name].lock(operation, notice)
            if lock is not None:
                locks.setdefault(lock.scope, lock)
        return [locks[scope] for scope in sorted(locks)]

    @contextmanager
    def _locked(self, operation: str, timeout: float, notice: Callable[[str], None],
                targets: tuple[str, ...] = ()) -> Iterator[None]:
        """The state lock, then every target lock; all released at the end, whatever happens."""
        with ExitStack() as held:
            held.enter_context(self.store.lock(operation, notice=notice).acquire(timeout))
            for lock in self._target_locks(operation, notice, targets):
                held.enter_context(lock.acquire(timeout))
            yield

    def force_unlock(self, lock_id: str) -> tuple[str, dict]:
        """Release the lock with this id wherever it is (the state lock, a target's lock); returns what
        was released and its holder. Only the exact id releases anything."""
        state = self.store.lock()
        candidates: list[tuple[str, Any]] = [("the state lock", state)]
        candidates += [(f"the lock of {lock.scope}", lock) for lock in self._target_locks("force-unlock", _ignore)]
        problems = []
        for what, lock in candidates:
            try:
                holder = lock.holder()
            except LockError as error:
                problems.append(str(error))
                continue
            if holder and holder.get("id") == lock_id:
                return what, lock.force_unlock(lock_id)
        held = [(what, holder) for what, lock in candidates if (holder := _holder(lock)) is not None]
        if len(held) == 1:
            raise LockError(f"{mismatch_message(lock_id, held[0][1])} ({held[0][0]})")
        found = "; ".join(f"{what} by {describe_holder(holder)}" for what, holder in held)
        raise LockError((f"lock id '{lock_id}' matches no holder: {found}" if held else "the state is not locked")
                        + "".join(f"; {problem}" for problem in problems))

    # -- plan ------------------------------------------------------------------------------

    def plan(self, prune: bool | None = None, targets: tuple[str, ...] = ()) -> Plan:
        """Observe everything and reconcile it with the spec (nothing is changed)."""
        actual = observe(self.spec, self.registry, self.targets, self.builder)
        return reconcile(self.spec, actual, prune=prune, targets=set(targets) or None,
                         spec_digest=spec_digest(self.spec, self.spec_file))

    def _check_saved(self, saved: Plan, current: Plan, name: str) -> None:
        """A saved plan runs only while it is exactly what mlops would plan now."""
        if saved.spec_digest != current.spec_digest:
            raise StalePlanError(f"{name} was made for a different {self.spec.file}; it changed since. "
                                 "Run mlops plan again")
        if saved.state_digest != current.state_digest:
            raise StalePlanError(f"{name} is stale: the registry or the deployments changed since it was made. "
                                 "Run mlops plan again")
        if json.loads(saved.to_json())["steps"] != json.loads(current.to_json())["steps"]:
            raise StalePlanError(f"{name} holds other steps than mlops plans for this file and state (was it "
                                 "edited?); only a plan made by mlops plan is applied. Run mlops plan again")

    # -- apply -----------------------------------------------------------------------------

    def apply(self, saved: Plan | None = None, *, saved_name: str = "the saved plan", prune: bool | None = None,
              targets: tuple[str, ...] = (), lock_timeout: float = 30.0,
              report: Reporter | None = None) -> Applied:
        """Plan under the lock (or check a saved plan), then carry it out step by step."""
        report = report or Reporter()
        scope = saved.target_filter if saved is not None else targets
        with self._locked("apply", lock_timeout, report.notice, scope):
            interrupted = Journal.interrupted(self.state_dir / "journal")  # under the lock: no apply runs now
            if interrupted:
                report.notice(f"A previous apply ({interrupted['apply']}) was interrupted during "
                              f"{interrupted['step'] or 'start-up'}; planning again from the observed state.")
            if saved is not None:  # plan again exactly as the saved plan was made
                prune, targets = saved.prune or None, saved.target_filter
            current = self.plan(prune, targets)
            if saved is not None:
                self._check_saved(saved, current, saved_name)
            report.plan(current, saved is not None)
            if not current.has_changes:
                record_usage(self.registry, served(self.spec, self.targets))  # settle what a crash protected
                return Applied(current, None)
            if saved is None:
                report.confirm(current)
            return Applied(current, self._execute(current, report))

    def _execute(self, plan: Plan, report: Reporter) -> Outcome:
        journal = Journal(self.state_dir / "journal", uuid.uuid4().hex[:12])
        journal.record("begin", plan=json.loads(plan.to_json())["summary"])
        lineage = dict(self.lineage())
        outcome = Executor(self.spec, self.registry, self.targets, self.builder, journal, report.progress,
                           lineage).run(plan.steps)
        serving = served(self.spec, self.targets)
        record_usage(self.registry, serving)
        if self.builder is not None and not outcome.error:
            self.builder.collect_garbage(self.spec, serving)
        rolled_back = isinstance(outcome.error, RolloutFailed)
        self.store.ledger().record(
            commit=lineage.get("commit"), author=lineage.get("author"),
            summary=plan.summary() + (f" {outcome.error}" if rolled_back else ""),
            outcome="rolled back" if rolled_back else "failed" if outcome.error else "ok", served=serving,
            plan_json=plan.to_json())
        journal.close("failed" if outcome.error else "ok")
        return outcome

    # -- destroy ---------------------------------------------------------------------------

    def managed_endpoints(self) -> list[tuple[str, str]]:
        """(target, endpoint) for every endpoint of the file on a target this mlops can reach."""
        return [(target, name) for target in sorted(used_targets(self.spec) & set(self.targets))
                for name in sorted(self.spec.endpoints) if self.spec.endpoints[name].target == target]

    def destroy(self, *, purge_data: bool = False, lock_timeout: float = 30.0,
                report: Reporter | None = None) -> list[str]:
        """Stop every endpoint the file manages (models stay registered); returns their names."""
        report = report or Reporter()
        names = self.managed_endpoints()
        data = self.state_dir / "data"
        with self._locked("destroy", lock_timeout, report.notice):
            for target, endpoint in names:
                self.targets[target].delete_endpoint(endpoint)
                report.notice(f"  - deleted endpoint {endpoint}")
                collected = data / endpoint
                if collected.exists() and purge_data:
                    shutil.rmtree(collected)
                    report.notice(f"  - deleted the data it collected ({collected})")
                elif collected.exists():
                    report.notice(f"    kept the data it collected in {collected} (mlops monitor {endpoint} "
                                  "reads it; --purge-data deletes it)")
            serving = served(self.spec, self.targets)
            record_usage(self.registry, serving)
            lineage = dict(self.lineage())
            self.store.ledger().record(
                commit=lineage.get("commit"), author=lineage.get("author"),
                summary="Destroyed endpoints: " + ", ".join(e for _, e in names), outcome="destroyed",
                served=serving, acted_on=tuple(e for _, e in names))
        return [e for _, e in names]
