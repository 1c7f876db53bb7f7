"""`python -m trainingfiles_web`: serve the console (uvicorn, one process)."""

from __future__ import annotations

import argparse
import os

import uvicorn

from .app import create_app
from .settings import WebSettings


def main() -> None:
    parser = argparse.ArgumentParser(description="The Training File Service's web console.")
    parser.add_argument(
        "--target",
        default=os.environ.get("TRAININGFILES_TARGET", "127.0.0.1:50051"),
        help="the service's gRPC target (default: TRAININGFILES_TARGET or 127.0.0.1:50051)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--development-sign-in",
        action="store_true",
        help="accept /signin/link?token=… (make run's sign-in link; never in production)",
    )
    parser.add_argument(
        "--secure-cookies", action="store_true", help="mark cookies Secure (behind HTTPS)"
    )
    args = parser.parse_args()
    settings = WebSettings(
        target=args.target,
        development_sign_in=args.development_sign_in,
        secure_cookies=args.secure_cookies,
    )
    # No access log: the development sign-in link carries a token in its query string.
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        server_header=False,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
