"""Wiring the demo services to a coordinator and its bus: who handles and hears what."""

from __future__ import annotations

from ..ipc import CommBusCoordinator
from .messages import ServiceHealthChanged
from .services import (
    Audit,
    Behaviour,
    Billing,
    Embedder,
    FlowService,
    Indexer,
    Memory,
    Notifications,
    Planner,
    ServiceBase,
    Summarizer,
)

__all__ = ["DemoServices"]


class DemoServices:
    """Builds every service and wires it to the coordinator and its bus."""

    def __init__(self, env: Behaviour, coordinator: CommBusCoordinator) -> None:
        self.coordinator = coordinator
        bus = coordinator.commbus
        self.flow = FlowService(env, coordinator)
        self.planner = Planner(env, coordinator)
        self.embedder = Embedder(env, coordinator)
        self.summarizer = Summarizer(env, coordinator)
        self.indexer = Indexer(env, coordinator)
        self.memory = Memory(env, coordinator)
        self.billing = Billing(env, coordinator)
        self.notifications = Notifications(env, coordinator)
        self.audit = Audit(env, coordinator)
        self.all: list[ServiceBase] = [
            self.flow, self.planner, self.embedder, self.summarizer, self.indexer,
            self.memory, self.billing, self.notifications, self.audit,
        ]  # fmt: skip
        for service in self.all:
            coordinator.register_service(service.descriptor)
            if service.methods:
                coordinator.register_handler(service.descriptor.name, service.handle)
        bus.register_handler("GetSessionState", self.memory.session_state)
        bus.register_handler("SearchMemory", self.memory.search)
        bus.register_handler("InvalidateCache", self.memory.invalidate)
        bus.register_handler("GetQuota", self.billing.quota)
        bus.register_handler("RecordUsage", self.billing.record_usage)
        bus.register_handler("SendNotification", self.notifications.send_notification)
        bus.subscribe("MemoryStored", self.indexer.on_memory_stored)
        bus.subscribe("MemoryStored", self.audit.on_event)
        bus.subscribe("MemoryStored", self.notifications.on_event)
        bus.subscribe("PipelineCompleted", self.audit.on_event)
        bus.subscribe("PipelineCompleted", self.billing.on_pipeline_completed)
        bus.subscribe("PipelineCompleted", self.notifications.on_event)
        bus.subscribe("ServiceHealthChanged", self.audit.on_event)
        bus.subscribe("ServiceHealthChanged", self.notifications.on_event)
        bus.subscribe("UserActivity", self.audit.on_event)

    async def set_health(self, service: str, healthy: bool) -> None:
        """Flip a service's health and announce it on the bus."""
        if self.coordinator.set_service_health(service, healthy):
            await self.coordinator.commbus.publish(ServiceHealthChanged(service, healthy))
