"""The policy in force, swapped atomically on reload (SIGHUP).

A request reads ``store.current`` once and decides with that object only, so a
reload in the middle of a multi-GPU request never mixes two policies.
"""

from __future__ import annotations

import logging
import threading

from zeusd.policy.model import Policy
from zeusd.policy.load import is_builtin, load_policy
from zeusd.policy.model import PolicyError

log = logging.getLogger(__name__)


class PolicyStore:
    """Holds the policy in force; ``reload`` validates a new one before swapping it in."""

    def __init__(self, path: str, *, check_owner: bool = True, auditor=None):
        self._path = path
        self._check_owner = check_owner
        self._auditor = auditor
        self._reload_lock = threading.Lock()
        self._policy = load_policy(path, check_owner=check_owner)  # PolicyError stops start-up
        self._announce("policy %s in force (%s)", "loaded")

    @property
    def current(self) -> Policy:
        # A single attribute read is atomic; the object it returns never changes.
        return self._policy

    @property
    def path(self) -> str:
        return self._path

    def reload(self) -> bool:
        """Load the file again; on success swap it in, on failure keep the old one."""
        with self._reload_lock:
            try:
                # A file that vanished is an error, never a silent switch to the
                # built-in policy: the built-in one applies only when absent at start.
                policy = load_policy(self._path, check_owner=self._check_owner,
                                     missing_ok=False)
            except PolicyError as error:
                self._reject(error)
                return False
            except Exception as error:  # noqa: BLE001 - a reload must never kill the daemon
                log.exception("unexpected error reloading %s", self._path)
                self._reject(error)
                return False
            self._policy = policy
            self._announce("policy %s in force (%s)", "reloaded")
            return True

    def _announce(self, template: str, what: str) -> None:
        policy = self._policy
        log.info(template, policy.hash, policy.source)
        if is_builtin(policy):
            log.warning("%s does not exist: only root may change GPU settings", self._path)
        self._event(f"policy {policy.hash} in force ({policy.source}, {what})",
                    event="policy", policy_hash=policy.hash, policy_event=what,
                    policy_source=policy.source, priority=6)

    def _reject(self, error: Exception) -> None:
        kept = self._policy.hash
        log.error("policy reload rejected, policy %s stays in force: %s", kept, error)
        self._event(f"policy reload rejected, policy {kept} stays in force: {error}",
                    event="policy", policy_hash=kept, policy_event="rejected",
                    priority=3)

    def _event(self, message: str, **fields) -> None:
        if self._auditor is None:
            return
        try:
            self._auditor.event(message, **fields)
        except Exception:  # noqa: BLE001 - auditing must not break the policy
            log.exception("audit event failed")
