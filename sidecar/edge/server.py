"""Running the sidecar: the nginx socket(s), the feedback socket, the admin
listener, worker processes, reload on SIGHUP and a clean stop. The only place
(with cli) that installs uvloop and touches signals."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path

log = logging.getLogger("sidecar")
MAX_BODY = 16 * 1024 * 1024  # above any client_max_body_size nginx is configured with


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; this is a safety net
        log.warning("uvloop is not installed; using asyncio's default loop")
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(args, policy) -> int:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from sidecar.complexity import complexity
    from sidecar.edge.app import PolicyRef, Runtime, Sidecar, create_admin_app
    from sidecar.edge.features import FeatureCache
    from sidecar.edge.metrics import Metrics
    from sidecar.policy.spec import PolicyError, load_policy
    from sidecar.edge.wire import HttpProtocol

    if policy.missing_env:
        log.warning("unset credentials: %s", ", ".join(policy.missing_env))
    socket_path, children = args.socket, []
    if args.workers > 1:
        # One process per socket; nginx hashes each client to one of them, so
        # per-client limits stay exact without shared state.
        index, children = _fork_workers(args.workers)
        args.feedback_share = (index, args.workers)
        socket_path = _worker_socket(args.socket, index)
        if args.feedback_socket:
            from sidecar.edge.feedback import for_worker
            args.feedback_socket = for_worker(args.feedback_socket, index, _worker_socket)

    def tell_children(sig) -> None:
        for pid in children:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    install_uvloop()
    ref = PolicyRef(policy)
    metrics = Metrics(CollectorRegistry())
    store = None
    if args.redis:
        from sidecar.access.redis_store import RedisStore
        store = RedisStore.from_url(args.redis, deadline_ms=args.redis_deadline_ms,
                                    on_degraded=lambda reason: metrics.store_degraded.labels(reason).inc())
    runtime = Runtime(cache=FeatureCache(), store=store)
    sidecar = Sidecar(ref, metrics, runtime)

    # A reload compiles the policy (~20 ms for the demo) in a thread, so decisions
    # keep flowing meanwhile; SIGHUPs that arrive during one are folded into one more.
    reloading = {"busy": False, "again": False}

    def reload() -> None:
        if reloading["busy"]:
            reloading["again"] = True
            return
        reloading["busy"] = True
        # The future's callback runs on the event loop, where the swap belongs.
        asyncio.get_running_loop().run_in_executor(None, _load).add_done_callback(_swap)

    def _load():
        return load_policy(args.policy, os.environ)

    def _swap(done) -> None:
        reloading["busy"] = False
        try:
            new = done.result()
        except PolicyError as exc:
            metrics.reloads.labels("error").inc()
            log.error("reload failed, keeping policy %s: %s", ref.policy.version, exc)
            new = None
        except Exception:  # a bug in the compiler: keep serving the policy we have
            metrics.reloads.labels("error").inc()
            log.exception("reload failed, keeping policy %s", ref.policy.version)
            new = None
        if reloading["again"]:
            reloading["again"] = False
            reload()
        if new is not None:
            _apply(new)

    def _apply(new) -> None:
        new.health = ref.policy.health  # endpoint health outlives a policy edit
        ref.policy = new
        if runtime.retries is not None:
            runtime.retries.ratio, runtime.retries.floor = new.retry_budget
        metrics.reloads.labels("ok").inc()
        log.info("policy reloaded: version %s", new.version)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        servers, runner, drain_feedback = [], None, None
        if args.feedback_socket:
            from sidecar.edge import feedback
            from sidecar.edge.conversations import Conversations
            from sidecar.edge.outcomes import Outcomes
            from sidecar.edge.retry_budget import RetryBudget
            from sidecar.edge.settlement import Settlements
            outcomes = Outcomes(lambda: ref.policy)
            metrics.registry.register(outcomes)
            runtime.settlements = Settlements(lambda: runtime.store, runtime.clock_ns)
            metrics.registry.register(runtime.settlements)
            # Retries are counted from the feedback log, so the budget needs it.
            runtime.retries = RetryBudget(*ref.policy.retry_budget)
            # Shared between hosts through Redis; in memory each process keeps its own.
            runtime.conversations = Conversations(
                clock_ns=runtime.clock_ns, store_ref=(lambda: runtime.store) if store is not None else None)
            metrics.registry.register(runtime.conversations)
            listener = feedback.Feedback(lambda: ref.policy.health, args.health_threshold,
                                         args.health_down_seconds, outcomes=outcomes,
                                         settlements=runtime.settlements, policy_ref=lambda: ref.policy,
                                         retries=runtime.retries, conversations=runtime.conversations,
                                         share=args.feedback_share or (0, 1))
            transport, drain_feedback = await feedback.listen(args.feedback_socket, listener,
                                                              mode=args.socket_mode)
            servers.append(transport)
        if socket_path:
            Path(socket_path).unlink(missing_ok=True)
            servers.append(await loop.create_unix_server(
                lambda: HttpProtocol(sidecar.handle, MAX_BODY, drain_feedback), socket_path))
            # Answers carry the providers' credentials: only nginx may connect.
            os.chmod(socket_path, args.socket_mode)
        if args.tcp and args.workers <= 1:
            runner = web.AppRunner(create_admin_app(sidecar), access_log=None,
                                   handle_signals=False, shutdown_timeout=1)
            await runner.setup()
            host, _, port = args.tcp.rpartition(":")
            await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, lambda: (reload(), tell_children(signal.SIGHUP)))
        loop.add_signal_handler(signal.SIGTERM, lambda: (stop.set(), tell_children(signal.SIGTERM)))
        loop.add_signal_handler(signal.SIGINT, lambda: (stop.set(), tell_children(signal.SIGTERM)))
        # Load the complexity model now, not on the first request (~80 ms), and say
        # whether it is served compiled: without a C compiler at install it is not.
        model = complexity.default_model()
        if model.compiled is None:
            log.warning("complexity model: serving from the Python reference (the compiled "
                        "scorer was not built: install gcc and the Python headers, reinstall)")
        # Everything loaded so far (policy, model, metrics) lives for the process:
        # keep it out of the collector's way so collections stay short.
        gc.freeze()
        log.info("sidecar ready: policy %s version %s on %s; complexity scorer %s", policy.source,
                 policy.version, " and ".join(filter(None, (socket_path, args.tcp))),
                 "compiled" if model.compiled is not None else "Python")
        await stop.wait()
        for server in servers:
            server.close()
        if runner is not None:
            await runner.cleanup()

    asyncio.run(run())
    return 0


def _worker_socket(path: str, index: int) -> str:
    base, dot, ext = path.rpartition(".")
    return f"{base}-{index}.{ext}" if dot else f"{path}-{index}"


def _fork_workers(n: int) -> tuple[int, list[int]]:
    """Fork n-1 children (before any event loop exists). Returns (this process's
    worker index, child pids); the parent, index 0, passes signals on to them."""
    children = []
    for index in range(1, n):
        pid = os.fork()
        if pid == 0:
            return index, []
        children.append(pid)
    return 0, children
