"""wharf_step: write a typed wharf step in Python, built into a component by componentize-py.

A step is a class with `describe` and `run`, exported under the name `Step`:

    import wharf_step
    from wharf_step import info, text

    class Greet:
        def describe(self):
            return info("greet", "Greets someone").param(text("name", "Who to greet", required=True)).output("greeting", "What was said")

        def run(self, ctx):
            if not ctx.text("name").strip():
                raise wharf_step.InvalidInput("`name` is empty")
            return {"greeting": f"hello, {ctx.text('name')}"}

    Step = wharf_step.export(Greet)

`run` returns its outputs as a dict; raising `InvalidInput`, `Permanent`, `Transient` or
`GateFailed` fails the step with that kind (wharf retries only transient errors when the
pipeline asks it to). `log`, `warn` and `annotate` write to the step log and to the CI.
"""

from typing import Dict, List, Optional

from componentize_py_types import Err
from wit_world.imports import log as _log
from wit_world.imports import types as _types


class StepFailed(Exception):
    """A failure the step reports as a typed error, not a crash."""

    kind = _types.ErrorKind.PERMANENT


class InvalidInput(StepFailed):
    kind = _types.ErrorKind.INVALID_INPUT


class Permanent(StepFailed):
    kind = _types.ErrorKind.PERMANENT


class Transient(StepFailed):
    kind = _types.ErrorKind.TRANSIENT


class GateFailed(StepFailed):
    kind = _types.ErrorKind.GATE_FAILED


def _param(name, type_, description, required, default):
    return _types.ParamSpec(name=name, type=type_, description=description, required=required, default=default)


def text(name: str, description: str, required: bool = False, default: Optional[str] = None):
    value = None if default is None else _types.Value_Text(default)
    return _param(name, _types.ParamType.TEXT, description, required, value)


def integer(name: str, description: str, required: bool = False, default: Optional[int] = None):
    value = None if default is None else _types.Value_Integer(default)
    return _param(name, _types.ParamType.INTEGER, description, required, value)


def boolean(name: str, description: str, required: bool = False, default: Optional[bool] = None):
    value = None if default is None else _types.Value_Boolean(default)
    return _param(name, _types.ParamType.BOOLEAN, description, required, value)


class info:
    """What a step declares: name, version, summary, parameters, outputs."""

    def __init__(self, name: str, summary: str, version: str = "0.1.0"):
        self._info = _types.StepInfo(name=name, version=version, summary=summary, params=[], outputs=[], capabilities=[])

    def param(self, spec) -> "info":
        self._info.params.append(spec)
        return self

    def output(self, name: str, description: str) -> "info":
        self._info.outputs.append(_types.OutputSpec(name=name, description=description))
        return self


class Context:
    """The run a step is in, and its parameters by name (already checked by wharf)."""

    def __init__(self, raw):
        self.step_id: str = raw.step_id
        self.run_id: str = raw.run_id
        self.pipeline: str = raw.pipeline
        self.attempt: int = raw.attempt
        self.params: Dict[str, object] = {name: value.value for name, value in raw.params}

    def text(self, name: str) -> str:
        return str(self.params.get(name, ""))

    def integer(self, name: str) -> int:
        return int(self.params.get(name, 0))

    def boolean(self, name: str) -> bool:
        return bool(self.params.get(name, False))


def log(message: str) -> None:
    _log.write(_log.Level.INFO, message)


def warn(message: str) -> None:
    _log.write(_log.Level.WARN, message)


def annotate(message: str, file: Optional[str] = None, line: Optional[int] = None, title: Optional[str] = None, level: str = "warn") -> None:
    """A note on a source location: a CI annotation where the CI shows them."""
    levels = {"info": _log.Level.INFO, "warn": _log.Level.WARN, "error": _log.Level.ERROR}
    _log.annotate(_log.Annotation(level=levels[level], title=title, message=message, file=file, line=line, column=None))


def export(cls):
    """The class componentize-py exports as `wharf:step/step`, around a step class."""

    class Step:
        def describe(self) -> _types.StepInfo:
            return cls().describe()._info

        def run(self, ctx) -> List[tuple]:
            try:
                outputs = cls().run(Context(ctx)) or {}
            except StepFailed as e:
                raise Err(_types.StepError(kind=e.kind, message=str(e)))
            return [(str(k), str(v)) for k, v in outputs.items()]

    return Step
