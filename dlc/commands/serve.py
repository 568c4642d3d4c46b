"""`dlc serve --model MODEL [--host 127.0.0.1] [--port PORT] [--max-logprobs K] [--no-logprobs]
[--logprob-tokens text|vocab]`: an OpenAI-compatible server over the embedded model.

Contract (scripts rely on it): `--port 0` picks a free port, and exactly one line `listening on http://HOST:PORT/v1`
is printed on stdout once the server accepts requests. Binds 127.0.0.1 by default; anything else exposes the model
to the network (no authentication), which is said on stderr. SIGINT/SIGTERM stop it (exit 0).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="serve an embedded model over an OpenAI-compatible HTTP API",
                              description="Serve an embedded model (tiny, small, default or a GGUF path) on "
                                          "/v1/models, /v1/completions and /v1/chat/completions.")
    p.add_argument("--model", default="default", help="tiny | small | default | path/to/model.gguf (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (0: pick a free one; default: %(default)s)")
    p.add_argument("--n-ctx", type=int, default=4096, help="context size per request in tokens (default: %(default)s)")
    p.add_argument("--name", default=None, help="model name clients use (default: the --model value)")
    p.add_argument("--max-logprobs", type=int, default=100,
                   help="most alternatives per token a request may ask for (`logprobs` of /v1/completions, "
                        "`top_logprobs` of /v1/chat/completions; default: %(default)s, as DLN's scorer asks)")
    p.add_argument("--no-logprobs", action="store_true",
                   help="refuse every request for log-probabilities (400), like a chat-only hosted model: to try "
                        "clients on such a backend locally")
    p.add_argument("--logprob-tokens", choices=("text", "vocab"), default="text",
                   help="how /v1/completions spells the tokens of `logprobs` (`tokens`, `top_logprobs` keys): text "
                        "(' word', as OpenAI and vLLM since 0.4) or vocab (the vocabulary's strings, 'Ġword', as "
                        "vLLM before 0.4; the DLN implementation's class scorer needs this); default: %(default)s")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dlc.errors import DlcUsageError
    from dlc.lm.embedded import EmbeddedLM
    from dlc.server.app import Server, bind_socket, create_app

    if not 0 <= args.port <= 65535:
        raise DlcUsageError(f"--port {args.port} is not a port number", code="E115", hint="use 0..65535")
    if args.n_ctx < 16:
        raise DlcUsageError(f"--n-ctx {args.n_ctx} is too small", code="E115", hint="use at least 16 (default 4096)")
    if args.max_logprobs < 0:
        raise DlcUsageError(f"--max-logprobs {args.max_logprobs} is negative", code="E115",
                            hint="use 0 or more (default 100)")
    sock = bind_socket(args.host, args.port)      # before loading: a taken port fails fast
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"dlc serve: warning: binding {args.host} exposes the model to the network without authentication",
              file=sys.stderr)
    lm = EmbeddedLM(args.model, n_ctx=args.n_ctx)
    try:
        app = create_app(lm, args.name or args.model, n_ctx=args.n_ctx, max_logprobs=args.max_logprobs,
                         logprobs=not args.no_logprobs, logprob_tokens=args.logprob_tokens)
        server = Server(app, sock)
        server.run(on_ready=lambda url: print(f"listening on {url}", flush=True))
    finally:
        lm.close()
    return 0
