"""Start-up, serving and shutdown of the daemon process."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import ServeConfig
from .operations import CPU_READ, GPU_CONTROL, METRICS

if TYPE_CHECKING:
    from .leases import LeaseBook
    from .service.discovery import Discovery
    from .service.gpu_control import GpuControl
    from .service.gpu_manager import GpuManager
    from .service.metrics import MetricsService
    from .service.reads import CpuReads, GpuReads
    from .service.streams import StreamHub

log = logging.getLogger(__name__)
# NVML calls that fail when the library or driver cannot start at all.
INIT_FUNCTIONS = ("nvmlInit", "nvmlDeviceGetCount_v2")


class StartupError(Exception):
    """Start-up cannot continue; the message tells the operator what to do."""


def _setup_logging(level: str) -> None:
    under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    fmt = "%(levelname)s %(name)s: %(message)s" if under_systemd else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)


def _check_privileges(config: ServeConfig) -> None:
    if config.gpu_backend != "nvml" or GPU_CONTROL not in config.enabled_groups:
        return
    from .devices.diagnose import has_cap_sys_admin  # NVML only: not on a simulated start

    if not has_cap_sys_admin():
        raise StartupError(
            "changing GPU settings through NVML needs root or CAP_SYS_ADMIN. Run zeusd as root "
            "(e.g. `sudo zeusd serve` or the systemd service), serve reads only with "
            "`--enable gpu-read,cpu-read`, or try it on `--gpu-backend simulated`.")


def _open_gpus(config: ServeConfig):
    from .devices.errors import NvmlError
    from .devices.loader import open_backend

    try:
        backend = open_backend(config.gpu_backend, config.simulated_gpus)
        devices = backend.devices()
        infos = [d.info() for d in devices]
    except NvmlError as exc:
        raise StartupError(_nvml_failure(config, exc)) from None
    except (ValueError, OSError) as exc:
        raise StartupError(f"cannot open the GPUs: {exc}") from None
    return backend, devices, infos


def _nvml_failure(config: ServeConfig, exc) -> str:
    """One line: what NVML said, the likely cause seen on this machine, and the fix."""
    if config.gpu_backend != "nvml" or exc.function not in INIT_FUNCTIONS:
        return f"cannot open the GPUs: {exc.message}"
    from .devices.diagnose import diagnose_init_failure

    diagnosis = diagnose_init_failure(exc)
    return f"cannot open the GPUs: {exc.function} failed ({exc.text}). {diagnosis.line()}"


def _open_cpus(config: ServeConfig) -> list:
    if CPU_READ not in config.enabled_groups:
        return []
    from .devices.rapl import discover_rapl
    from .devices.simulated_rapl import simulated_cpus

    try:
        if config.cpu_backend == "simulated":
            return simulated_cpus(config.simulated_cpus)
        return discover_rapl(config.rapl_root)
    except Exception as exc:  # noqa: BLE001 - upstream: RAPL init failure is fatal
        raise StartupError(f"cannot read RAPL counters: {exc}") from None


def _listeners(config: ServeConfig):
    from .transport.listen import (Listener, bind_tcp, bind_unix, describe_socket,
                                   systemd_sockets)

    inherited = systemd_sockets()
    if inherited:
        return [Listener(s, f"systemd fd {s.fileno()} ({describe_socket(s)})") for s in inherited]
    if config.mode == "tcp":
        return [bind_tcp(config.tcp_bind_address)]
    return [bind_unix(config.socket_path, config.socket_permissions,
                      config.socket_uid, config.socket_gid)]


@dataclass
class Services:
    """What the HTTP layer calls, and the GPU manager the shutdown drains."""

    signing_key: bytes | None
    discovery: Discovery
    gpu_control: GpuControl
    gpu_reads: GpuReads
    cpu_reads: CpuReads
    streams_hub: StreamHub
    manager: GpuManager
    lease_book: LeaseBook | None = None  # None: leases are off (no lease directory)
    metrics_service: MetricsService | None = None  # only when --enable names "metrics"

    def create_app(self, enabled_groups: frozenset[str], fast_lane: bool = True):
        from .api.app import create_app
        from .service.lease_view import LeaseService

        return create_app(enabled_groups=enabled_groups, signing_key=self.signing_key,
                          discovery=self.discovery, gpu_control=self.gpu_control,
                          gpu_reads=self.gpu_reads, cpu_reads=self.cpu_reads,
                          streams_hub=self.streams_hub, metrics_service=self.metrics_service,
                          leases_service=LeaseService(self.lease_book,
                                                      self.discovery.policy_store),
                          fast_lane=fast_lane)


def _metrics_service(config: ServeConfig, manager, policy_store, auditor, backend_kind: str,
                     book):
    if METRICS not in config.enabled_groups:
        return None
    from .service.metrics import MetricsService

    service = MetricsService(manager=manager, policy_store=policy_store, auditor=auditor,
                             backend_kind=backend_kind)
    if book is not None:
        service.leases_open = lambda: len(book.leases())
    return service


def build_services(config: ServeConfig, policy_store, auditor) -> tuple[Services, str]:
    """Devices and services behind the HTTP layer, and the GPU backend's kind."""
    from .devices.guarded import GuardedDevice
    from .service.discovery import Discovery
    from .service.gpu_control import GpuControl
    from .service.gpu_manager import GpuManager
    from .service.reads import CpuReads, GpuReads
    from .service.streams import ManagedGpuPower, build_hub

    backend, devices, infos = _open_gpus(config)
    devices = [GuardedDevice(d) for d in devices]  # one health record shared by all users
    cpus = _open_cpus(config)
    limits = config.limits
    manager = GpuManager(devices, infos, call_timeout_s=config.nvml_timeout_s,
                         max_queue_per_gpu=config.max_queue_per_gpu,
                         max_waiting_per_gpu=limits.waiting_per_gpu(config.num_workers),
                         max_inline_calls=config.num_workers // 4)
    key = None
    if config.signing_key_path:
        with open(config.signing_key_path, "rb") as f:
            key = f.read()
    book = _lease_book(config, manager, auditor)
    gpu_reads = GpuReads(manager, policy_store, auditor)
    cpu_reads = CpuReads(cpus, policy_store, auditor, config.cpu_power_poll_hz)
    gpu_power = [ManagedGpuPower(manager, i) for i in manager.indices]  # one road to a GPU
    services = Services(
        signing_key=key,
        discovery=Discovery(gpu_infos=infos, cpus=cpus, enabled_groups=config.enabled_groups,
                            auth_required=key is not None, backend_kind=backend.kind,
                            policy_store=policy_store, manager=manager, lease_book=book),
        gpu_control=GpuControl(manager, policy_store, auditor, book),
        gpu_reads=gpu_reads,
        cpu_reads=cpu_reads,
        streams_hub=build_hub(gpu_power, cpus, config.gpu_power_poll_hz,
                              config.cpu_power_poll_hz, config.num_workers,
                              keepalive_s=_stream_keepalive_s(),
                              per_caller=limits.max_streams_per_caller,
                              gates={"gpu": gpu_reads.gate, "cpu": cpu_reads.gate}),
        manager=manager,
        lease_book=book,
        metrics_service=_metrics_service(config, manager, policy_store, auditor, backend.kind,
                                         book),
    )
    return services, backend.kind


def lease_dir(config: ServeConfig) -> str | None:
    """--lease-dir, else the unit's StateDirectory= ($STATE_DIRECTORY/leases), else None."""
    if config.lease_dir:
        return config.lease_dir
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state, "leases") if state else None


def _lease_book(config: ServeConfig, manager, auditor):
    """The lease book (not started), or None with a warning when there is nowhere to keep it."""
    directory = lease_dir(config)
    if directory is None:
        log.warning("leases are off: no --lease-dir and no $STATE_DIRECTORY, so changes are "
                    "not restored when their caller exits (restore_on_exit is not honoured)")
        return None
    from .leases import LeaseBook, ManagedKnobs, StoreError, to_auditor

    try:
        return LeaseBook(directory, ManagedKnobs(manager), on_event=to_auditor(auditor))
    except (StoreError, OSError) as exc:
        raise StartupError(f"cannot use the lease directory {directory}: {exc}") from None


def _stream_keepalive_s() -> float:
    """Seconds between heartbeats on an idle stream; tests shorten it through the environment."""
    try:
        return float(os.environ.get("ZEUSD_STREAM_KEEPALIVE_S", "15"))
    except ValueError:
        return 15.0


def run(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT. Returns the process exit code."""
    _setup_logging(config.log_level)
    try:
        return _serve(config)
    except StartupError as exc:
        print(f"zeusd: error: {exc}", file=sys.stderr)
        return 1


def _serve(config: ServeConfig) -> int:
    from .audit import Auditor
    from .policy import PolicyError, PolicyStore
    from .transport import sdnotify
    from .transport.listen import ListenError, remove_owned
    from .transport.admission import Admission, MemberCache
    from .transport.server import install_admission, make_server, waitress_adjustments

    _check_privileges(config)
    auditor = Auditor()
    try:
        policy_store = PolicyStore(config.policy_path, auditor=auditor)
    except PolicyError as exc:
        raise StartupError(str(exc)) from None
    except OSError as exc:
        raise StartupError(f"cannot read the policy {config.policy_path}: {exc}") from None
    services, backend_kind = build_services(config, policy_store, auditor)
    try:
        listeners = _listeners(config)
    except (ListenError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    _warn_anonymous_tcp(config, listeners)
    limits = config.limits
    server = make_server(services.create_app(config.enabled_groups), [lst.sock for lst in listeners],
                         threads=config.num_workers,
                         **waitress_adjustments(limits, limits.max_body_bytes))
    install_admission(server, Admission(limits, MemberCache(policy_store)), limits)
    _install_signals(policy_store, services.streams_hub.shutdown)
    log.info("zeusd serving on %s: %d GPU(s) (%s), %d CPU(s), groups %s, policy %s",
             ", ".join(lst.description for lst in listeners), len(services.manager.indices),
             backend_kind, len(services.cpu_reads.cpus), ",".join(sorted(config.enabled_groups)),
             policy_store.current.hash[:12])
    _start_leases(services.lease_book)
    _start_idle_exit(config, services, listeners)
    sdnotify.notify("READY=1")
    freeze_start_up_objects()
    try:
        server.run()
    finally:
        sdnotify.notify("STOPPING=1")
        remove_owned(listeners)
        services.streams_hub.shutdown()
        _stop_leases(services.lease_book)  # restores go through the GPU manager: before drain
        services.manager.drain(limits.shutdown_timeout_s)
        services.manager.close()
        services.cpu_reads.close()
        log.info("zeusd stopped")
    return 0


def freeze_start_up_objects() -> None:
    """Leave what start-up built (modules, the policy, devices, the app) out of every later
    garbage collection: they live as long as the daemon. Without this, the oldest
    generation's collection walks them all, a pause of about 10 ms on this daemon every few
    thousand requests, during which no request is served. No ``gc.collect()`` first: it
    would cost the first request as long, and start-up leaves little garbage. A frozen
    object dropped later (the first policy, after a reload) is still freed by its reference
    count; only one caught in a reference cycle would stay, once."""
    gc.freeze()


def _start_leases(book) -> None:
    """Re-adopt the leases of owners that still live, restore the others (the last run may
    have been SIGKILLed: nothing is lost)."""
    if book is None:
        return
    book.start()
    for path in book.rejected_files:
        log.error("lease file %s was not read (corrupt or not zeusd's); it is left in place",
                  path)
    log.info("leases: %d held after start (%s)", len(book.leases()), book.directory)


def _start_idle_exit(config: ServeConfig, services: Services, listeners) -> None:
    if config.exit_idle_after_s is None:
        return
    from .service.idle import start_idle_exit

    if not any(lst.description.startswith("systemd fd") for lst in listeners):
        log.warning("--exit-idle-after without socket activation: once zeusd exits, nothing "
                    "starts it again on the next connection")
    start_idle_exit(config.exit_idle_after_s, services.lease_book, services.streams_hub,
                    [lst.sock for lst in listeners])


def _stop_leases(book) -> None:
    """Restore every lease, unless this stop is a restart that asked to keep them
    (`zeusd leases keep-on-restart`, run by the package's upgrade path)."""
    if book is None:
        return
    from .leases import keep_leases_on_stop

    keep = keep_leases_on_stop(book.directory, False)
    log.info("stopping: %s %d lease(s)", "keeping" if keep else "restoring", len(book.leases()))
    book.stop(keep_leases=keep)


def _warn_anonymous_tcp(config: ServeConfig, listeners) -> None:
    """TCP has no kernel-checked identity: without tokens every TCP caller is `anonymous`."""
    tcp = [lst.description for lst in listeners if lst.sock.family != socket.AF_UNIX]
    if tcp and not config.signing_key_path:
        log.warning("serving TCP (%s) WITHOUT --signing-key-path: every TCP caller is anonymous "
                    "and gets only what the policy grants `anonymous` (see `zeusd policy "
                    "explain`); anyone who can reach the port gets that", ", ".join(tcp))


def _install_signals(policy_store, end_streams) -> None:
    def stop(signum, frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        end_streams()  # else waitress waits 5 s for the worker threads that hold streams
        raise SystemExit(0)

    def reload(signum, frame):
        threading.Thread(target=policy_store.reload, name="zeusd-reload", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
