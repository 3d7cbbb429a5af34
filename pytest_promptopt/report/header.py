"""The run header: which endpoint and model each role uses (and where the URL came from), the
record mode and the cache folder, said once at the start of a session, as pytest-randomly says
its seed. Never an API key: URLs are shown with their user, password and query values masked."""

from __future__ import annotations

from pathlib import Path

from ..llm.cache import RecordMode
from ..run.config import RoleConfig, Settings
from ..defaults import EMBEDDED_MODEL
from ..llm.redaction import display_url

PREFIX = "promptopt: "


def _endpoint(rc: RoleConfig, replay: bool) -> str:
    if rc.embedded:
        when = "never started in replay mode" if replay else "started when a call is not in the cache"
        return f"{rc.model or EMBEDDED_MODEL} on the embedded model ({when})"
    source = f" (from {rc.source})" if rc.source else ""
    return f"{rc.model} @ {display_url(rc.base_url or '')}{source}"


def role_text(settings: Settings, *, optimize: bool) -> str:
    """`task M @ URL (from $OPENAI_BASE_URL); judge: as task; optimizer: N @ URL2`."""
    replay = settings.record_mode is RecordMode.REPLAY
    task = settings.role("task")
    parts = [f"task {_endpoint(task, replay)}"]
    for name in ("judge", "optimizer") if optimize else ("judge",):
        rc = settings.role(name)
        same = (rc.base_url, rc.model) == (task.base_url, task.model)
        parts.append(f"{name}: {'as task' if same else _endpoint(rc, replay)}")
    return "; ".join(parts)


def cache_text(settings: Settings, root: Path) -> str:
    mode = settings.record_mode
    if mode is RecordMode.OFF:
        return "record off (nothing cached)"
    try:
        folder = str(settings.cache_dir.relative_to(root))
    except ValueError:
        folder = str(settings.cache_dir)
    return f"record {mode.value}, cache {folder}"


def header_lines(settings: Settings, root: Path, *, optimize: bool = False, quiet: bool = False) -> list[str]:
    """Two lines, or one under `-q`."""
    roles, cache = role_text(settings, optimize=optimize), cache_text(settings, root)
    if quiet:
        return [f"{PREFIX}{roles}; {cache}"]
    return [f"{PREFIX}{roles}", f"{PREFIX}{cache}"]


__all__ = ["header_lines"]
