"""The write-back of one session: winners queued during the run, written once at its end, and
what became of each (written, not written and why), as the reports say it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import WriteBackError
from .writeback import PendingWrite, apply_write

RESUME = "rerun with --optimize-resume to finish and write it"


@dataclass
class WriteQueue:
    pending: list[PendingWrite] = field(default_factory=list)
    written: list[str] = field(default_factory=list)  # "wrote PATH" lines, as the user names the files
    written_paths: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what was not written, and why

    def queue(self, writes: Iterable[PendingWrite], errors: Iterable[str] = ()) -> None:
        self.pending.extend(writes)
        self.errors.extend(errors)

    def drop(self) -> None:
        """The run was interrupted: nothing queued is written; each file is named with the way on."""
        pending, self.pending = self.pending, []
        self._not_written(pending)

    def flush(self) -> bool:
        """Write everything queued, once. True when Ctrl-C or SIGTERM stopped the writing: the
        file being replaced is then the old or the new one (the replace is atomic), which the
        lines say, and nothing more is written."""
        pending, self.pending = self.pending, []
        for i, write in enumerate(pending):
            try:
                apply_write(write)
                self.written_paths.extend(write.paths)
                self.written.append(f"wrote {', '.join(str(p) for p in write.paths)}")
            except (WriteBackError, OSError) as exc:
                self.errors.append(str(exc))
            except KeyboardInterrupt:
                if _holds(write.path, write.new_bytes):
                    self.written.append(f"wrote {write.path} (then interrupted)")
                else:
                    self.errors.append(f"{write.path}: interrupted during the write; the file is unchanged. "
                                       "Rerun with --optimize-resume to finish and write it")
                self._not_written(pending[i + 1:])
                return True
        return False

    def _not_written(self, pending: list[PendingWrite]) -> None:
        for write in pending:
            self.errors.append(f"{write.path}: the run was interrupted, so the improved prompt was not written; {RESUME}")


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False
