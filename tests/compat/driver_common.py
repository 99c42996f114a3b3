"""What both client drivers share: turning the client's exceptions into JSON."""


def fail(exc: BaseException) -> dict:
    """What a caller of the client sees when it raises."""
    return {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}


def attempt(fn, *args, **kw):
    try:
        return {"ok": fn(*args, **kw)}
    except Exception as exc:  # noqa: BLE001 -- the client's own exception is the point
        return {"error": fail(exc)}
