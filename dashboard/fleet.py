"""Fleet discovery: from the endpoints the user gave, find the other processes of the fleet.

Each endpoint that advertises itself lists the processes it heard in service heartbeats
(``GET /api/peers``, see ``docs/endpoint.md``). :class:`Fleet` asks one endpoint per refresh
for that list (the given ones first, then those it found; the first that answers wins),
remembers every process it heard of, and says which endpoints to poll.

An advertised URL comes from the broker, so it is untrusted:

- it is followed only if the :class:`AllowList` admits it: by default the exact origins
  (scheme, host and port) of the endpoints the user gave, plus the ``scheme://host[:port]``
  or ``scheme://*.domain[:port]`` rules of ``$JEEVES_FLEET_ALLOW``; a URL it does not admit
  is never fetched;
- the bearer token goes only to an origin the configuration names exactly
  (:meth:`AllowList.trusts`): a given endpoint, or a ``$JEEVES_FLEET_ALLOW`` rule with a
  host and an explicit port. A URL admitted only by a broader rule (no port, or
  ``*.domain``) is fetched without the token;
- redirects are never followed (:func:`dashboard.net.get`; :mod:`.peers` fetches,
  :mod:`.allow` decides), so an admitted endpoint cannot
  bounce the token elsewhere;
- a ``/api/peers`` answer is read up to :data:`MAX_BYTES` within ``timeout`` seconds in
  total (one discovery at most ``deadline`` seconds, with no lock held meanwhile); a longer
  answer is not an error: the processes listed in its first :data:`MAX_BYTES` are used
  (an endpoint lists itself and its live peers first). At most :data:`MAX_ENTRIES` entries
  are looked at; at most ``max_follow`` discovered endpoints are polled and at most
  :data:`MAX_PROCESSES` processes remembered.

A process whose endpoint stops answering (or whose heartbeats stop) is shown down with the
last data received. It is forgotten once no peer list has called it alive for
``forget_after`` seconds (by the dashboard's clock), or sooner (the one alive longest ago
first) when the table is full (:data:`MAX_PROCESSES`) and a new live process needs the
room: a restarted process comes back under a new id.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from jeeves_control_tower.ipc.adapters.peers import MAX_NAME, MAX_SERVICES, valid_endpoint

from .allow import ALLOW_ENV, AllowList
from .peers import MAX_BYTES, PeersError, fetch_peers

__all__ = [
    "ALLOW_ENV",
    "MAX_BYTES",
    "AllowList",
    "Fleet",
    "PeersError",
    "Process",
    "fetch_peers",
]

MAX_ENTRIES = 256
MAX_PROCESSES = 256
MAX_FOLLOW = 32
FORGET_AFTER = 900.0
DISCOVERY_DEADLINE = 4.0


# ---------------------------------------------------------------------- the fleet


@dataclass
class Process:
    """One process of the fleet as last heard of."""

    process: str
    endpoint: str | None = None
    services: list[str] = field(default_factory=list)
    last_heartbeat: float | None = None
    alive: bool = True
    followed: bool = False
    note: str = ""
    alive_at: float = 0.0  # when a peer list last called it alive (the dashboard's clock)


Fetch = Callable[[str, str, float], Any]


class _State(Protocol):
    """What :meth:`Fleet.rows` reads of a ``source.EndpointState``."""

    up: bool | None
    last_ok: float | None
    services: dict[str, Any]


class Fleet:
    """Discovery state for one set of given endpoints (``seeds``); see the module docstring.

    Thread-safe: one instance is shared by every session of a Streamlit server, and
    :meth:`discover` asks for peers at most once per ``interval`` whoever calls it. The
    lock is never held during network I/O: the answers are fetched outside it (each within
    ``timeout`` seconds, all within ``deadline``) and merged under it."""

    def __init__(
        self,
        seeds: list[str],
        allow: AllowList,
        *,
        token: str = "",
        timeout: float = 2.0,
        deadline: float = DISCOVERY_DEADLINE,
        max_follow: int = MAX_FOLLOW,
        forget_after: float = FORGET_AFTER,
        fetch: Fetch = fetch_peers,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seeds = list(seeds)
        self.allow = allow
        self.token = token
        self.timeout = timeout
        self.deadline = deadline
        self.max_follow = max_follow
        self.forget_after = forget_after
        self._fetch = fetch
        self._clock = clock
        self.processes: dict[str, Process] = {}  # by process id
        self.seed_process: dict[str, str] = {}  # seed URL -> its process id
        self.error = ""
        self.notice = ""  # set when an answer was cut and only its first entries were used
        self._lock = threading.RLock()
        self._asked_at = -math.inf
        self._asking = False

    def endpoints(self) -> list[str]:
        """The endpoints to poll: the seeds, then the followed discovered ones."""
        with self._lock:
            found = [p.endpoint for p in self.processes.values() if p.followed and p.endpoint]
        return self.seeds + [u for u in dict.fromkeys(found) if u not in self.seeds]

    def discover(self, down: Collection[str] = (), interval: float = 0.0) -> bool:
        """Ask the endpoints (except those in ``down``) for their peers until one answers;
        ``True`` if one did. Within ``interval`` seconds of the last time it asked (or
        while another caller is asking), it asks nobody and tells whether the last time
        succeeded. Returns within ``deadline`` seconds: each request gets ``timeout`` or
        what is left of the deadline, whichever is less."""
        with self._lock:
            if self._asking or self._clock() - self._asked_at < interval:
                return not self.error
            self._asked_at = self._clock()
            self._asking = True
            self._forget(self._clock() - self.forget_after)
            candidates = [url for url in self.endpoints() if url not in down]
        try:
            url, doc, errors = self._ask(candidates)
            with self._lock:
                if doc is not None:
                    self._merge(url, doc)
                    self.error = ""
                    self.notice = (
                        f"The peer list of {url} was longer than {MAX_BYTES // 1024} KiB:"
                        " the processes it lists first are shown."
                        if doc.get("truncated") is True
                        else ""
                    )
                    return True
                self.error = "; ".join(errors[:3])
                return False
        finally:
            with self._lock:
                self._asking = False

    def _ask(self, candidates: list[str]) -> tuple[str, Any, list[str]]:
        """``(url, answer, errors)`` from the first candidate that answers (``answer`` is
        ``None`` if none did), outside the lock, the token only where it is trusted."""
        errors: list[str] = []
        ends_at = time.monotonic() + self.deadline
        for url in candidates:
            left = min(self.timeout, ends_at - time.monotonic())
            if left <= 0:
                errors.append(f"{url}: not asked, discovery ran out of time")
                break
            token = self.token if self.allow.trusts(url) else ""
            try:
                answer = self._fetch(url, token, left)
            except PeersError as exc:
                errors.append(f"{url}: {exc}")
                continue
            if isinstance(answer, dict) and isinstance(answer.get("peers"), list):
                return url, answer, errors
            errors.append(f"{url}: unexpected /api/peers shape")
        return "", None, errors

    def _merge(self, source: str, doc: Any) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("peers"), list):
            raise PeersError("unexpected /api/peers shape")
        me = doc.get("process")
        if isinstance(me, str) and me and source in self.seeds:
            self.seed_process[source] = me[:MAX_NAME]
        for entry in doc["peers"][:MAX_ENTRIES]:
            if isinstance(entry, dict) and isinstance(entry.get("process"), str):
                self._learn(entry)

    def _forget(self, before: float) -> None:
        for pid in [p for p, proc in self.processes.items() if proc.alive_at < before]:
            del self.processes[pid]

    def _learn(self, entry: dict[str, Any]) -> None:
        pid = entry["process"][:MAX_NAME]
        known = self.processes.get(pid)
        if known is None:
            if len(self.processes) >= MAX_PROCESSES:
                dead = [p for p in self.processes.values() if not p.alive]
                if not dead or entry.get("alive") is not True:
                    return  # room is made only for a live process, by a dead one
                del self.processes[min(dead, key=lambda p: p.alive_at).process]
            known = self.processes[pid] = Process(pid, alive_at=self._clock())
        endpoint = valid_endpoint(entry.get("endpoint"))
        if endpoint is not None:
            known.endpoint = endpoint
        services = entry.get("services")
        if isinstance(services, list):
            known.services = [s[:MAX_NAME] for s in services[:MAX_SERVICES] if isinstance(s, str)]
        beat = entry.get("last_heartbeat")
        if isinstance(beat, (int, float)) and not isinstance(beat, bool) and math.isfinite(beat):
            known.last_heartbeat = max(float(beat), known.last_heartbeat or 0.0)
        known.alive = entry.get("alive") is True
        if known.alive:
            known.alive_at = self._clock()
        self._decide(known)

    def _decide(self, process: Process) -> None:
        url = process.endpoint
        if process.process in self.seed_process.values():
            process.followed, process.note = False, ""  # a seed, maybe under another URL
        elif url is None:
            process.followed, process.note = False, "advertises no endpoint"
        elif url in self.seeds:
            process.followed, process.note = False, ""  # polled as a seed already
        elif not self.allow.allows(url):
            process.followed, process.note = False, "not followed: URL not allowed"
        elif not process.followed:
            followed = sum(1 for p in self.processes.values() if p.followed)
            if followed >= self.max_follow:
                process.note = f"not followed: {self.max_follow} endpoints followed already"
            else:
                process.followed, process.note = True, ""

    def rows(self, states: Mapping[str, _State]) -> list[dict[str, Any]]:
        """One row per process for the Processes table: ``process``, ``endpoint``,
        ``status`` (``up``/``down``/``connecting``/``unreachable``), ``last_seen`` (Unix
        seconds or ``None``), ``services`` (names) and ``note``. ``up``/``down`` come from
        the dashboard's own polls where it polls the endpoint, from heartbeats otherwise."""
        with self._lock:
            return self._rows(states)

    def _rows(self, states: Mapping[str, _State]) -> list[dict[str, Any]]:
        rows = []
        by_url = {p.endpoint: p for p in self.processes.values() if p.endpoint}
        seen: set[str] = set()
        for url in self.seeds:
            pid = self.seed_process.get(url)
            proc = self.processes.get(pid) if pid else by_url.get(url)
            if proc is not None:
                seen.add(proc.process)
            rows.append(self._row(url, proc, states.get(url)))
        for proc in self.processes.values():
            if proc.process not in seen:
                state = states.get(proc.endpoint or "") if proc.followed else None
                rows.append(self._row(proc.endpoint, proc, state))
        return rows

    @staticmethod
    def _row(url: str | None, proc: Process | None, state: _State | None) -> dict[str, Any]:
        services = list(proc.services) if proc is not None else []
        if not services and state is not None:
            listed = state.services.get("services")
            if isinstance(listed, list):
                names = (s.get("name") for s in listed if isinstance(s, dict))
                services = [n[:MAX_NAME] for n in names if isinstance(n, str)]
        last = [t for t in (proc and proc.last_heartbeat, state and state.last_ok) if t]
        note = proc.note if proc is not None else ""
        if state is not None:
            status = {None: "connecting", True: "up", False: "down"}[state.up]
            if state.up and proc is not None and not proc.alive:
                note = "endpoint answers, heartbeats stopped"
        else:
            status = "up" if proc is not None and proc.alive else "down"
        return {
            "process": proc.process if proc is not None else "",
            "endpoint": url or "",
            "status": status,
            "last_seen": max(last) if last else None,
            "services": services,
            "note": note,
        }
