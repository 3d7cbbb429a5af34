"""Child process entry point: run llama-cpp-python's server; exit when the parent is gone."""

from __future__ import annotations

import argparse
import os
import threading
import time


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)  # parent died (even by SIGKILL): do not outlive it


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-alias", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=4096)
    args = parser.parse_args()
    threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import Settings

    settings = Settings(
        model=args.model,
        model_alias=args.model_alias,
        host="127.0.0.1",
        port=args.port,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        seed=0,
        verbose=False,
    )
    app = create_app(settings=settings)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
