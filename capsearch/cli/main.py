"""The `capsim` command: one entry point, a subcommand per job.

A user's mistake (a bad file, an impossible option) ends with one line that says what to fix and
exit code 2, never a traceback.
"""

from __future__ import annotations

import gc
import importlib
import re
import signal
import threading

import click

from capsim.capsearch.capacity.workers import start_fork_server

# name -> (module of capsim.capsearch.cli, attribute): a command's module is imported when it runs,
# so each command loads only what it needs.
COMMANDS = {
    "traces": ("traces", "traces"),
    "profile": ("profile", "profile"),
    "profiles": ("profile", "profiles"),
    "simulate": ("simulate", "simulate"),
    "search": ("search", "search"),
    "sweep": ("search", "sweep"),
    "plan": ("plan", "plan_command"),
    "serve": ("serve", "serve"),
    "confirm": ("confirm", "confirm"),
    "bench": ("bench", "bench"),
    "compare": ("compare", "compare"),
    "vllm-command": ("confirm", "vllm_command_cli"),
    "launch": ("launch", "launch_command"),
    "cache": ("cache", "cache"),
    "validate": ("validate", "validate"),
}

POOL_COMMANDS = ("search", "sweep", "plan")  # their searches run in a local process pool by default


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix: one line and exit 2. Imported when one is raised, so
    that the command line itself loads in milliseconds (each command imports what it needs)."""
    from capsim.capsearch.capacity.slo import SLOError
    from capsim.capsearch.errors import ConfigError
    from capsim.capsearch.load.metrics import MetricsError
    from capsim.profiles.errors import ProfileError
    from capsim.real.client import EndpointError
    from capsim.real.engine import EngineError
    from capsim.real.process import EngineStartError
    from capsim.sim import SimulationError
    from capsim.traces import TraceError

    return (
        TraceError,
        ProfileError,
        SimulationError,
        ConfigError,
        SLOError,
        EndpointError,
        EngineError,
        EngineStartError,
        MetricsError,
    )


GOODPUT_ITEM = re.compile(r"\((ttft|tpot|e2el):")  # vLLM's `--goodput ttft:200 tpot:50`: a second limit left over


class UserError(click.ClickException):
    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: stop now, keep what finished, write nothing half-done."""


def _terminate(signum, frame):
    raise Terminated()


class CapsimGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(f"capsim.capsearch.cli.{module}"), attribute)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] in POOL_COMMANDS and not {"-h", "--help"} & set(args):
            # The searches' fork server imports the search code while this process imports the
            # command's (a fifth of a second of every search). Where the command then runs in this
            # process (--executor serial, one search) or on Ray, the server idles and exits with it.
            start_fork_server()
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context):
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            cached = (
                "; finished trials stay cached, so a rerun resumes"
                if ctx.invoked_subcommand in ("search", "sweep")
                else ""
            )
            click.echo(f"\ninterrupted: stopped without writing results{cached}", err=True)
            ctx.exit(143 if isinstance(interrupt, Terminated) else 130)
        except click.UsageError as error:  # click's own shows usage lines too: one line, and where help is
            command = f"{ctx.command_path} {ctx.invoked_subcommand}" if ctx.invoked_subcommand else ctx.command_path
            if "unexpected extra argument" in error.format_message() and GOODPUT_ITEM.search(error.format_message()):
                raise UserError(
                    "--goodput takes its limits as one value, as in --goodput 'ttft:200 tpot:50' (or repeat --goodput)"
                ) from None
            raise UserError(f"{error.format_message()} (see {command} --help)") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if isinstance(error, user_errors()):
                raise UserError(" ".join(str(error).split("\n")) if "\n" in str(error) else str(error)) from None
            if isinstance(error, OSError):  # a path that cannot be read or written: the user's to fix, in one line
                where = f"{error.filename}: " if error.filename else ""
                raise UserError(f"{where}{error.strerror or error}") from None
            raise


@click.group(cls=CapsimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capsim")
def main() -> None:
    """capsim: the capacity of an LLM serving deployment.

    The highest request rate (QPS) at which a model, GPU, parallelism and scheduler still meet
    latency SLOs on a request trace: found in simulation in seconds, confirmed on real engines.

    Start with `capsim search`: the capacity of Mistral-7B on an A100 under the Sarathi-Serve
    strict and relaxed SLOs, for vLLM, Orca and Sarathi-Serve, on the chat and arxiv traces.
    """


def run() -> None:
    """The `capsim` program: main(), then an exit that skips the garbage collector's last passes
    over every object the command imported (matplotlib's, pyarrow's: a tenth of a second of every
    command). Everything is written and flushed by then; only the process's memory is left."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    run()
