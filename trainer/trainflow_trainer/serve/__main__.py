"""`python -m trainflow_trainer.serve --checkpoint DIR|s3://... [--tokenizer FILE] [--port 0]`

Prints one line `TRAINFLOW_SERVE {"host": ..., "port": ..., "policy_version": ...}` once listening (so a
parent started with --port 0 learns the port), then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ..contract import SERVE_LINE_PREFIX, ServeReady
from ..model import Transformer, preset
from .codec import Codec
from .engine import Engine
from .runner import TransformerRunner
from .server import ServeState, make_server
from .weights import load_checkpoint


def runner_loader(reuse_prefixes: bool) -> Callable[[str], tuple[TransformerRunner, int | None]]:
    def load_runner(path: str) -> tuple[TransformerRunner, int | None]:
        model, step = load_checkpoint(path)
        return TransformerRunner(model, reuse_prefixes=reuse_prefixes), step

    return load_runner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainflow_trainer.serve", description=__doc__)
    ap.add_argument("--checkpoint", help="committed checkpoint folder (local or s3://) to serve")
    ap.add_argument("--preset", help="serve randomly initialised weights of this preset instead (tests, demos)")
    ap.add_argument("--init-seed", type=int, default=0)
    ap.add_argument("--tokenizer", help="tokenizer.json (default: the checkpoint's)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument(
        "--policy-version",
        type=int,
        default=None,
        help="version of the initial weights (default: checkpoint step or 0)",
    )
    ap.add_argument("--admin-token", default=os.environ.get("TRAINFLOW_SERVE_ADMIN_TOKEN"))
    ap.add_argument("--max-len", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--max-batch", type=int, default=64, help="generations per decode step (1: one at a time)")
    ap.add_argument("--no-prefix-reuse", action="store_true", help="always prefill whole prompts (benchmarks)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    def bad(msg: str) -> int:
        print(f"trainflow: bad input: {msg}", file=sys.stderr)
        return 2

    tok_path = args.tokenizer or (
        str(Path(args.checkpoint) / "tokenizer.json")
        if args.checkpoint and not args.checkpoint.startswith("s3://")
        else None
    )
    if not tok_path or not Path(tok_path).is_file():
        return bad(f"no tokenizer: pass --tokenizer FILE (looked for {tok_path})")
    codec = Codec.from_file(tok_path)
    if args.max_batch < 1:
        return bad(f"--max-batch must be at least 1, got {args.max_batch}")
    load_runner = runner_loader(not args.no_prefix_reuse)
    if args.checkpoint:
        try:
            runner, step = load_runner(args.checkpoint)
        except Exception as e:  # noqa: BLE001
            return bad(f"--checkpoint {args.checkpoint}: {e}")
    elif args.preset:
        torch.manual_seed(args.init_seed)
        runner, step = (
            TransformerRunner(
                Transformer(preset(args.preset, vocab_size=codec.vocab_size)), reuse_prefixes=not args.no_prefix_reuse
            ),
            None,
        )
    else:
        return bad("give --checkpoint DIR or --preset NAME")
    if runner.vocab_size < codec.vocab_size:
        return bad(f"the model's vocab_size {runner.vocab_size} is smaller than the tokenizer's {codec.vocab_size}")
    version = args.policy_version if args.policy_version is not None else (step or 0)
    max_len = args.max_len or runner.model.config.max_position_embeddings
    engine = Engine(
        runner, version=version, eos_token_ids=codec.eos_token_ids, max_len=max_len, max_batch=args.max_batch
    )
    name = Path(args.checkpoint).name if args.checkpoint else f"{args.preset}-seed{args.init_seed}"
    state = ServeState(engine, codec, load_runner, name, args.admin_token)
    state.checkpoint = args.checkpoint
    server = make_server(state, args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    host, port = server.server_address[:2]
    ready = ServeReady(host=str(host), port=int(port), policy_version=version)  # the contract's ready line
    print(SERVE_LINE_PREFIX + ready.model_dump_json(), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
