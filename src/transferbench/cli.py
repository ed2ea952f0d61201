"""What every stage's entry point shares: argparse, one log format, and expected errors as one line.

A stage module builds a :class:`StageParser` and hands :func:`run` the function that does its work. A
:class:`~transferbench.core.errors.UserError` (bad params, missing or bad input, an unreachable source)
ends the stage with ``<stage>: error: <message>`` on one line and exit code 1; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from transferbench import nvidia_device_present
from transferbench.core import backend
from transferbench.core.errors import UserError, shortened
from transferbench.core.files import no_space, space_reason
from transferbench.core.redact import RedactingFilter, redact
from transferbench.study.experiments import resolve
from transferbench.study.params import Params, load_params

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
# Our own loggers say what the stage does; libraries (MLflow, great-expectations, urllib3) only warnings.
OWN_LOGGERS = ("transferbench", "stages")


class StageParser(argparse.ArgumentParser):
    """``python -m stages.<stage> [<item>]``: ``item`` is the ``foreach`` value in dvc.yaml, if any."""

    def __init__(self, stage: str, doc: str | None, item: str | None = None, item_help: str | None = None):
        super().__init__(prog=f"python -m stages.{stage}", description=(doc or stage).strip().splitlines()[0])
        self.stage, self.item = stage, item
        if item:
            self.add_argument(item, help=item_help)

    def label(self, args: argparse.Namespace) -> str:
        """The stage's name as DVC shows it: ``fetch@pets``, ``generate_captcha``."""
        return f"{self.stage}@{shortened(getattr(args, self.item))}" if self.item else self.stage


def setup_logging(level: int = logging.INFO) -> None:
    """One format on stderr for what stages say, credentials redacted; progress bars (tqdm, Keras) keep their own."""
    logging.basicConfig(format=LOG_FORMAT, datefmt=DATE_FORMAT, level=logging.WARNING, stream=sys.stderr)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # On the handlers, not the loggers: a library's record (urllib3 naming a proxy) passes through them too.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    sys.excepthook = _redacted_excepthook


def _redacted_excepthook(kind, value, tb) -> None:
    """A bug's traceback as Python prints it, but with credentials in URLs (an exception's message) masked."""
    sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))


# What TensorFlow's native code prints on every start on a machine without a GPU, before its logging is
# set up (so TF_CPP_MIN_LOG_LEVEL cannot hide it): CUDA probing, and notes about CPU builds. The lines
# after that, such as `failed call to cuInit`, TF_CPP_MIN_LOG_LEVEL hides (the package's __init__).
CPU_START_NOISE = ("All log messages before absl::InitializeLog()", "cudart_stub.cc", "failed call to cuInit",
                   "oneDNN custom operations are on", "cpu_feature_guard.cc", "To enable the following instructions")


@contextlib.contextmanager
def native_stderr_without(noise: tuple[str, ...]) -> Iterator[None]:
    """Hold what native code writes to file descriptor 2 in the block; then pass on every line but ``noise``.

    Everything is passed on if the block fails, so nothing that explains an error is lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if failed or not any(n in line for n in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()


def load_keras() -> str:
    """Choose the backend (core.backend: a bad KERAS_BACKEND or none installed is one line), import Keras
    and start its devices, without TensorFlow's CUDA probing lines on a machine that has no NVIDIA
    device (with one, every line stays: they say why a GPU is not used). Returns the backend."""
    name = backend.select()
    if nvidia_device_present():
        import keras  # noqa: F401
        return name
    with native_stderr_without(CPU_START_NOISE):
        import keras

        keras.ops.convert_to_numpy(keras.ops.zeros(1))  # device discovery prints the cuInit line
    return name


def one_line(message: str) -> str:
    """A possibly multi-line message as one line: a list after ``tried:`` stays readable."""
    out = ""
    for line in filter(None, (part.strip() for part in message.splitlines())):
        out += (" " if not out or out.endswith(":") else "; ") + line
    return out.strip()


def run(parser: StageParser, work: Callable[[argparse.Namespace], Any], argv: Sequence[str] | None = None) -> None:
    """Parse ``argv`` (default: the command line), set up logging, then ``work(args)``."""
    args = parser.parse_args(argv)
    setup_logging()
    try:
        work(args)
    except UserError as err:
        raise SystemExit(f"{parser.label(args)}: error: {redact(one_line(str(err)))}") from None
    except OSError as err:
        # A full disk is the user's to fix wherever the write was (MLflow's, Keras'), not a bug.
        if space_reason(err) is None:
            raise
        full = no_space(err, err.filename or Path.cwd())
        raise SystemExit(f"{parser.label(args)}: error: {redact(one_line(str(full)))}") from None
    except KeyboardInterrupt:
        print(f"{parser.label(args)}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def stage_main(stage: str, argv: Sequence[str] | None, work: Callable[[Params, str], Any],
               doc: str | None = None) -> None:
    """``python -m stages.<stage> <experiment>``: check params and the name first, then ``work(params, name)``."""

    def checked(args: argparse.Namespace) -> None:
        params = load_params()
        resolve(params, args.experiment)
        work(params, args.experiment)

    run(StageParser(stage, doc, "experiment", "an entry under `experiments:` in params.yaml"), checked, argv)
