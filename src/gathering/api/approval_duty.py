"""The approvals duty: one instance (the holder of an advisory lock) expires overdue approvals
and takes up answered ones no instance has gone on with yet (see `ApprovalResumer`)."""

from __future__ import annotations

from gathering.agents.approval_resumer import Admit, ApprovalResumer
from gathering.api.lifecycle import Component, Health
from gathering.api.state import AppState
from gathering.db.locks import LockKey, SingletonDuty

APPROVALS_LOCK = LockKey("tools", "approvals")


class ApprovalDutyComponent(Component):
    """Runs `ApprovalResumer.run_once` every `interval` seconds on one instance."""

    name = "approvals"

    def __init__(
        self, state: AppState, *, admit: Admit | None = None, interval: float = 2.0
    ) -> None:
        self.state = state
        self.admit = admit  # a resumed turn counts toward its owner's running turns
        self.interval = interval
        self.duty: SingletonDuty | None = None
        self.resumer: ApprovalResumer | None = None

    async def start(self) -> None:
        db = await self.state.database()
        self.resumer = ApprovalResumer(db, await self.state.event_bus(), admit=self.admit)
        resumer = self.resumer

        async def round_() -> None:
            await resumer.run_once()

        self.duty = SingletonDuty(db, APPROVALS_LOCK, round_, interval=self.interval)
        await self.duty.start()

    async def stop(self) -> None:
        if self.duty is not None:
            await self.duty.stop()
        if self.resumer is not None:
            await self.resumer.stop()

    async def health(self) -> Health:
        if self.duty is None:
            return Health(True, "not started")
        ok, detail = self.duty.health()
        return Health(ok, detail)
