"""``lmforge lm-eval ...``: lm-evaluation-harness's own command line with the ``lmforge`` model registered."""

from __future__ import annotations

import sys

import typer


def register(app: typer.Typer) -> None:
    @app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                              "help_option_names": []})
    def lm_eval_command(ctx: typer.Context) -> None:
        """Run lm-eval (every option is lm-eval's): `lmforge lm-eval --model lmforge --model_args
        pretrained=production --tasks TASKS [--include_path DIR] [--limit N] [--apply_chat_template]`; the
        version is resolved first (production -> lmforge:v3) and the results are named after it."""
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging

        from model.lm_eval_adapter import resolve_model_args  # also registers the `lmforge` model with lm-eval

        setup_logging()
        saved = sys.argv
        sys.argv = ["lm-eval", *ctx.args]
        try:
            cli = HarnessCLI()
            args = cli.parse_args()
            if getattr(args, "model", None) == "lmforge":  # name the concrete version (production -> lmforge:v3)
                args.model_args = resolve_model_args(args.model_args or {})
            cli.execute(args)
        finally:
            sys.argv = saved
