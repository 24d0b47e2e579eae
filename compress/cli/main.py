"""The `compress` command. Each subcommand lives in its own module and is a thin shell over the library."""

from __future__ import annotations

import typer

from compress.cli import (
    bench,
    build,
    check,
    compare,
    distill,
    export,
    history,
    info,
    methods,
    prune,
    quantize,
    report,
    run,
    train,
)
from compress.cli.fields import method_command

app = typer.Typer(
    name="compress",
    help="Compress PyTorch networks (distill, prune, quantize), deploy them as ONNX, and measure accuracy "
    "against latency.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("info")(info.info)
app.command("train", cls=method_command("train"))(train.train)
app.command("distill", cls=method_command("distill", covered=("teacher_layer", "student_layer")))(distill.distill)
app.command("prune", cls=method_command("prune"))(prune.prune)
app.command("quantize", cls=method_command("quantize"))(quantize.quantize)
app.command("export")(export.export)
app.command("bench")(bench.bench)
app.command("build")(build.build)
app.command("compare")(compare.compare)
app.command("run")(run.run)
app.command("report")(report.report)
app.command("methods")(methods.methods)
app.command("check")(check.check)
app.add_typer(history.app, name="history")


def main() -> None:
    """Entry point: Click's usage errors become one line too (tests drive `app` directly)."""
    import sys

    from compress.cli.common import EXIT_INTERRUPTED, report_failure

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        report_failure(KeyboardInterrupt())
        sys.exit(EXIT_INTERRUPTED)
    except (typer.Exit, SystemExit):
        raise
    except BaseException as e:
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # Click's usage errors
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            typer.echo(f"error: {e.format_message()}{hint}", err=True)
            sys.exit(e.exit_code or 2)
        handled = report_failure(e)  # anything raised outside a command's own handler
        if handled is None:
            raise
        sys.exit(handled)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
